"""Sensors in space and time for assimilation during a forecast: the same point operator at each of K times.

:class:`TimedObservation` holds sensor positions (N, d) shared by all times, the observation times (K,) in model
time units *after the forecast's initial state* (lead times: a sensor at time 4·dt guides lead 4) and values
(K, C_obs, N). At each rollout step the frames that carry sensors are guided by the existing
:class:`~funcdiff.guidance.GuidedDenoiser` through :class:`FrameTerm` (Rozet & Louppe 2023 assimilate sparse,
intermittent observations into Kolmogorov-flow trajectories in the same spirit, with whole-trajectory scores).

File layout: the layout of :mod:`funcdiff.guidance.io` (one ``obs_sample`` row per time) plus a coordinate
``obs_time(obs_sample)`` (float, model time units) -- so the static reader reads the sensors unchanged.
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
from funcdiff.guidance.io import load_observation, observation_to_dataset
from funcdiff.guidance.observations import SparseObservation, random_sensors
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
                           noise_std: float = 0.0, grid: str = "periodic", seed: int = 0) -> TimedObservation:
    """Sensors at fixed random grid points, read from ``truth`` at the lead ``frames`` (plus Gaussian noise).

    Args:
        truth: (C, L + 1, *S) physical frames, index 0 the initial state, index ℓ lead ℓ.
        frames: leads (≥ 1) that carry observations; fraction: share of grid points (float) or a count (int).
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
    values = values + noise_std * torch.randn(values.shape, generator=gen, dtype=torch.float64)
    return TimedObservation(op.with_values(values), torch.tensor(frames, dtype=torch.float64) * dt)


def save_timed_observation(obs: TimedObservation, path: str | os.PathLike) -> Path:
    """Write ``obs`` to netCDF atomically (layout in the module docstring)."""
    ds = observation_to_dataset(obs.sensors)
    ds = ds.assign_coords({TIME_DIM: ("obs_sample", obs.times.numpy(), {"long_name": "lead time of the observation",
                                                                        "units": "model time units"})})
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    return Path(path)


def load_timed_observation(path: str | os.PathLike) -> TimedObservation:
    """Read a file written by :func:`save_timed_observation`; UserError for a file without observation times."""
    with xr.open_dataset(path, engine="netcdf4") as ds:
        if TIME_DIM not in ds.coords:
            raise UserError(f"{path} has no '{TIME_DIM}' coordinate: it is not a file of timed observations "
                            "(make one with `funcdiff forecast --sensor-fraction F` or save_timed_observation)")
        times = torch.tensor(np.asarray(ds[TIME_DIM].values, dtype=np.float64))
    static = load_observation(path)
    return TimedObservation(static, times)


class FrameTerm:
    """A guidance term on one frame of a folded window: ``term(denoised[:, frame channels], sigma of that frame)``.

    The window holds frames stacked as channels (:mod:`funcdiff.data.windows`), so an observation term written
    for a (B, C, *S) field acts on frame k unchanged; its sigma is the frame's own level (per element, or the
    per-sample level of an autoregressive block). Shapes: denoised (B, W·C, *S) -> (B,).
    """

    damped = False

    def __init__(self, term, channels: slice) -> None:
        self.term, self.channels = term, channels

    def __call__(self, denoised: Tensor, sigma: Tensor) -> Tensor:
        s = expand_sigma(sigma, denoised)
        s = s[:, self.channels] if s.shape[1] > 1 else s
        return self.term(denoised[:, self.channels], s)

    def for_batch(self, part: slice) -> "FrameTerm":
        inner = self.term.for_batch(part) if hasattr(self.term, "for_batch") else self.term
        return FrameTerm(inner, self.channels)
