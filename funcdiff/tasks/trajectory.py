"""Whole trajectories in one diffusion (WDNO, Hu, Wang et al., ICLR 2025): the forecast step of ``forecast.kind:
trajectory``.

A trajectory forecaster is a :class:`~funcdiff.tasks.forecast.Forecaster` whose denoiser is a
:class:`TrajectoryDiffusion`: the EDM denoiser of the coefficient-space state, the
:class:`~funcdiff.training.trajectory.TrajectoryCoder` that maps trajectories to that state and back, and the
coefficient-space noise. One forecast step (:func:`trajectory_step`, called by
:func:`funcdiff.tasks.forecast.rollout_step`) draws noise on the coefficient grid, runs the shared Karras schedule
and solver (``steps_per_frame × horizon`` steps) with the initial frame's conditioning channels, and maps the
result back with the transform's exact inverse: ``horizon`` frames at once. Everything downstream -- ensembles,
resumable netCDF files with time coordinates, pictures, scores, ``funcdiff forecast`` -- is the forecasting code,
unchanged; a forecast longer than ``horizon`` continues from the last emitted frame.

Sensors: an observation term written for a physical frame (B, C, *S) is evaluated on the *inverse transform* of the
denoised coefficients (:class:`InverseTransformTerm`), so the existing :class:`~funcdiff.guidance.GuidedDenoiser`
guides the coefficient state, preconditioned by the coefficient noise's covariance.

Forcing (``forecast.forcing``): the initial frame carries the forcing channels (read from the initial file like
every channel); they condition the diffusion and are emitted unchanged in every frame (``decode_state``).

Units: inside the step everything is normalised (the checkpoint's normaliser, then the per-subband statistics).
Shapes: history (M, C, *S) (one frame); the state (M, C·K, T', *S'); emitted frames folded (M, T·C, *S).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from funcdiff.data.windows import fold_frames, frame_channels
from funcdiff.errors import UserError
from funcdiff.guidance import GuidedDenoiser
from funcdiff.guidance.timed import FrameTerm
from funcdiff.guidance.terms import GuidanceTerm, as_term
from funcdiff.noise import GaussianRandomField
from funcdiff.sampling import get_solver, sigmas_karras
from funcdiff.training.trajectory import CoefficientNoise, TrajectoryCoder, noise_from_meta


@dataclass
class TrajectoryDiffusion:
    """The coefficient-space model of a trajectory forecaster: ``denoiser(z, sigma, cond=)`` (EDM, normalised
    coefficients), ``coder`` (trajectories <-> coefficients, conditioning), ``noise`` (coefficient space)."""

    denoiser: nn.Module
    coder: TrajectoryCoder
    noise: CoefficientNoise
    n_modes: tuple[int, ...] = ()

    def __call__(self, x: Tensor, sigma: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        return self.denoiser(x, sigma, cond=cond)

    def check_grid(self, frames: int, spatial: tuple[int, ...]) -> None:
        """UserError unless ``frames`` frames on ``spatial`` fit the transform and the model's Fourier modes."""
        coarse = self.coder.coarse_grid(frames, spatial)
        if self.n_modes and (len(coarse) != len(self.n_modes) or any(n <= m for n, m in zip(coarse, self.n_modes))):
            raise UserError(f"the coefficient grid {coarse} of {frames} frames on the grid {tuple(spatial)} does not "
                            f"fit the model: it needs more than {self.n_modes} points per axis (time, space...)")


def trajectory_forecaster(denoiser: nn.Module, meta, config, device: str | torch.device = "cpu"):
    """The :class:`~funcdiff.tasks.forecast.Forecaster` of a trajectory checkpoint (``load_forecaster`` calls it)."""
    from funcdiff.tasks.forecast import Forecaster, _grid_kind

    if "trajectory" not in meta.extra:
        raise UserError(f"checkpoint {meta.path} has forecast.kind=trajectory but no transform state")
    coder = TrajectoryCoder.from_state_dict(meta.extra["trajectory"])
    noise = noise_from_meta(meta.noise.as_dict(), coder, config)
    model = TrajectoryDiffusion(denoiser, coder, noise, tuple(int(m) for m in meta.model_config.get("n_modes", ())))
    base = meta.noise
    spatial = GaussianRandomField(dim=config.data.dim, smoothness=base.smoothness, length_scale=base.length_scale,
                                  amplitude=base.amplitude) if base.smoothness == 0 or base.smoothness > config.data.dim / 2 \
        else GaussianRandomField(dim=config.data.dim)
    return Forecaster(denoiser=model, noise=spatial, forecast=config.forecast, channel_names=tuple(meta.channel_names),
                      normalizer=meta.normalizer, sample=config.sample, dt=float(meta.extra.get("dt", 1.0)),
                      grid=str(_grid_kind(meta.extra.get("grid"))), min_resolution=(),
                      sigma_data=meta.model_config.get("sigma_data", 1.0), name=str(meta.task or "trajectory"),
                      device=device)


class InverseTransformTerm(GuidanceTerm):
    """A guidance term on physical frames, evaluated on the inverse transform of the denoised coefficients.

    ``term`` acts on folded physical frames (B, T·C, *S) (e.g. :class:`~funcdiff.guidance.timed.FrameTerm` around
    an observation term); ``coder.decode_state(z, initial)`` maps coefficients (B, C·K, T', *S') to (B, C, T, *S)
    given the initial frames ``initial`` (B, C, *S). The sigma given to ``term`` is the per-sample level of the
    coefficient state (normalised coefficients have unit variance, as the normalised physical fields).
    Call: ``(denoised, sigma) -> (B,)``.
    """

    def __init__(self, term, coder: TrajectoryCoder, initial: Tensor) -> None:
        self.term, self.coder, self.initial = as_term(term), coder, initial

    def __call__(self, denoised: Tensor, sigma: Tensor) -> Tensor:
        frames = fold_frames(self.coder.decode_state(denoised, self.initial))
        sigma = torch.as_tensor(sigma, dtype=denoised.dtype, device=denoised.device)
        per_sample = sigma.reshape(sigma.shape[0], -1)[:, 0] if sigma.ndim else sigma
        return self.term(frames, per_sample)

    def for_batch(self, part: slice) -> "InverseTransformTerm":
        return InverseTransformTerm(self.term.for_batch(part), self.coder, self.initial[part])


def trajectory_step(fc, history: Tensor, gens: list[torch.Generator], emitted: int, steps_per_frame: int,
                    solver: str, terms_for_lead) -> tuple[Tensor, Tensor, None]:
    """One whole-trajectory diffusion for a chunk of members: (frames folded (M, T·C, *S), new history (M, C, *S),
    None). ``history`` holds the initial frame (normalised); frame k of the block is lead ``emitted + 1 + k``."""
    model: TrajectoryDiffusion = fc.denoiser
    c, frames, s = fc.channels, fc.forecast.horizon, fc.sample
    initial = history[:, -c:]
    model.check_grid(frames, tuple(initial.shape[2:]))
    cond = model.coder.condition(initial, frames)
    shape = (initial.shape[0], model.coder.state_channels, *model.coder.coarse_grid(frames, initial.shape[2:]))
    x = s.sigma_max * model.noise.sample(shape, generator=gens, dtype=initial.dtype).to(initial.device)

    def denoiser(z: Tensor, sigma: Tensor) -> Tensor:
        return model(z, sigma, cond=cond)

    guided = _guided(fc, model, denoiser, initial, emitted, terms_for_lead)
    z = get_solver(solver)(guided, x, sigmas_karras(steps_per_frame * frames, s.sigma_min, s.sigma_max, s.rho))
    out = fold_frames(model.coder.decode_state(z, initial))
    return out, out[:, -c:], None


def _guided(fc, model: TrajectoryDiffusion, denoiser, initial: Tensor, emitted: int, terms_for_lead):
    """``denoiser`` wrapped by guidance for the block's frames that carry sensors (if any)."""
    if terms_for_lead is None:
        return denoiser
    c = fc.channels
    terms = [InverseTransformTerm(FrameTerm(term, frame_channels(k, c)), model.coder, initial)
             for k in range(fc.forecast.horizon) for term in terms_for_lead(emitted + 1 + k)]
    if not terms:
        return denoiser
    return GuidedDenoiser(denoiser, terms, model.noise, sigma_data=1.0)


# ------------------------------------------------------------------------------------------ shocks (1-D)
def shock_position(u: Tensor) -> Tensor:
    """Position of the steepest descent of a 1-D periodic field on the grid x_i = i/N (the shock of Burgers'
    equation, where u_x is most negative): the midpoint of the cell with the most negative forward difference.

    Shapes: u (..., N) -> (...), in domain units [0, 1).
    """
    n = u.shape[-1]
    step = torch.roll(u, -1, dims=-1) - u
    return (step.argmin(-1).to(torch.float64) + 0.5) / n


def periodic_distance(a: Tensor, b: Tensor) -> Tensor:
    """Distance on the unit circle between positions in [0, 1). Shapes: broadcastable -> broadcast."""
    d = (a - b).abs() % 1.0
    return torch.minimum(d, 1.0 - d)


def shock_error(pred: Tensor, truth: Tensor) -> Tensor:
    """Mean periodic distance between the shock positions (:func:`shock_position`) of ``pred`` and ``truth``.

    Shapes: pred, truth (..., N) (broadcastable) -> scalar, domain units.
    """
    return periodic_distance(shock_position(pred), shock_position(truth)).mean()


def advected_initial_state(initial: Tensor, times: Tensor) -> Tensor:
    """The baseline of a Burgers trajectory: the initial state carried by its mean velocity, u0(x - ū t) (ū is
    conserved by Burgers' equation on the periodic interval), shifted exactly in Fourier space.

    Shapes: initial (..., N) on x_i = i/N, times (T,) -> (..., T, N).
    """
    n = initial.shape[-1]
    k = torch.fft.rfftfreq(n, d=1.0 / n, dtype=torch.float64)
    mean = initial.double().mean(-1, keepdim=True)  # (..., 1)
    shift = mean.unsqueeze(-1) * times.double().reshape(-1, 1)  # (..., T, 1)
    spectrum = torch.fft.rfft(initial.double(), dim=-1).unsqueeze(-2)  # (..., 1, K)
    moved = torch.fft.irfft(spectrum * torch.exp(-2j * torch.pi * k * shift), n=n, dim=-1)
    return moved.to(initial.dtype)


__all__ = ["InverseTransformTerm", "TrajectoryDiffusion", "advected_initial_state", "periodic_distance",
           "shock_error", "shock_position", "trajectory_forecaster", "trajectory_step"]
