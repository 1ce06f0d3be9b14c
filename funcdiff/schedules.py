"""Noise levels over diffusion time shared by training and sampling: the Karras ramp as a map from a local
diffusion time to sigma, and the per-frame local times of rolling diffusion (Ruhe et al., ICML 2024; the EDM form
of Rühling Cachay et al. 2025, ERDM). Lives below :mod:`funcdiff.training` and :mod:`funcdiff.sampling`, which
both use it (imports only go upward in the pipeline).

**The one default schedule** (:data:`SIGMA_MIN`, :data:`SIGMA_MAX`, :data:`RHO`): the run config's ``sample``
section defaults to it and is recorded in every checkpoint; every sampler entry point reads the recorded one
(:func:`recorded_schedule`; ``CheckpointMeta.schedule``) and the library functions default to the same values.
σ_max = 20, not EDM's 80: the pipeline normalises data to unit std (see :class:`funcdiff.config.SampleConfig`).
``torch`` is imported inside the functions, so the configuration reads these constants without loading it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 20.0, 7.0


def sigma_from_level(level: torch.Tensor, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                     rho: float = RHO) -> torch.Tensor:
    """Noise level of a local diffusion time ``level`` in [0, 1] through the Karras ramp (Karras et al. 2022,
    eq. 5, read backwards): 1 -> sigma_max, small -> sigma_min, and exactly 0 -> 0 (a clean frame).

    Rolling diffusion (Ruhe et al. 2024, Sec. 3; ERDM, Rühling Cachay et al. 2025) gives frame k of a window
    of W frames the local time (k + t)/W; this maps it to EDM noise levels. Shapes: any -> same (float64).
    """
    import torch

    level = torch.as_tensor(level, dtype=torch.float64).clamp(0.0, 1.0)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigma = (min_inv + level * (max_inv - min_inv)) ** rho
    return torch.where(level > 0, sigma, torch.zeros_like(sigma))


def rolling_levels(window: int, t: torch.Tensor) -> torch.Tensor:
    """Local diffusion times (k + t)/W of the W frames of a rolling window at global time t in [0, 1].

    At t = 1 frame k sits at (k+1)/W (the last frame is pure noise); at t = 0 at k/W (frame 0 clean), which is
    the t = 1 profile shifted by one frame. Shapes: t (...) -> (..., W).
    """
    import torch

    k = torch.arange(window, dtype=torch.float64)
    return (k + torch.as_tensor(t, dtype=torch.float64)[..., None]) / window


def init_levels(window: int, s: torch.Tensor) -> torch.Tensor:
    """Local times of the initial phase: s + (1 - s)(k+1)/W, from an all-noise window (s = 1) to the rolling
    profile at t = 1 (s = 0) (Ruhe et al. 2024, Sec. 3.3). Shapes: s (...) -> (..., W)."""
    import torch

    s = torch.as_tensor(s, dtype=torch.float64)[..., None]
    return s + (1 - s) * rolling_levels(window, torch.ones(()))


SCHEDULE_KEYS = ("sigma_min", "sigma_max", "rho")


def recorded_schedule(config: dict | None, sigma_max: float | None = None) -> dict:
    """The Karras schedule a run's resolved config records at training (its ``sample`` section: ``sigma_min``,
    ``sigma_max``, ``rho``, whichever are there), with ``sigma_max`` overridden when given. Keyword arguments
    for :func:`funcdiff.sampling.sample` and the guided samplers."""
    section = (config or {}).get("sample") or {}
    schedule = {k: float(v) for k, v in section.items() if k in SCHEDULE_KEYS}
    if sigma_max is not None:
        schedule["sigma_max"] = float(sigma_max)
    return schedule
