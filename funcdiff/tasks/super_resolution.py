"""Zero-shot super-resolution of trajectories in the wavelet domain (WDNO, Hu, Wang et al., ICLR 2025).

A super-resolution checkpoint (``forecast.kind: super_resolution``, :mod:`funcdiff.kinds.super_resolution`)
holds a conditional EDM denoiser of one wavelet level's detail coefficients (with the approximation correction,
or of the residual from interpolation) given the half-grid samples. One application (:func:`refine_once`) treats
the given trajectory on the grid G as the samples of the unknown field on 2G (its approximation is √2^D times
them), draws white noise for the state on G, runs the shared Karras schedule and solver with the samples as clean
conditioning channels, and inverts the transform exactly: 2x along every
transformed axis (time and space, or space only). :func:`super_resolve` repeats it for 4x, 8x; the denoiser, a
neural operator, runs each time on the grid it is given -- beyond the grid it was trained at, without retraining.

Time: fine frame 2k is coarse frame k, fine frame 2k + 1 lies half a coarse step after it; the last one lies half a
step after the last coarse frame (the periodised time transform wraps there; see the docs' wavelet guide).

Baselines: :func:`interpolate` (spectral in the periodic space, linear in time; or linear in both).

Units: physical in and out (the checkpoint's normaliser inside). Shapes: trajectories (B, C, T, *S) for a
space-time model, fields (B, C, *S) or trajectories (B, C, T, *S) (frames refined one by one) for a space-only one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from funcdiff.errors import UserError
from funcdiff.kinds.base import load_for_role
from funcdiff.kinds.super_resolution import (SuperResolver, interpolate, levels_of_factor, refine_once, sample_state,
                                             upsample_time_coordinate)


def load_super_resolver(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> SuperResolver:
    """The :class:`~funcdiff.kinds.super_resolution.SuperResolver` of a checkpoint file or run directory (EMA
    weights); UserError for a checkpoint of another kind."""
    return load_for_role(checkpoint, "super_resolution", device)


def _fields(sr: SuperResolver, x: Tensor) -> tuple[Tensor, Optional[int]]:
    """The model's fields of a batch: (B, C, *grid) as given, or frames folded into the batch (space-only model
    on trajectories). Returns (fields, frames or None)."""
    dims, spatial = sr.coder.dims, x.ndim - 2
    if spatial == dims:
        return x, None
    if not sr.coder.time_axis and spatial == dims + 1:  # (B, C, T, *S): refine each frame
        return x.transpose(1, 2).flatten(0, 1), x.shape[2]
    raise UserError(f"input of shape {tuple(x.shape)} does not fit the model's axes {list(sr.coder.transform.axes)}:"
                    f" expected (B, C, {', '.join(sr.coder.transform.axes)})")


def super_resolve(sr: SuperResolver, coarse: Tensor, factor: int, *, steps: int = 16, solver: str = "heun",
                  seed: int = 0, batch_size: int = 16) -> Tensor:
    """Refine physical trajectories/fields ``factor`` (a power of 2) times along every transformed axis by
    repeated one-level applications. Shapes: (B, C, *G) -> (B, C, *factor·G) (space-only model on (B, C, T, *S):
    (B, C, T, *factor·S)). The same ``seed`` gives the same result."""
    levels = levels_of_factor(factor)
    fields, frames = _fields(sr, coarse)
    gen = torch.Generator().manual_seed(int(seed))
    x = sr.encode(fields.float())
    for _ in range(levels):
        x = refine_once(sr, x, steps=steps, solver=solver, generator=gen, batch_size=batch_size)
    x = sr.decode(x)
    if frames is not None:
        x = x.reshape(-1, frames, *x.shape[1:]).transpose(1, 2)
    return x


# ------------------------------------------------------------------------------------------ files
def read_coarse(path: str | os.PathLike, channels, index=None, start_frame: int = 0, frames: Optional[int] = None
                ) -> tuple[Tensor, Tensor, str]:
    """Trajectories to refine, physical: a forecast netCDF (every initial state × member, times = lead times) or
    a trajectory file (trajectories ``index`` (default all), frames ``start_frame`` .. + ``frames``).

    Returns (B, C, T, *S) float32, times (T,) float64, and a description of the samples.
    """
    import xarray as xr

    from funcdiff.tasks.forecast_io import read_forecast, read_trajectories

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    if path.suffix == ".nc":
        with xr.open_dataset(path, engine="netcdf4") as ds:
            is_forecast = "lead_time" in ds.dims
            leads = np.asarray(ds["lead_time"].values, dtype=np.float64) if is_forecast else None
        if is_forecast:
            x = read_forecast(path)  # (n_init, M, C, L, *S)
            return (x.flatten(0, 1), torch.tensor(leads, dtype=torch.float64),
                    f"forecast file: sample = init * {x.shape[1]} + member")
    traj, times = read_trajectories(path, channels)
    chosen = list(range(traj.shape[0])) if index is None else list(index)
    bad = [i for i in chosen if not 0 <= i < traj.shape[0]]
    if bad:
        raise UserError(f"{path} holds {traj.shape[0]} trajectories; index={bad} is out of range")
    stop = traj.shape[2] if frames is None else start_frame + frames
    if not 0 <= start_frame < stop <= traj.shape[2]:
        raise UserError(f"{path} has {traj.shape[2]} frames; frames {start_frame}..{stop - 1} are not all in it")
    t = torch.arange(traj.shape[2], dtype=torch.float64) if times is None else times.double().reshape(-1)
    return (traj[chosen, :, start_frame:stop].float(), t[start_frame:stop],
            f"trajectory file: sample k = trajectory {chosen}[k], frames {start_frame}..{stop - 1}")


def write_super_resolution(fine: Tensor, times: Tensor, channels, path: str | os.PathLike, attrs: dict) -> Path:
    """Refined trajectories (B, C, T, *S) as netCDF (atomic, CF-1.8): ``<channel>(sample, t, x[, y])`` with the
    time coordinate ``t`` = ``times`` (T,) (dimensionless model time, units "1"; named ``t`` as in funcdiff's
    trajectory files: CF reserves a ``time`` dimension for calendar times) and x_i = i/n on the unit periodic
    domain."""
    import xarray as xr

    from funcdiff.io.netcdf import SPATIAL_NAMES, variable_attrs, write_netcdf

    dims = ("sample", "t", *SPATIAL_NAMES[: fine.ndim - 3])
    coords = {"sample": np.arange(fine.shape[0], dtype=np.int32), "t": times.numpy()}
    for name, n in zip(dims[2:], fine.shape[3:]):
        coords[name] = np.arange(n) / n
    array = fine.detach().float().cpu().numpy()
    ds = xr.Dataset({c: xr.DataArray(array[:, i], dims=dims, attrs=variable_attrs(c)) for i, c in enumerate(channels)},
                    coords=coords)
    ds["sample"].attrs.update(long_name="sample number")
    ds["t"].attrs.update(long_name="time of the refined frame (model time units)", units="1")
    for name in dims[2:]:
        ds[name].attrs.update(units="1", long_name=f"{name} coordinate (unit domain)")
    ds.attrs.update({"Conventions": "CF-1.8", "grid": "periodic", "channels": json.dumps(list(channels)),
                     **{k: v if isinstance(v, (int, float, str)) else json.dumps(v) for k, v in attrs.items()}})
    return write_netcdf(ds, path)


def plot_super_resolution(coarse: Tensor, fine: Tensor, path: str | os.PathLike, **kwargs) -> Path:
    """Write :func:`super_resolution_figure` (same arguments) as PNG; returns ``path``."""
    from funcdiff.io.plots import save_figure

    return save_figure(super_resolution_figure(coarse, fine, **kwargs), path)


def super_resolution_figure(coarse: Tensor, fine: Tensor, *, channel_name: str = "u", units: str = "1",
                            coarse_times: Optional[Tensor] = None, fine_times: Optional[Tensor] = None):
    """The first channel of one coarse trajectory and its refinement on one colour scale
    (:func:`funcdiff.io.plots.colour_scale`), with a colour bar naming the channel and its units: space-time
    images (x across, time up, in model time units when the frame times are given) for 1-D space, the first
    frame as a map (x across, y up) for 2-D. Shapes: coarse (C, T, *S), fine (C, T', *S'); times (T,), (T',)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from funcdiff.io.plots import colour_scale, draw_map, label_colorbar, units_label

    a, b = coarse[0].float(), fine[0].float()
    space_time = coarse.ndim == 3
    if not space_time:
        a, b = a[0], b[0]
    cmap, vmin, vmax = colour_scale(a, b)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained", sharey=space_time)
    for ax, field, name, times in ((axes[0], a, "input", coarse_times), (axes[1], b, "refined", fine_times)):
        shape = "×".join(map(str, field.shape))
        if space_time:
            t0, t1 = (0.0, 1.0) if times is None else (float(times[0]), float(times[-1]))
            dt = (t1 - t0) / max(field.shape[0] - 1, 1) if times is not None else 1.0 / field.shape[0]
            lo, hi = (t0 - dt / 2, t1 + dt / 2) if times is not None else (0.0, 1.0)
            im = ax.imshow(field.numpy(), origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                           extent=(0, 1, lo, hi), interpolation="nearest")
            ax.set_xlabel("x")
            ax.set_ylabel("time (model time units)" if times is not None else "time (fraction of the trajectory)")
            ax.set_title(f"{name} {channel_name}: {shape} (time × x)", fontsize=9)
        else:
            im = draw_map(ax, field, cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_title(f"{name} {channel_name}: {shape} (x × y), first frame", fontsize=9)
    label_colorbar(fig.colorbar(im, ax=list(axes), shrink=0.85), units_label(channel_name, units))
    return fig


__all__ = ["SuperResolver", "interpolate", "load_super_resolver", "plot_super_resolution", "read_coarse",
           "refine_once", "sample_state", "super_resolution_figure", "super_resolve", "upsample_time_coordinate",
           "write_super_resolution"]
