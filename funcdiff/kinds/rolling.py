"""Rolling diffusion (``forecast.kind: rolling``; Ruhe et al., ICML 2024, in the EDM form of Rühling Cachay et al.
2025, ERDM): a window of W = ``horizon`` frames whose noise rises with the frame index.

Training draws per-frame levels (k + t)/W through the Karras ramp (:class:`~funcdiff.training.forecast.RollingSigmas`,
a fraction ``init_fraction`` on the initial phase); the backbone sees each frame's noise level as a channel. A
rollout step lowers every frame's sigma along the per-frame schedule (:func:`funcdiff.sampling.sigmas_rolling`,
``steps_per_frame`` steps), emits the now-clean first frame, shifts the window and appends fresh noise at sigma_max;
the very first step runs the initial phase (all noise -> the rolling profile) with ``steps_per_frame × W`` steps.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from funcdiff.kinds.autoregressive import AutoregressiveKind, fresh_noise
from funcdiff.kinds.base import Forecaster
from funcdiff.sampling import get_solver, sigmas_rolling
from funcdiff.training.forecast import RollingSigmas


class RollingKind(AutoregressiveKind):
    """The autoregressive layout with per-frame noise levels (module docstring)."""

    name = "rolling"

    def model_config(self, num_channels: int) -> dict:
        return {**super().model_config(num_channels), "noise_per_channel": True}

    def sigma_sampler(self) -> RollingSigmas:
        fc, sc, c = self.config.forecast, self.config.sample, len(self.config.data.channels)
        return RollingSigmas(fc.horizon, c, fc.init_fraction, sc.sigma_min, sc.sigma_max, sc.rho)

    @classmethod
    def frames_per_step(cls, forecast) -> int:
        return 1

    @classmethod
    def nfe_per_frame(cls, forecast, steps_per_frame: int, solver: str = "heun") -> float:
        """A rolling step always has frames above 0, so Heun costs 2 per step."""
        return float(steps_per_frame * (1 if solver == "euler" else 2))

    @classmethod
    def start_window(cls, fc: Forecaster, denoiser, run, gens, history: Tensor, steps_per_frame: int) -> Tensor:
        """Fresh noise brought to the rolling profile by the initial phase."""
        s, w = fc.sample, fc.forecast.horizon
        window = super().start_window(fc, denoiser, run, gens, history, steps_per_frame)
        init = sigmas_rolling(w, steps_per_frame * w, s.sigma_min, s.sigma_max, s.rho, init=True)
        return run(denoiser, window, per_frame(init, fc.channels, history))

    @classmethod
    def schedule(cls, fc: Forecaster, steps_per_frame: int, solver: str, like: Tensor):
        s = fc.sample
        sigmas = sigmas_rolling(fc.forecast.horizon, steps_per_frame, s.sigma_min, s.sigma_max, s.rho)
        return per_frame(sigmas, fc.channels, like), get_solver(solver)

    @classmethod
    def next_window(cls, fc: Forecaster, rest: Tensor, gens, history: Tensor) -> Optional[Tensor]:
        """The frames still in the window, then one fresh frame at sigma_max."""
        return torch.cat([rest, fresh_noise(fc, gens, fc.channels, history)], dim=1)


def per_frame(sigmas: Tensor, channels: int, like: Tensor) -> Tensor:
    """(n+1, W) per-frame levels -> (n+1, 1, W·C, 1, ...) rows broadcastable to a folded window shaped like ``like``.

    The rows stay on the host: the solver validates them there and moves them to ``like``'s device once per
    schedule (:func:`funcdiff.sampling.sample_heun` with a per-element schedule), so a rollout's steps copy nothing
    from the host."""
    rows = sigmas.repeat_interleave(channels, dim=1)
    return rows.reshape(*rows.shape, *[1] * (like.ndim - 2)).unsqueeze(1)


__all__ = ["RollingKind", "per_frame"]
