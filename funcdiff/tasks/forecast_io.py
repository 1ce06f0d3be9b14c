"""Forecasts on disk: the resumable streaming save, reading back, the picture, and initial states from data files.

Resumption. ``save_forecast`` writes ``<out>.partial`` lead by lead and, after every rollout step, the rollout
state (history, window, per-member generator states) to ``<out>.state.pt`` atomically. A rerun of the same command
finds both, checks that the run's signature matches, and continues from the state; leads written after the last
saved state are written again with the same values (the computation is deterministic), so the finished file equals
an uninterrupted run's. On completion the partial file is renamed to ``<out>`` and the state file removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import netCDF4
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from funcdiff.errors import UserError
from funcdiff.io.atomic import atomic_path
from funcdiff.io.forecast_file import ForecastLayout, create_forecast_file, write_leads
from funcdiff.io.forecast_zarr import (ZarrForecast, create_forecast_zarr, finish_forecast_zarr, is_zarr_path,
                                       open_forecast_dataset, open_forecast_zarr, remove_store, store_attribute)
from funcdiff.kinds.base import RolloutState

if TYPE_CHECKING:  # the forecast calls this module; this module only reads it
    from funcdiff.tasks.forecast import Forecast


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _state_path(path: Path) -> Path:
    return path.with_name(path.name + ".state.pt")


def save_forecast(fc: Forecast, path: Path, *, progress: bool = False) -> Path:
    """Write ``fc`` to ``path`` (netCDF, or a zarr store when ``path`` ends in ``.zarr``: the suffix decides),
    resuming a partial run of the same signature. Returns ``path``."""
    signature = json.dumps(fc.signature(), sort_keys=True)
    if path.exists():
        if _file_signature(path) == signature:
            return path  # already complete: nothing to redo
        raise UserError(f"{path} exists and holds another forecast; choose another output file or delete it")
    part, state_file = _partial(path), _state_path(path)
    start_init, state = _resume_point(part, state_file, signature, fc.forecaster.device)
    out = _open_output(fc, part, signature, resume=state is not None or start_init > 0)
    total = len(fc.init_index) * fc.lead_steps
    done = start_init * fc.lead_steps + (state.emitted if state is not None else 0)
    bar = tqdm(total=total, initial=min(done, total), desc="forecast", unit="frame", disable=not progress)
    try:
        for init in range(start_init, len(fc.init_index)):
            for leads, frames, new_state in fc.blocks(init, state if init == start_init else None):
                _write_leads(out, fc.forecaster.channel_names, init, leads, frames)
                _save_state(state_file, signature, init, new_state)
                bar.update(len(leads))
    finally:
        out.close()
        bar.close()
    if is_zarr_path(path):
        finish_forecast_zarr(part)
    os.replace(part, path)
    state_file.unlink(missing_ok=True)
    return path


def _open_output(fc: Forecast, part: Path, signature: str, resume: bool):
    """The partial output, created afresh (a netCDF4 Dataset or a :class:`ZarrForecast`) or reopened to resume."""
    zarr = is_zarr_path(part.with_name(part.name.removesuffix(".partial")))
    if resume:
        return open_forecast_zarr(part) if zarr else netCDF4.Dataset(part, "a")
    remove_store(part)
    attrs = {**fc.attrs, "run_signature": signature, "nfe_per_frame": fc.nfe_per_frame}
    return create_forecast_zarr(part, _layout(fc), attrs) if zarr else create_forecast_file(part, _layout(fc), attrs)


def _write_leads(out, channels: Sequence[str], init: int, leads: Sequence[int], frames: Tensor) -> None:
    """:func:`write_leads` into a netCDF file, :meth:`ZarrForecast.write_leads` into a zarr store."""
    if isinstance(out, ZarrForecast):
        out.write_leads(channels, init, leads, frames)
    else:
        write_leads(out, channels, init, leads, frames)


def _layout(fc: Forecast) -> ForecastLayout:
    f = fc.forecaster
    return ForecastLayout(channels=f.channel_names, members=fc.members, lead_steps=fc.lead_steps, dt=f.dt,
                          spatial=tuple(fc.initial.shape[3:]), grid=f.grid, init_index=fc.init_index,
                          init_frame=fc.init_frame, init_time=fc.init_time, time_units=f.time_units,
                          channel_units=f.channel_units)


def _file_signature(path: Path) -> Optional[str]:
    if path.is_dir():
        return store_attribute(path, "run_signature")
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
    with open_forecast_dataset(path) as ds:
        channels = json.loads(ds.attrs["channels"])
        return torch.stack([torch.from_numpy(np.asarray(ds[c].values, dtype=np.float32)) for c in channels], dim=2)


def plot_forecast(members: Tensor, path: str | os.PathLike, layout: Optional[FrameLayout] = None,
                  **kwargs) -> Path:
    """Write :func:`forecast_figure` (same arguments) to ``path`` as PNG; returns ``path``."""
    from funcdiff.io.plots import save_figure

    return save_figure(forecast_figure(members, layout, **kwargs), path)


@dataclass(frozen=True)
class FrameLayout:
    """What a forecast's frames are: channel names and units, the time between frames ``dt`` in ``time_units``
    (CF units such as "hours since 1970-01-01" on the sphere, "model time units" for PDE data), the ``grid``
    ("periodic", "node" or "latlon") and, on a lat-lon grid, the latitudes and longitudes in degrees."""

    channel_names: Sequence[str] = ("u",)
    channel_units: Sequence[str] = ()
    dt: float = 1.0
    time_units: str = "model time units"
    grid: str = "periodic"
    lat: Optional[object] = None
    lon: Optional[object] = None


def forecast_figure(members: Tensor, layout: Optional[FrameLayout] = None, *, truth: Optional[Tensor] = None,
                    leads: Optional[Sequence[int]] = None, channels: Optional[Sequence[str]] = None,
                    init: Optional[tuple[int, int, float]] = None, observations=None, **layout_fields):
    """The forecast picture as a matplotlib Figure: truth (if given), ensemble mean, members 0 and 1 and the
    spread at a few leads, for every channel (or the ``channels`` named).

    2-D fields: one map per (row, lead), x across and y up on the unit domain, or longitude across and north up
    in degrees on a lat-lon ``grid`` (``lat``/``lon`` in degrees; default the regular grid). Per channel, truth,
    mean and members share one colour scale (:func:`funcdiff.io.plots.colour_scale` of the truth, else of the
    estimates: sequential over the data range for absolute fields such as z500, diverging about 0 for signed
    ones; estimates beyond the truth's range saturate, marked by arrows on the colour bar); the spread has its own;
    both colour bars name the channel and its units. 1-D fields: per lead, truth, mean ± spread and two members
    as lines. The title names the initial state ``init = (trajectory index, frame, time)``; lead labels carry the
    lead time in ``time_units`` (hours for ERA5 data, model time units for PDE data). ``observations`` (a
    :class:`~funcdiff.guidance.timed.TimedObservation`) marks the sensors on the truth and mean panels of the
    observed channels: filled dots at leads that assimilate them, open circles at other leads.

    ``layout`` (:class:`FrameLayout`) says what the frames are; its fields may also be given as keywords.

    Shapes: members (M, C, L, *S), truth (C, L', *S) with lead ℓ at index ℓ - 1.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lay = replace(layout or FrameLayout(), **layout_fields)
    dt, time_units, n_leads, names = lay.dt, lay.time_units, members.shape[2], list(lay.channel_names)
    if channels:
        unknown = [c for c in channels if c not in names]
        if unknown:
            raise UserError(f"channel(s) {unknown} are not in the forecast; it holds {names}")
    chosen = [names.index(c) for c in (channels or names)]
    obs_leads: list[int] = []
    if observations is not None:
        obs_leads = sorted(set(observations.leads(dt, n_leads)))
    if leads is None:
        leads = {max(1, round(f * n_leads)) for f in (0.02, 0.25, 0.5, 1.0)}
        if obs_leads and not leads & set(obs_leads):
            leads.add(obs_leads[0])  # show at least one lead whose sensors were assimilated
    leads = sorted(leads)
    idx = [ell - 1 for ell in leads]
    x = members[:, :, idx].float()  # (M, C, K, *S)
    ref = None if truth is None or truth.shape[1] < leads[-1] else truth[:, idx].float()
    mean = x.mean(0)
    spread = x.std(0) if x.shape[0] > 1 else torch.zeros_like(x[0])
    units = list(lay.channel_units) + ["1"] * (len(names) - len(lay.channel_units))
    meta = dict(dt=dt, time_units=time_units, grid=lay.grid, lat=lay.lat, lon=lay.lon, observations=observations,
                obs_leads=obs_leads)
    if x.ndim == 3 + 1:
        fig = _plot_lines(plt, x, mean, spread, ref, leads, chosen, names, units, meta)
    else:
        fig = _plot_images(plt, x, mean, spread, ref, leads, chosen, names, units, meta)
    fig.suptitle(_forecast_title([names[c] for c in chosen], x.shape[0], names, time_units, init, observations,
                                 obs_leads), fontsize=9)
    return fig


def _forecast_title(drawn: Sequence[str], members: int, names: Sequence[str], time_units: str, init,
                    observations, obs_leads: Sequence[int]) -> str:
    """What the forecast picture shows: channels, members, the initial state and the assimilated sensors."""
    title = f"forecast of {', '.join(drawn)}: {members} members"
    if init is not None:
        title += f", from trajectory {init[0]} at frame {init[1]} ({_time_label(init[2], time_units)})"
    if observations is not None:
        n = observations.sensors.coords.shape[0]
        title += (f"\n{n} sensors of {', '.join(names[c] for c in observations.sensors.channels)} assimilated at "
                  f"leads {_lead_list(obs_leads)} (● observed at this lead, ○ sensor positions)")
    return title


def _duration(time_units: str) -> str:
    """The unit of a lead time: "hours since 1970-01-01" -> "h", "model time units" as it is."""
    unit = time_units.split(" since ")[0].strip()
    return {"hours": "h", "hour": "h", "days": "d", "minutes": "min", "seconds": "s"}.get(unit, unit)


def _time_label(time: float, time_units: str) -> str:
    """An initial time: a date for CF units "<unit> since <date>", else "t = 1.5 model time units"."""
    unit, _, since = time_units.partition(" since ")
    factor = {"hours": 3600, "days": 86400, "minutes": 60, "seconds": 1}.get(unit.strip())
    if since and factor:
        try:
            date = np.datetime64(since.strip().replace(" ", "T"), "s") + np.timedelta64(round(time * factor), "s")
            return f"initial time {str(date)[:16].replace('T', ' ')}"
        except ValueError:
            pass
    return f"initial time t = {time:g} {time_units}"


def _lead_list(leads: Sequence[int]) -> str:
    return ", ".join(map(str, leads[:8])) + (", …" if len(leads) > 8 else "")


def _lead_title(lead: int, dt: float, time_units: str) -> str:
    unit = _duration(time_units)
    return f"lead {lead}: +{lead * dt:g} {unit}" if len(unit) <= 3 else f"lead {lead}: t = {lead * dt:g}\n({unit})"


def _sensor_xy(observations, grid: str):
    """Sensor positions as (across, up) plot coordinates: (x, y) on the unit domain, (lon, lat) on the sphere."""
    coords = observations.sensors.coords.detach().double().cpu().numpy()
    if grid == "latlon" or observations.sensors.grid == "latlon":
        return np.mod(coords[:, 1], 360.0), coords[:, 0]
    return coords[:, 0], coords[:, 1]


def _plot_images(plt, x, mean, spread, ref, leads, chosen, names, units, meta):
    from funcdiff.io.plots import colour_scale, draw_map, label_colorbar, units_label

    base = ([("truth", ref)] if ref is not None else []) + [("ensemble mean", mean), ("member 0", x[0])]
    base += [("member 1", x[1])] if x.shape[0] > 1 else []
    per_block = len(base) + 1
    sphere = meta["grid"] == "latlon"
    width, height = (2.6, 1.55) if sphere else (2.2, 2.1)
    fig, axes = plt.subplots(per_block * len(chosen), len(leads), squeeze=False, layout="constrained",
                             figsize=(width * len(leads) + 1.2, height * per_block * len(chosen) + 0.6))
    obs = meta["observations"]
    observed = set(obs.sensors.channels) if obs is not None else set()
    for b, c in enumerate(chosen):
        rows = axes[b * per_block:(b + 1) * per_block]
        # the truth sets the scale (estimates beyond it saturate, shown by the colour bar's arrows): an untrained
        # or diverging model cannot wash the truth out; without a truth, the estimates set it
        cmap, vmin, vmax = colour_scale(ref[c]) if ref is not None else colour_scale(*[f[c] for _, f in base])
        lowest, highest = min(float(f[c].min()) for _, f in base), max(float(f[c].max()) for _, f in base)
        extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
            (lowest < vmin, highest > vmax)]
        _, _, smax = colour_scale(spread[c], signed=False)
        for j, lead in enumerate(leads):
            for i, (name, field) in enumerate(base):
                im = draw_map(rows[i, j], field[c, j], grid=meta["grid"], lat=meta["lat"], lon=meta["lon"],
                              cmap=cmap, vmin=vmin, vmax=vmax, labels=False)
                if c in observed and i < 2 - (ref is None):  # truth and mean (or the mean alone)
                    across, up = _sensor_xy(obs, meta["grid"])
                    if lead in meta["obs_leads"]:
                        rows[i, j].scatter(across, up, s=9, c="k", marker="o", edgecolors="w", linewidths=0.5)
                    else:
                        rows[i, j].scatter(across, up, s=9, facecolors="none", edgecolors="0.3", linewidths=0.5)
            sp = draw_map(rows[-1, j], spread[c, j], grid=meta["grid"], lat=meta["lat"], lon=meta["lon"],
                          cmap="magma", vmin=0, vmax=smax if smax > 0 else 1, labels=False)
            rows[0, j].set_title(f"{names[c]}, {_lead_title(lead, meta['dt'], meta['time_units'])}", fontsize=7)
        for i, name in enumerate([name for name, _ in base] + ["spread"]):
            rows[i, 0].set_ylabel(f"{name}\n" + ("latitude (°N)" if sphere else "y"), fontsize=7)
        for j in range(len(leads)):
            rows[-1, j].set_xlabel("longitude (°E)" if sphere else "x", fontsize=7)
        label_colorbar(fig.colorbar(im, ax=rows[:-1].ravel().tolist(), shrink=0.8, extend=extend),
                       units_label(names[c], units[c]))
        label_colorbar(fig.colorbar(sp, ax=rows[-1].ravel().tolist(), shrink=0.9),
                       units_label(f"spread of {names[c]}", units[c]))
    return fig


def _plot_lines(plt, x, mean, spread, ref, leads, chosen, names, units, meta):
    from funcdiff.io.plots import units_label

    grid = np.arange(x.shape[-1]) / x.shape[-1]
    fig, axes = plt.subplots(len(chosen), len(leads), figsize=(3.2 * len(leads), 2.6 * len(chosen) + 0.6),
                             squeeze=False, layout="constrained")
    obs = meta["observations"]
    for b, c in enumerate(chosen):
        for j, lead in enumerate(leads):
            ax = axes[b, j]
            ax.fill_between(grid, mean[c, j] - spread[c, j], mean[c, j] + spread[c, j], color="C0", alpha=0.25,
                            label="mean ± spread")
            ax.plot(grid, mean[c, j], color="C0", label="ensemble mean")
            for m in range(min(2, x.shape[0])):
                ax.plot(grid, x[m, c, j], color="C2", lw=0.7, alpha=0.8, label="members" if m == 0 else None)
            if ref is not None:
                ax.plot(grid, ref[c, j], color="k", lw=1.2, ls="--", label="truth")
            if obs is not None and c in obs.sensors.channels and lead in meta["obs_leads"]:
                k = meta["obs_leads"].index(lead)
                ax.scatter(obs.sensors.coords[:, 0].cpu().numpy(),
                           obs.sensors.values[k, list(obs.sensors.channels).index(c)].cpu().numpy(),
                           s=12, c="k", zorder=3, label="sensors (assimilated)")
            ax.set_title(f"{names[c]}, {_lead_title(lead, meta['dt'], meta['time_units'])}", fontsize=8)
            ax.set_xlabel("x", fontsize=7)
            ax.set_ylabel(units_label(names[c], units[c]), fontsize=7)
            ax.tick_params(labelsize=6)
            ax.legend(fontsize=5)
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


def history_frames(shape: Sequence[int], path: str | os.PathLike, index: int, start_frame: Optional[int],
                   history: int, frame_step: int = 1) -> tuple[int, int]:
    """``(first, start)``: the history of trajectory ``index`` of trajectories shaped ``shape`` (N, C, T, *S) is
    frames ``start - first .. start`` every ``frame_step`` (``start`` defaults to the first frame with a whole
    history). UserError naming ``path`` for an index or start frame out of range."""
    n, t = shape[0], shape[2]
    if not 0 <= index < n:
        raise UserError(f"index={index} is out of range: {path} holds {n} trajectories")
    first = (history - 1) * frame_step
    start = first if start_frame is None else int(start_frame)
    if not first <= start < t:
        raise UserError(f"start_frame={start} must lie in {first}..{t - 1}: the forecaster needs {history} "
                        f"history frames spaced {frame_step} apart, and the trajectories have {t} frames")
    return first, start


def initial_from_trajectories(traj: Tensor, times: Optional[Tensor], path: str | os.PathLike, index: int,
                              start_frame: Optional[int], history: int, frame_step: int = 1
                              ) -> tuple[Tensor, Tensor, int, float]:
    """:func:`initial_from_file` on trajectories already read (:func:`read_trajectories`); ``path`` names them in
    errors. Shapes: traj (N, C, T, *S), times (T,) or None."""
    first, start = history_frames(traj.shape, path, index, start_frame, history, frame_step)
    initial = traj[index, :, start - first:start + 1:frame_step]
    truth = traj[index, :, start + frame_step::frame_step]
    if times is None:
        time = float(start)
    else:
        time = float(times[index, start] if times.ndim == 2 else times[start])
    return initial, truth, start, time
