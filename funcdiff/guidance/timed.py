"""Sensors in space and time for assimilation during a forecast: the same point operator at each of K times.

:class:`TimedObservation` holds sensor positions (N, d) shared by all times, the observation times (K,) in model
time units *after the forecast's initial state* (lead times: a sensor at time 4·dt guides lead 4) and values
(K, C_obs, N). At each rollout step the frames that carry sensors are guided by the existing
:class:`~funcdiff.guidance.GuidedDenoiser` through :class:`FrameTerm` (Rozet & Louppe 2023 assimilate sparse,
intermittent observations into Kolmogorov-flow trajectories in the same spirit, with whole-trajectory scores).

Several initial states. Each initial state of a forecast has its own sensors, read from its own trajectory
(:func:`twin_observation`); a :class:`~funcdiff.tasks.forecast.Forecast` takes one :class:`TimedObservation` per
initial state.

File layout: the layout of :mod:`funcdiff.guidance.io` (one ``obs_sample`` row per time) with one more leading
dimension ``init`` (one row of values per initial state) and the coordinates::

    observed_values(init, obs_sample, observed_channel, sensor)   float64, in the channels' units
    obs_time(obs_sample)      float64, lead time: hours on the sphere, else dimensionless model time units
    init_index(init), init_frame(init)   int32, trajectory index and start frame of each initial state

Files of funcdiff <= 0.1 (no ``init`` dimension, one initial state) are still read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from funcdiff.errors import UserError
from funcdiff.guidance.io import INIT_DIM, observation_from_dataset, observation_to_dataset
from funcdiff.guidance.observations import SparseObservation, random_sensors
from funcdiff.guidance.terms import GuidanceTerm, as_term
from funcdiff.io.atomic import atomic_path
from funcdiff.utils import expand_sigma

TIME_DIM = "obs_time"


@dataclass(frozen=True)
class TimedObservation:
    """Point sensors observed at several times. ``sensors`` holds positions, channels, noise std, grid and values
    (K, C_obs, N) -- one row per time; ``times`` (K,) are lead times (model time units since the initial state)."""

    sensors: SparseObservation
    times: Tensor

    def __post_init__(self) -> None:
        times = torch.as_tensor(self.times, dtype=torch.float64).flatten()
        object.__setattr__(self, "times", times)
        if self.sensors.values is None or self.sensors.values.shape[0] != times.numel():
            raise UserError(f"timed observations need one row of values per time: {times.numel()} times, values "
                            f"{None if self.sensors.values is None else tuple(self.sensors.values.shape)}")
        if not bool(torch.isfinite(times).all()):
            raise UserError("observation times must be finite")

    def leads(self, dt: float, lead_steps: int) -> list[int]:
        """The forecast lead (1..lead_steps) of each time; UserError for a time that is not a multiple of ``dt``
        or that lies outside the forecast (0, lead_steps·dt]."""
        out = []
        for t in self.times.tolist():
            lead = round(t / dt)
            if not math.isclose(lead * dt, t, rel_tol=1e-6, abs_tol=1e-9 * max(dt, 1.0)):
                raise UserError(f"observation time {t:g} is not on the forecast's frames (multiples of dt={dt:g})")
            if not 1 <= lead <= lead_steps:
                raise UserError(f"observation time {t:g} lies outside the forecast (0, {lead_steps * dt:g}] "
                                f"({lead_steps} leads of dt={dt:g})")
            out.append(lead)
        return out

    def at(self, k: int) -> SparseObservation:
        """The sensors at the k-th time (values (1, C_obs, N))."""
        return self.sensors.with_values(self.sensors.values[k:k + 1])


def make_timed_observation(truth: Tensor, frames: Sequence[int], dt: float, *, fraction: float | int,
                           channels: Sequence[int] = (0,), channel_names: Sequence[str] | None = None,
                           noise_std: float = 0.0, grid: str = "periodic", seed: int = 0,
                           noise_seed: int | None = None) -> TimedObservation:
    """Sensors at fixed random grid points, read from ``truth`` at the lead ``frames`` (plus Gaussian noise).

    Args:
        truth: (C, L + 1, *S) physical frames, index 0 the initial state, index ℓ lead ℓ.
        frames: leads (≥ 1) that carry observations; fraction: share of grid points (float) or a count (int).
        seed: draws the sensor positions (and the noise, unless ``noise_seed`` is given).
        noise_seed: draws the measurement noise alone, so that sensors at the same positions (same ``seed``) on
            several trajectories get independent noise (:func:`twin_observation`).
    Shapes: returns values (len(frames), C_obs, N).
    """
    gen = torch.Generator().manual_seed(int(seed))
    spatial = tuple(truth.shape[2:])
    coords = random_sensors(fraction, spatial, grid=grid, generator=gen)
    op = SparseObservation(coords=coords, channels=tuple(channels), noise_std=noise_std, grid=grid,
                           channel_names=tuple(channel_names) if channel_names else None)
    frames = [int(f) for f in frames]
    if not frames or min(frames) < 1 or max(frames) >= truth.shape[1]:
        raise UserError(f"observed leads {frames[:5]}... must lie in 1..{truth.shape[1] - 1} (the truth's frames)")
    values = op.observe(truth[:, frames].movedim(1, 0).double())
    noise_gen = gen if noise_seed is None else torch.Generator().manual_seed(int(noise_seed))
    values = values + noise_std * torch.randn(values.shape, generator=noise_gen, dtype=torch.float64)
    return TimedObservation(op.with_values(values), torch.tensor(frames, dtype=torch.float64) * dt)


def twin_leads(lead_steps: int, truth_leads: int, every: int) -> list[int]:
    """The leads a twin experiment observes: every ``every``-th of 1..``lead_steps`` that has a truth frame
    (``truth_leads`` of them follow the initial state). Empty when none does."""
    return list(range(every, min(lead_steps, truth_leads) + 1, every))


@dataclass(frozen=True)
class SensorNetwork:
    """Twin-experiment sensors: ``fraction`` of the grid points, observed every ``every`` leads with Gaussian
    noise of std ``noise_std`` (field units); the positions are drawn from ``seed``."""

    fraction: float
    every: int = 4
    noise_std: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise UserError(f"the sensor fraction must be in (0, 1], got {self.fraction}")
        if self.every < 1 or self.noise_std < 0:
            raise UserError(f"sensors need every >= 1 and noise_std >= 0, got {self.every}, {self.noise_std}")


def twin_observation(initial: Tensor, truth: Tensor, lead_steps: int, dt: float, network: SensorNetwork, *,
                     channel_names: Sequence[str], grid: str = "periodic", trajectory: int = 0,
                     frame: int = 0) -> TimedObservation:
    """Twin-experiment sensors of one initial state, read from *its own* trajectory's truth.

    The positions depend on ``network.seed`` alone (one sensor network for every initial state of a run); the
    noise on ``(seed, trajectory, frame)``. So an initial state's sensors and values are the same whether it runs
    alone or beside others. Observes every ``network.every``-th lead that has a truth frame (:func:`twin_leads`);
    UserError if none.

    Shapes: initial (C, history, *S), truth (C, L_avail, *S) physical (lead ℓ at index ℓ - 1).
    """
    leads = twin_leads(lead_steps, truth.shape[1], network.every)
    if not leads:
        raise UserError(f"no lead in 1..{min(lead_steps, truth.shape[1])} (the forecast's leads with a truth frame) "
                        f"is a multiple of every={network.every}")
    frames = torch.cat([initial[:, -1:], truth], dim=1)
    noise_seed = int(np.random.SeedSequence([int(network.seed), int(trajectory), int(frame)]).generate_state(1)[0])
    return make_timed_observation(frames, leads, dt, fraction=float(network.fraction),
                                  channels=range(len(channel_names)), channel_names=channel_names,
                                  noise_std=network.noise_std, grid=grid, seed=network.seed, noise_seed=noise_seed)


@dataclass(frozen=True)
class SensorFile:
    """The contents of a forecast sensor file: one :class:`TimedObservation` per initial state, with the
    trajectory index and start frame of each (``None`` for a file of funcdiff <= 0.1, which held one state)."""

    observations: tuple[TimedObservation, ...]
    init_index: tuple[int, ...] | None = None
    init_frame: tuple[int, ...] | None = None

    def for_starts(self, starts: Sequence[tuple[int, int]], path: str | os.PathLike = "the sensor file"
                   ) -> list[TimedObservation]:
        """The observations of each ``(trajectory index, start frame)``, matched by index and frame (a file of
        one state without them serves a run of one state). UserError naming the start that has no sensors."""
        if self.init_index is None:
            if len(starts) != 1 or len(self.observations) != 1:
                raise UserError(f"{path} holds the sensors of one initial state without its trajectory index; "
                                f"it cannot serve {len(starts)} initial states")
            return list(self.observations)
        keys = list(zip(self.init_index, self.init_frame or [None] * len(self.init_index)))
        out = []
        for index, frame in starts:
            match = [k for k, key in enumerate(keys) if key[0] == index and key[1] in (frame, None)]
            if not match:
                raise UserError(f"{path} holds sensors for the initial states (index, frame) {keys}, not for "
                                f"trajectory {index} at frame {frame}")
            out.append(self.observations[match[0]])
        return out


def time_attrs(time_units: str = "model time units") -> dict:
    """CF attributes of a lead-time coordinate: hours for a calendar time axis ("hours since ..."), else
    dimensionless with the model's time unit in ``long_name``."""
    duration = time_units.split(" since ")[0].strip()
    if " since " in time_units:
        return {"long_name": "lead time of the observation", "units": duration}
    return {"long_name": f"lead time of the observation ({duration})", "units": "1"}


def save_timed_observations(observations: Sequence[TimedObservation], path: str | os.PathLike, *,
                            init_index: Sequence[int], init_frame: Sequence[int] | None = None,
                            time_units: str = "model time units", units: Sequence[str] | str = "1") -> Path:
    """Write the sensors of several initial states to one netCDF file atomically (layout in the module
    docstring, plus an ``init`` dimension): they must share positions, channels and times, as twin sensors do.
    ``units``: the observed channels' units; ``time_units``: the forecaster's (hours on the sphere)."""
    if not observations or len(observations) != len(init_index):
        raise ValueError(f"one initial-state index per observation: {len(observations)} observations, "
                         f"{len(init_index)} indices")
    first = observations[0]
    for obs in observations[1:]:
        if (not torch.equal(obs.times, first.times) or not torch.equal(obs.sensors.coords, first.sensors.coords)
                or obs.sensors.channels != first.sensors.channels):
            raise ValueError("the initial states' sensors differ in times, positions or channels: save each with "
                             "its own save_timed_observations call")
    values = torch.stack([o.sensors.values for o in observations])  # (n_init, K, C_obs, N)
    ds = observation_to_dataset(first.sensors.with_values(values[0]), units=units)
    ds["observed_values"] = ((INIT_DIM, *ds["observed_values"].dims), values.double().numpy(),
                             ds["observed_values"].attrs)
    init_coords = {"init_index": (INIT_DIM, np.asarray(init_index, dtype=np.int32),
                                  {"long_name": "trajectory index of the initial state", "units": "1"})}
    if init_frame is not None:
        init_coords["init_frame"] = (INIT_DIM, np.asarray(init_frame, dtype=np.int32),
                                     {"long_name": "frame of the initial state in its trajectory", "units": "1"})
    ds = ds.assign_coords({TIME_DIM: ("obs_sample", first.times.numpy(), time_attrs(time_units)), **init_coords})
    ds.attrs["title"] = "funcdiff forecast sensors (one row of values per initial state and observation time)"
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    return Path(path)


def save_timed_observation(obs: TimedObservation, path: str | os.PathLike, *, init_index: int = 0,
                           init_frame: int | None = None, time_units: str = "model time units",
                           units: Sequence[str] | str = "1") -> Path:
    """Write the sensors of one initial state (:func:`save_timed_observations` with one entry)."""
    return save_timed_observations([obs], path, init_index=[init_index],
                                   init_frame=None if init_frame is None else [init_frame], time_units=time_units,
                                   units=units)


def load_timed_observations(path: str | os.PathLike, grid: str | None = None) -> SensorFile:
    """Read a file written by :func:`save_timed_observations` (or the one-state file of funcdiff <= 0.1).
    UserError for a file without observation times, or whose stations are on another ``grid`` than the model's
    (lat-lon stations for a torus model, say)."""
    with xr.open_dataset(path, engine="netcdf4") as ds:
        ds = ds.load()
    file_grid = _grid_of(ds)
    if grid is not None and file_grid and file_grid != grid:
        raise UserError(f"{path} holds sensors on a {file_grid!r} grid "
                        f"({'lat-lon stations' if file_grid == 'latlon' else 'unit-domain positions'}) but the "
                        f"model's grid is {grid!r}")
    if TIME_DIM not in ds.coords:
        raise UserError(f"{path} has no '{TIME_DIM}' coordinate: it is not a file of timed observations "
                        "(make one with `funcdiff forecast --sensor-fraction F` or save_timed_observations)")
    times = torch.tensor(np.asarray(ds[TIME_DIM].values, dtype=np.float64))
    if INIT_DIM not in ds.dims:
        return SensorFile((TimedObservation(observation_from_dataset(ds, path), times),))
    observations = tuple(TimedObservation(observation_from_dataset(ds.isel({INIT_DIM: i}), path), times)
                         for i in range(ds.sizes[INIT_DIM]))
    frames = tuple(int(f) for f in ds["init_frame"].values) if "init_frame" in ds.coords else None
    return SensorFile(observations, tuple(int(i) for i in ds["init_index"].values), frames)


def load_timed_observation(path: str | os.PathLike) -> TimedObservation:
    """The sensors of a file holding one initial state (:func:`load_timed_observations` for several)."""
    contents = load_timed_observations(path)
    if len(contents.observations) != 1:
        raise UserError(f"{path} holds the sensors of {len(contents.observations)} initial states; read them with "
                        "load_timed_observations")
    return contents.observations[0]


def _grid_of(ds: xr.Dataset) -> str:
    """The grid of the sensors in ``ds`` ("periodic", "node", "latlon"), or "" when it holds no sensors."""
    if "sensor_coords" in ds:
        grid = str(ds["sensor_coords"].attrs.get("grid", ds.attrs.get("grid", "")))
        return {"nodes": "node"}.get(grid, grid)
    lat, lon = ds.variables.get("latitude"), ds.variables.get("longitude")
    return "latlon" if lat is not None and lon is not None and lat.ndim == 1 and lat.dims == lon.dims else ""


class FrameTerm(GuidanceTerm):
    """A guidance term on one frame of a folded window: ``term(denoised[:, frame channels], sigma of that frame)``.

    The window holds frames stacked as channels (:mod:`funcdiff.data.windows`), so an observation term written
    for a (B, C, *S) field acts on frame k unchanged; its sigma is the frame's own level (per element, or the
    per-sample level of an autoregressive block). Shapes: denoised (B, W·C, *S) -> (B,).
    """

    def __init__(self, term, channels: slice) -> None:
        self.term, self.channels = as_term(term), channels

    def __call__(self, denoised: Tensor, sigma: Tensor) -> Tensor:
        s = expand_sigma(sigma, denoised)
        s = s[:, self.channels] if s.shape[1] > 1 else s
        return self.term(denoised[:, self.channels], s)

    def for_batch(self, part: slice) -> "FrameTerm":
        return FrameTerm(self.term.for_batch(part), self.channels)
