"""Forecaster training pieces: trajectory windows as training items and the per-frame noise of rolling diffusion.

A forecaster is trained by the same :class:`~funcdiff.training.Trainer` and :class:`~funcdiff.training.EDMLoss` as
a field model; only the items (windows of ``history + horizon`` frames, folded frames-major into channels by
:mod:`funcdiff.data.windows`), the conditioning split and, for rolling diffusion, the sigma draw differ. The kinds
of :mod:`funcdiff.kinds` compose these pieces (which kind uses which is theirs to say, not this module's).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from funcdiff.config import ForecastConfig, RunConfig
from funcdiff.data import FieldDataset, load_fields
from funcdiff.data.datasets import SOURCE_ATTRS, _split_indices, split_record, test_count
from funcdiff.data.windows import trajectory_windows
from funcdiff.errors import UserError
from funcdiff.schedules import init_levels, rolling_levels, sigma_from_level
from funcdiff.training.loss import EDMLoss


class RollingSigmas:
    """Per-frame noise levels of a rolling window for training (Ruhe et al. 2024, Sec. 3; ERDM's EDM form).

    Each item draws a global time t ~ U(0, 1] and gets the levels (k + t)/W of :func:`rolling_levels`; a fraction
    ``init_fraction`` of the items instead lies on the initial phase (:func:`init_levels`, all noise -> the
    rolling profile), which the first forecast step needs. Levels map to sigma through the Karras ramp
    (:func:`sigma_from_level`); each frame's sigma is repeated over its ``channels`` folded channels.

    Call: ``(batch, generator) -> sigma (B, W·C)`` (float32, on the generator's device).
    """

    def __init__(self, window: int, channels: int, init_fraction: float, sigma_min: float, sigma_max: float,
                 rho: float) -> None:
        self.window, self.channels, self.init_fraction = int(window), int(channels), float(init_fraction)
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)

    def __call__(self, batch: int, generator: torch.Generator) -> Tensor:
        t = 1.0 - torch.rand(batch, generator=generator, device=generator.device, dtype=torch.float64)  # (0, 1]
        on_init = torch.rand(batch, generator=generator, device=generator.device) < self.init_fraction
        levels = torch.where(on_init[:, None].cpu(), init_levels(self.window, t.cpu()),
                             rolling_levels(self.window, t.cpu()))
        sigma = sigma_from_level(levels, self.sigma_min, self.sigma_max, self.rho)
        return sigma.repeat_interleave(self.channels, dim=1).to(generator.device, torch.float32)


class ConstantSigma:
    """One noise level for every item: at sigma ≫ sigma_data the EDM loss is the squared error of the conditional
    mean (the denoiser sees almost only noise), i.e. MSE training of a deterministic forecaster with the same
    backbone and preconditioner. Call: ``(batch, generator) -> (B,)``."""

    def __init__(self, sigma: float) -> None:
        self.sigma = float(sigma)

    def __call__(self, batch: int, generator: torch.Generator) -> Tensor:
        return torch.full((batch,), self.sigma, device=generator.device)


def forecast_loss(config: RunConfig, noise, channels: int) -> EDMLoss:
    """Deprecated: the loss belongs to the kind, ``funcdiff.kinds.model_kind(config).loss(noise)``."""
    warnings.warn("funcdiff.training.forecast.forecast_loss is deprecated: use "
                  "funcdiff.kinds.model_kind(config).loss(noise)", DeprecationWarning, stacklevel=2)
    from funcdiff.kinds import model_kind

    return model_kind(config).loss(noise)


def load_trajectories(config: RunConfig) -> tuple[Tensor, dict]:
    """The trajectory fields of ``config.data`` stacked as (N, C, T, *S), and the file's source attributes
    (with the frame spacing ``dt`` of the forecaster: the file's spacing × ``forecast.frame_step``)."""
    d = config.data
    if d.source != "file":
        raise UserError("a forecaster trains on trajectory files: set data.source=file and data.path "
                        "(make one with `funcdiff data generate kolmogorov ...`)")
    data = load_fields(d.path, fields=list(d.channels), max_samples=d.num_samples)
    if data.attrs.get("missing_dates"):  # in memory, windows would run across the gaps (streamed ones stop there)
        raise UserError(f"{d.path}: its time axis has gaps ({len(data.attrs['missing_dates'])} missing dates); "
                        "train a forecaster on it with data.stream=true, whose windows never cross a gap")
    traj = data.stack(d.channels)
    if traj.ndim != 3 + d.dim:
        raise UserError(f"{d.path}: fields {list(d.channels)} have shape {tuple(traj.shape[:1] + traj.shape[2:])}; "
                        f"a forecaster needs trajectories (N, T, *S) with data.dim={d.dim} spatial dims")
    source = {key: data.attrs[key] for key in SOURCE_ATTRS if key in data.attrs}
    source["dt"] = _frame_spacing(data) * config.forecast.frame_step
    return traj, source


def _frame_spacing(data) -> float:
    """Time between consecutive frames of a file: from its ``t`` coordinate, else its ``dt`` attribute, else 1."""
    t = data.coords.get("t")
    if t is None or t.numel() < 2:
        return float(data.attrs.get("dt", 1.0))
    return float(t[1] - t[0])


def window_datasets(traj: Tensor, config: RunConfig, source: dict | None = None
                    ) -> tuple[FieldDataset, FieldDataset]:
    """Train/validation datasets of windows ``(N_w, C, history + horizon, *S)``, split by trajectory (windows of
    one trajectory never straddle the split); the normaliser (per channel, over all frames) is fitted on the
    training windows. Shapes: traj (N, C, T, *S)."""
    fc, d = config.forecast, config.data
    if traj.shape[0] < 2:
        raise UserError(f"a forecaster needs at least 2 trajectories (one held out), got {traj.shape[0]}")
    train_idx, test_idx = trajectory_split(traj.shape[0], config)
    names = tuple(d.channels)
    try:
        train = trajectory_windows(traj[train_idx], fc.window, fc.stride, fc.frame_step)
        test = trajectory_windows(traj[test_idx], fc.window, fc.stride, fc.frame_step)
    except ValueError as err:
        raise UserError(f"forecast.history + forecast.horizon: {err}") from None
    source = {**(source or {}), "split": split_record(test_idx, traj.shape[0], "trajectory")}
    train_set = FieldDataset(train, names, source=source)
    return train_set, FieldDataset(test, names, train_set.normalizer, source=source)


def trajectory_split(num_trajectories: int, config: RunConfig) -> tuple[Tensor, Tensor]:
    """Indices (train, held out) of a forecaster's trajectories: ``data.test_fraction`` of them held out, drawn
    with ``data.seed + 1`` (as :func:`funcdiff.data.train_test_split` splits fields)."""
    n_test = test_count(num_trajectories, config.data.test_fraction)
    return _split_indices(num_trajectories, n_test, torch.Generator().manual_seed(config.data.seed + 1))


def frames_per_step(fc: ForecastConfig) -> int:
    """Deprecated: ``funcdiff.kinds.KINDS[fc.kind].frames_per_step(fc)``."""
    warnings.warn("funcdiff.training.forecast.frames_per_step is deprecated: use "
                  "funcdiff.kinds.KINDS[fc.kind].frames_per_step(fc)", DeprecationWarning, stacklevel=2)
    from funcdiff.kinds import KINDS

    return KINDS[fc.kind].frames_per_step(fc)


def nfe_per_frame(fc: ForecastConfig, steps_per_frame: int, solver: str = "heun") -> float:
    """Deprecated: ``funcdiff.kinds.KINDS[fc.kind].nfe_per_frame(fc, steps_per_frame, solver)``."""
    warnings.warn("funcdiff.training.forecast.nfe_per_frame is deprecated: use "
                  "funcdiff.kinds.KINDS[fc.kind].nfe_per_frame(fc, steps_per_frame, solver)", DeprecationWarning,
                  stacklevel=2)
    from funcdiff.kinds import KINDS

    return KINDS[fc.kind].nfe_per_frame(fc, steps_per_frame, solver)


__all__ = ["ConstantSigma", "RollingSigmas", "forecast_loss", "frames_per_step", "load_trajectories", "nfe_per_frame",
           "trajectory_split", "window_datasets"]
