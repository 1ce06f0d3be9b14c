"""Forecasts on disk: the resumable streaming save, reading back, the picture, and initial states from data files.

Resumption. ``save_forecast`` writes ``<out>.partial`` lead by lead and, after every rollout step, the rollout
state (history, window, per-member generator states) to ``<out>.state.pt`` atomically. A rerun of the same command
finds both, checks that the run's signature matches, and continues from the state; leads written after the last
saved state are written again with the same values (the computation is deterministic), so the finished file equals
an uninterrupted run's. On completion the partial file is renamed to ``<out>`` and the state file removed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import netCDF4
import numpy as np
import torch
import xarray as xr
from torch import Tensor
from tqdm.auto import tqdm

from funcdiff.errors import UserError
from funcdiff.io.atomic import atomic_path
from funcdiff.io.forecast_file import ForecastLayout, create_forecast_file, write_leads
from funcdiff.tasks.forecast import Forecast, RolloutState


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _state_path(path: Path) -> Path:
    return path.with_name(path.name + ".state.pt")


def save_forecast(fc: Forecast, path: Path, *, progress: bool = False) -> Path:
    """Write ``fc`` to ``path`` (netCDF), resuming a partial run of the same signature. Returns ``path``."""
    signature = json.dumps(fc.signature(), sort_keys=True)
    if path.exists():
        if _file_signature(path) == signature:
            return path  # already complete: nothing to redo
        raise UserError(f"{path} exists and holds another forecast; choose another --out or delete it")
    part, state_file = _partial(path), _state_path(path)
    start_init, state = _resume_point(part, state_file, signature, fc.forecaster.device)
    if state is None and start_init == 0:
        part.unlink(missing_ok=True)
        ds = create_forecast_file(part, _layout(fc), {**fc.attrs, "run_signature": signature,
                                                     "nfe_per_frame": fc.nfe_per_frame})
    else:
        ds = netCDF4.Dataset(part, "a")
    total = len(fc.init_index) * fc.lead_steps
    done = start_init * fc.lead_steps + (state.emitted if state is not None else 0)
    bar = tqdm(total=total, initial=min(done, total), desc="forecast", unit="frame", disable=not progress)
    try:
        for init in range(start_init, len(fc.init_index)):
            for leads, frames, new_state in fc.blocks(init, state if init == start_init else None):
                write_leads(ds, fc.forecaster.channel_names, init, leads, frames)
                _save_state(state_file, signature, init, new_state)
                bar.update(len(leads))
    finally:
        ds.close()
        bar.close()
    os.replace(part, path)
    state_file.unlink(missing_ok=True)
    return path


def _layout(fc: Forecast) -> ForecastLayout:
    f = fc.forecaster
    return ForecastLayout(channels=f.channel_names, members=fc.members, lead_steps=fc.lead_steps, dt=f.dt,
                          spatial=tuple(fc.initial.shape[3:]), grid=f.grid, init_index=fc.init_index,
                          init_frame=fc.init_frame, init_time=fc.init_time, time_units=f.time_units,
                          channel_units=f.channel_units)


def _file_signature(path: Path) -> Optional[str]:
    try:
        with netCDF4.Dataset(path, "r") as ds:
            return str(ds.getncattr("run_signature")) if "run_signature" in ds.ncattrs() else None
    except OSError:
        return None


def _resume_point(part: Path, state_file: Path, signature: str, device) -> tuple[int, Optional[RolloutState]]:
    """(initial state to continue, its rollout state) from a partial run of the same signature, else (0, None)."""
    if not (part.exists() and state_file.exists()) or _file_signature(part) != signature:
        return 0, None
    saved = torch.load(state_file, map_location="cpu", weights_only=True)
    if saved.get("signature") != signature:
        return 0, None
    return int(saved["init"]), RolloutState.from_state_dict(saved["rollout"], device)


def _save_state(state_file: Path, signature: str, init: int, state: RolloutState) -> None:
    with atomic_path(state_file) as tmp:
        torch.save({"signature": signature, "init": init, "rollout": state.state_dict()}, tmp)


def read_forecast(path: str | os.PathLike) -> Tensor:
    """Every member and lead of a forecast file. Shapes: (n_init, M, C, L, *S), float32, physical."""
    with xr.open_dataset(path, engine="netcdf4") as ds:
        channels = json.loads(ds.attrs["channels"])
        return torch.stack([torch.from_numpy(np.asarray(ds[c].values, dtype=np.float32)) for c in channels], dim=2)


def plot_forecast(members: Tensor, path: str | os.PathLike, *, truth: Optional[Tensor] = None, dt: float = 1.0,
                  channel_names: Sequence[str] = ("u",), leads: Optional[Sequence[int]] = None) -> Path:
    """Truth (if given), ensemble mean, members 0 and 1 and the spread of the first channel at a few leads.

    2-D fields: one image per (row, lead); truth, mean and members share one colour scale, the spread has its own.
    1-D fields: per lead, truth, mean ± spread and two members as lines. Shapes: members (M, C, L, *S), truth
    (C, L', *S) with lead ℓ at index ℓ - 1.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from funcdiff.io.plots import save_figure

    n_leads = members.shape[2]
    leads = sorted({max(1, round(f * n_leads)) for f in (0.02, 0.25, 0.5, 1.0)}) if leads is None else list(leads)
    x = members[:, 0, [ell - 1 for ell in leads]].float()  # (M, K, *S)
    ref = None if truth is None or truth.shape[1] < leads[-1] else truth[0, [ell - 1 for ell in leads]].float()
    mean, spread = x.mean(0), x.std(0) if x.shape[0] > 1 else torch.zeros_like(x[0])
    if x.ndim == 2 + 1:
        fig = _plot_lines(plt, x, mean, spread, ref, leads, dt)
    else:
        fig = _plot_images(plt, x, mean, spread, ref, leads, dt)
    fig.suptitle(f"forecast of {channel_names[0]}: {x.shape[0]} members (truth, mean and members on one scale)")
    return save_figure(fig, path)


def _plot_images(plt, x, mean, spread, ref, leads, dt):
    rows = ([("truth", ref)] if ref is not None else []) + [("ensemble mean", mean), ("member 0", x[0])]
    rows += [("member 1", x[1])] if x.shape[0] > 1 else []
    scale = ref if ref is not None else mean
    vmax = float(scale.abs().max())
    fig, axes = plt.subplots(len(rows) + 1, len(leads), figsize=(2.4 * len(leads), 2.2 * (len(rows) + 1)),
                             squeeze=False)
    for j, lead in enumerate(leads):
        for i, (name, field) in enumerate(rows):
            im = axes[i, j].imshow(field[j].T, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        sp = axes[-1, j].imshow(spread[j].T, origin="lower", cmap="viridis", vmin=0, vmax=float(spread.max()) or 1)
        axes[0, j].set_title(f"lead {lead} (t = {lead * dt:g})", fontsize=8)
    for i, name in enumerate([name for name, _ in rows] + ["spread"]):
        axes[i, 0].set_ylabel(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[:-1].ravel().tolist(), shrink=0.6)
    fig.colorbar(sp, ax=axes[-1].ravel().tolist(), shrink=0.6)
    return fig


def _plot_lines(plt, x, mean, spread, ref, leads, dt):
    grid = np.arange(x.shape[-1]) / x.shape[-1]
    fig, axes = plt.subplots(1, len(leads), figsize=(3.2 * len(leads), 2.8), squeeze=False)
    for j, lead in enumerate(leads):
        ax = axes[0, j]
        ax.fill_between(grid, mean[j] - spread[j], mean[j] + spread[j], color="C0", alpha=0.25, label="mean ± spread")
        ax.plot(grid, mean[j], color="C0", label="ensemble mean")
        for m in range(min(2, x.shape[0])):
            ax.plot(grid, x[m, j], color="C2", lw=0.7, alpha=0.8, label="members" if m == 0 else None)
        if ref is not None:
            ax.plot(grid, ref[j], color="k", lw=1.2, ls="--", label="truth")
        ax.set_title(f"lead {lead} (t={lead * dt:g})", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    return fig


def initial_from_file(path: str | os.PathLike, channels: Sequence[str], index: int, start_frame: Optional[int],
                      history: int, frame_step: int = 1) -> tuple[Tensor, Tensor, int, float]:
    """The history frames of trajectory ``index`` ending at ``start_frame`` (default: the earliest possible), the
    frames after it (the truth, lead ℓ at index ℓ - 1, spaced ``frame_step``), the start frame and its time.

    Shapes: returns initial (C, history, *S), truth (C, L_avail, *S) physical.
    """
    traj, times = read_trajectories(path, channels)
    return initial_from_trajectories(traj, times, path, index, start_frame, history, frame_step)


def read_trajectories(path: str | os.PathLike, channels: Sequence[str]) -> tuple[Tensor, Optional[Tensor]]:
    """The named channels of a trajectory file (N, C, T, *S) physical, and its time coordinate (T,) or None
    ((N, T) for an ERA5 store, whose trajectories are consecutive segments of one series)."""
    from funcdiff.data import load_fields

    data = load_fields(path, fields=list(channels))
    traj = data.stack(channels)
    if traj.ndim < 4:
        raise UserError(f"{path}: {list(channels)} are not trajectories (N, T, *S); got {tuple(traj.shape)}")
    times = data.coords.get("t")
    segment = (data.attrs.get("era5") or {}).get("segment_hours")
    if times is not None and segment:
        times = times.double()[None] + float(segment) * torch.arange(traj.shape[0], dtype=torch.float64)[:, None]
    return traj, times


def initial_from_trajectories(traj: Tensor, times: Optional[Tensor], path: str | os.PathLike, index: int,
                              start_frame: Optional[int], history: int, frame_step: int = 1
                              ) -> tuple[Tensor, Tensor, int, float]:
    """:func:`initial_from_file` on trajectories already read (:func:`read_trajectories`); ``path`` names them in
    errors. Shapes: traj (N, C, T, *S), times (T,) or None."""
    n, t = traj.shape[0], traj.shape[2]
    if not 0 <= index < n:
        raise UserError(f"--index {index} is out of range: {path} holds {n} trajectories")
    first = (history - 1) * frame_step
    start = first if start_frame is None else int(start_frame)
    if not first <= start < t:
        raise UserError(f"--start-frame {start} must lie in {first}..{t - 1}: the forecaster needs {history} "
                        f"history frames spaced {frame_step} apart, and the trajectories have {t} frames")
    initial = traj[index, :, start - first:start + 1:frame_step]
    truth = traj[index, :, start + frame_step::frame_step]
    if times is None:
        time = float(start)
    else:
        time = float(times[index, start] if times.ndim == 2 else times[start])
    return initial, truth, start, time
