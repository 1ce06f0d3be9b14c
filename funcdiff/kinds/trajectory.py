"""Whole-trajectory diffusion through a transform (WDNO: Hu, Wang et al., "Wavelet Diffusion Neural Operator",
ICLR 2025): the kind ``forecast.kind: trajectory``: its coder, noise, training items, loss, loading and forecast step.

A training item is a window of ``1 + T`` normalised frames ``(C, 1 + T, *S)`` (:mod:`funcdiff.data.windows`):
frame 0 is the initial state, frames 1..T the trajectory that is diffused as one space-time field. The
:class:`TrajectoryCoder` maps a window to one tensor on the coefficient grid, conditioning channels first (the
layout :class:`~funcdiff.training.EDMLoss` ``cond_channels`` expects)::

    item = [ condition(frame 0) (C·K_s, T', *S') ,  transform(frames 1..T) (C·K, T', *S') ]

with the wavelet transform over (time, *space) of :mod:`funcdiff.transforms` (K = 2^((1+d)·L) coefficients per
channel on the coarse grid T' = T/2^L, S' = S/2^L), or the identity (then K = K_s = 1 and the backbone sees the
physical (T, *S) grid: the physical-space baseline with the same backbone). The loss, the preconditioner, the
solvers and the noise object's interface are the shared ones; only the noise's *covariance* in coefficient space
is chosen here (:class:`CoefficientNoise`).

**Conditioning layout (choice).** The initial state enters as its *spatial-only* wavelet transform with the same
family and levels (C·2^(d·L) channels on S'), repeated along the coarse time axis T'. The alternative, the
space-time transform of frame 0 broadcast over the T frames, carries the same information, but for a constant-in-
time signal every time-detail band is zero (the wavelet's vanishing moment), so 2^(d·L)·(2^L - 1) of its
channels would be identically zero; the spatial transform is exactly its non-zero part (up to the factor 2^(L/2)
of the time approximation, absorbed by the per-subband normalisation, which is fitted on the training initial
states). Every coarse-grid point thus sees the initial state's coefficients at its own spatial location.

**Forcing.** With ``forecast.forcing`` (the last F data channels hold a time-independent forcing, e.g. ``f`` of
``burgers_shock_forced``), those channels of the initial frame are conditioning channels laid out exactly like the
initial state (the same spatial transform, per-channel statistics), and they are never diffused: the state has
(C - F)·K channels, and decoding appends the forcing of the initial frame to every generated frame (it is constant
in time), so the forecasting code downstream sees all C channels per frame. Without ``forecast.forcing`` (F = 0)
every map below is the one it was.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from funcdiff.config import RunConfig
from funcdiff.data import FieldDataset
from funcdiff.data.windows import fold_frames, frame_channels
from funcdiff.errors import UserError
from funcdiff.guidance.terms import GuidanceTerm, as_term
from funcdiff.kinds.autoregressive import AutoregressiveKind
from funcdiff.kinds.base import Forecaster, ModelKind, RolloutState, encoded, forecaster_from_meta
from funcdiff.noise import GaussianRandomField, Generators
from funcdiff.sampling import get_solver, sigmas_karras
from funcdiff.transforms import (TIME_AXIS, IdentityTransform, WaveletTransform, build_transform,
                                 transform_from_state_dict)
from funcdiff.utils import to_device

Transform = IdentityTransform | WaveletTransform


class CoefficientNoise:
    """Noise of the diffusion in the transform's coefficient space, with the interface of
    :class:`~funcdiff.noise.GaussianRandomField` (``sample``, ``apply_cov_power``, ``dim``, ``as_dict``).

    ``mapped=False``: ``base`` is used as it is on the coefficient grid (``transform.noise: white``: i.i.d. unit
    noise on the normalised coefficients, which in physical space is noise with the data's per-subband energy).
    ``mapped=True``: ``base`` is a field on the *physical* space-time grid, mapped through the transform's
    linear part (:meth:`WaveletTransform.linear_forward`: raw coefficients over the band std), i.e. the
    function-space GRF expressed in normalised coefficients; its covariance is D W C Wᵀ D (D = diag(1/std)).

    Shapes: ``sample((B, C·K, *coarse))`` -> the same shape.
    """

    def __init__(self, base: GaussianRandomField, transform: Transform, mapped: bool) -> None:
        self.base, self.transform, self.mapped = base, transform, bool(mapped)

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def is_white(self) -> bool:
        return not self.mapped and self.base.is_white

    def _physical_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        k = self.transform.coefficients_per_channel()
        levels = self.transform.levels
        return (int(shape[0]), int(shape[1]) // k, *[int(n) << levels for n in shape[2:]])

    def sample(self, shape: Sequence[int], generator: Generators = None, device=None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """Noise shaped ``shape`` (coefficient layout); one generator or one per sample, as the GRF."""
        if not self.mapped:
            return self.base.sample(shape, generator=generator, device=device, dtype=dtype)
        eps = self.base.sample(self._physical_shape(shape), generator=generator, device=device, dtype=dtype)
        return self.transform.linear_forward(eps)

    def apply_cov_power(self, x: Tensor, power: float) -> Tensor:
        """C^power of the coefficient-space covariance; any power for ``mapped=False``, power 1 otherwise
        (D W C Wᵀ D x, the only power gradient guidance uses). Shapes: x (B, C·K, *coarse) -> same."""
        if not self.mapped:
            return self.base.apply_cov_power(x, power)
        if power != 1:
            raise UserError(f"the mapped coefficient noise offers the covariance itself (power 1), not power {power}")
        t = self.transform
        return t.linear_forward(self.base.apply_cov_power(t.linear_adjoint(x), 1.0))

    def as_dict(self) -> dict:
        """The base field's description (stored as the checkpoint's ``noise``; the mapping is rebuilt from the
        transform stored beside it)."""
        return self.base.as_dict()


class TrajectoryCoder:
    """Normalised windows ``(N, C, 1 + T, *S)`` <-> training items on the coefficient grid (module docstring).

    ``transform`` acts on (B, C, T, *S) over axes (time, *space); ``cond_transform`` on the initial frame
    (B, C, *S) over the spatial axes (identity when ``transform`` is).
    """

    def __init__(self, transform: Transform, cond_transform: Transform, channels: int, residual: bool = False,
                 forcing: int = 0) -> None:
        self.transform, self.cond_transform, self.channels = transform, cond_transform, int(channels)
        self.residual, self.forcing = bool(residual), int(forcing)
        if not 0 <= self.forcing < self.channels:
            raise UserError(f"{self.forcing} forcing channel(s) of {self.channels}: at least one channel must be "
                            "diffused")

    @property
    def diffused(self) -> int:
        """Physical channels that are diffused (the first ``channels - forcing``)."""
        return self.channels - self.forcing

    @classmethod
    def from_config(cls, config: RunConfig) -> "TrajectoryCoder":
        """The (unfitted) coder of a ``forecast.kind: trajectory`` config; UserError for a transform whose axes do
        not name (time, *space) of ``data.dim`` spatial axes."""
        t, d = config.transform, config.data.dim
        forcing = len(config.forecast.forcing)
        if t.kind == "identity":
            return cls(IdentityTransform(), IdentityTransform(), len(config.data.channels), t.residual, forcing)
        axes = tuple(t.axes)
        if len(axes) != 1 + d or axes[0] != TIME_AXIS:
            raise UserError(f"transform.axes {list(axes)}: a trajectory model transforms (time, space...) with "
                            f"data.dim={d} spatial axes, e.g. {[TIME_AXIS, *('x', 'y', 'z')[:d]]}")
        options = t.options()
        transform = build_transform(**options)
        cond = build_transform(**{**options, "axes": list(axes[1:])})
        return cls(transform, cond, len(config.data.channels), t.residual, forcing)

    # ------------------------------------------------------------------------------------------ layout
    @property
    def levels(self) -> int:
        return int(self.transform.levels)

    @property
    def state_channels(self) -> int:
        return self.diffused * self.transform.coefficients_per_channel()

    @property
    def cond_channels(self) -> int:
        return self.channels * self.cond_transform.coefficients_per_channel()

    def coarse_grid(self, frames: int, spatial: Sequence[int]) -> tuple[int, ...]:
        """The coefficient grid (T', *S') of ``frames`` frames on the ``spatial`` grid."""
        self.check_grid(frames, spatial)
        return tuple(int(n) >> self.levels for n in (frames, *spatial))

    def check_grid(self, frames: int, spatial: Sequence[int]) -> None:
        """UserError unless every axis of (frames, *spatial) is divisible by 2^levels."""
        f = 1 << self.levels
        sizes = (int(frames), *[int(n) for n in spatial])
        if any(n % f for n in sizes):
            raise UserError(f"a wavelet transform with {self.levels} level(s) needs every axis of (frames, space) = "
                            f"{sizes} divisible by {f}; change forecast.horizon, the grid or transform.levels")

    # ------------------------------------------------------------------------------------------ maps
    def fit(self, windows: Tensor) -> None:
        """Per-subband statistics of the trajectories (frames 1..T, diffused channels) and of the initial frames
        (all channels, forcing included) of ``windows``."""
        self.check_grid(windows.shape[2] - 1, windows.shape[3:])
        self.transform.fit(self._state(windows[:, :, 1:], windows[:, :, 0]).double())
        self.cond_transform.fit(windows[:, :, 0].double())

    def condition(self, initial: Tensor, frames: int) -> Tensor:
        """Conditioning channels of initial states: (B, C, *S) -> (B, C·K_s, T', *S') (module docstring)."""
        coarse_t = int(frames) >> self.levels
        cond = self.cond_transform.forward(initial)
        return cond.unsqueeze(2).expand(*cond.shape[:2], coarse_t, *cond.shape[2:]).contiguous()

    def _state(self, trajectory: Tensor, initial: Tensor) -> Tensor:
        """The diffused field: the trajectory's diffused channels, or with ``residual`` their change from the
        initial frame."""
        if self.forcing:
            trajectory, initial = trajectory[:, :self.diffused], initial[:, :self.diffused]
        return trajectory - initial.unsqueeze(2) if self.residual else trajectory

    def encode_state(self, trajectory: Tensor, initial: Tensor) -> Tensor:
        """(B, C, T, *S) frames 1..T and the initial frame (B, C, *S) -> (B, (C - F)·K, T', *S')."""
        self.check_grid(trajectory.shape[2], trajectory.shape[3:])
        return self.transform.forward(self._state(trajectory, initial))

    def decode_state(self, z: Tensor, initial: Tensor) -> Tensor:
        """(B, (C - F)·K, T', *S') and the initial frame (B, C, *S) -> (B, C, T, *S), exactly undoing
        :meth:`encode_state` (the F forcing channels are the initial frame's, repeated over the T frames)."""
        x = self.transform.inverse(z)
        if self.residual:
            x = x + initial[:, :self.diffused].unsqueeze(2)
        if not self.forcing:
            return x
        f = initial[:, self.diffused:].unsqueeze(2)
        return torch.cat([x, f.expand(*f.shape[:2], x.shape[2], *f.shape[3:])], dim=1)

    def encode(self, windows: Tensor) -> Tensor:
        """Training items: (N, C, 1 + T, *S) -> (N, C·K_s + C·K, T', *S'), conditioning first."""
        frames, initial = windows.shape[2] - 1, windows[:, :, 0]
        return torch.cat([self.condition(initial, frames), self.encode_state(windows[:, :, 1:], initial)], dim=1)

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Plain JSON (both transforms with their fitted statistics), stored in the checkpoint's ``extra``."""
        return {"transform": self.transform.state_dict(), "cond_transform": self.cond_transform.state_dict(),
                "channels": self.channels, "residual": self.residual, "forcing": self.forcing}

    @classmethod
    def from_state_dict(cls, state: dict) -> "TrajectoryCoder":
        return cls(transform_from_state_dict(state["transform"]), transform_from_state_dict(state["cond_transform"]),
                   int(state["channels"]), bool(state.get("residual", False)), int(state.get("forcing", 0)))


def trajectory_noise(config: RunConfig, coder: TrajectoryCoder) -> CoefficientNoise:
    """The coefficient-space noise of a trajectory model: the ``noise:`` GRF on the (1 + d)-dimensional space-time
    torus for the identity transform (as every physical-space model uses it), else per ``transform.noise``."""
    n, dim = config.noise, 1 + config.data.dim
    grf = GaussianRandomField(dim=dim, smoothness=n.smoothness, length_scale=n.length_scale, amplitude=n.amplitude)
    if config.transform.kind == "identity":
        return CoefficientNoise(grf, coder.transform, mapped=False)
    if config.transform.noise == "white":
        return CoefficientNoise(GaussianRandomField(dim=dim, smoothness=0.0), coder.transform, mapped=False)
    return CoefficientNoise(grf, coder.transform, mapped=True)


def noise_from_meta(noise: dict, coder: TrajectoryCoder, config: RunConfig) -> CoefficientNoise:
    """Rebuild :func:`trajectory_noise` from a checkpoint's stored base field and coder."""
    base = GaussianRandomField(**noise)
    mapped = config.transform.kind != "identity" and config.transform.noise == "grf"
    return CoefficientNoise(base, coder.transform, mapped=mapped)


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


class TrajectoryKind(AutoregressiveKind):
    """Whole trajectories in one diffusion through ``transform`` (module docstring): the windows of the
    autoregressive kind, mapped to the coefficient grid by a :class:`TrajectoryCoder` fitted on the training split."""

    name = "trajectory"

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.coder: Optional[TrajectoryCoder] = None

    def model_config(self, num_channels: int) -> dict:
        """The space-time block in coefficient space, the initial frame (forcing included) as conditioning."""
        c, t = int(num_channels), self.config.transform
        k, k_cond = t.coefficients_per_channel(), t.coefficients_per_channel(max(len(t.axes) - 1, 0))
        state = c - len(self.config.forecast.forcing)  # forcing channels are conditioning only
        return {**self.config.model, "in_channels": state * k, "out_channels": state * k, "cond_channels": c * k_cond}

    streams = False  # the coder is fitted on every training window at once: the data stay in memory
    several_grids = False  # the coder's subband normalisation is fitted on one grid
    stream_datasets = ModelKind.stream_datasets
    encode_batch = ModelKind.encode_batch

    def fit(self, train_set: FieldDataset) -> None:
        """The coder's statistics from the normalised training windows (N, C, 1 + T, *S)."""
        x = encoded(train_set)
        self.coder = TrajectoryCoder.from_config(self.config)
        self.coder.fit(x)

    def items(self, dataset: FieldDataset, device: torch.device) -> Tensor:
        """Training items on the coefficient grid (:meth:`TrajectoryCoder.encode`)."""
        return self.coder.encode(encoded(dataset, device))

    def noise(self) -> CoefficientNoise:
        return trajectory_noise(self.config, self.coder)

    def cond_channels(self) -> int:
        return self.coder.cond_channels

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"trajectory": self.coder.state_dict()}

    @classmethod
    def load(cls, denoiser, meta, config, device="cpu") -> Forecaster:
        """A :class:`Forecaster` whose denoiser is a :class:`TrajectoryDiffusion`; its ``noise`` is the spatial
        field guidance terms on physical frames use."""
        if "trajectory" not in meta.extra:
            raise UserError(f"checkpoint {meta.path} has forecast.kind=trajectory but no transform state")
        coder = TrajectoryCoder.from_state_dict(meta.extra["trajectory"])
        noise = noise_from_meta(meta.noise.as_dict(), coder, config)
        model = TrajectoryDiffusion(denoiser, coder, noise, tuple(int(m) for m in meta.model_config.get("n_modes", ())))
        base, dim = meta.noise, config.data.dim
        spatial = (GaussianRandomField(dim=dim, smoothness=base.smoothness, length_scale=base.length_scale,
                                       amplitude=base.amplitude)
                   if base.smoothness == 0 or base.smoothness > dim / 2 else GaussianRandomField(dim=dim))
        return forecaster_from_meta(model, meta, config, device, noise=spatial, min_resolution=(),
                                    name=str(meta.task or "trajectory"))

    @classmethod
    def graphed(cls, fc: Forecaster) -> Forecaster:
        """The coefficient-space network inside the :class:`TrajectoryDiffusion` wrapped in a ``GraphedDenoiser``."""
        from funcdiff.models.graphs import GraphedDenoiser

        model: TrajectoryDiffusion = fc.denoiser
        return dataclasses.replace(fc, denoiser=dataclasses.replace(model, denoiser=GraphedDenoiser(model.denoiser)))

    @classmethod
    def step(cls, fc: Forecaster, state: RolloutState, *, steps_per_frame: int, solver: str = "heun",
             terms_for_lead=None) -> tuple[Tensor, Tensor, None]:
        """One whole-trajectory diffusion: (frames folded (M, T·C, *S), new history (M, C, *S), None). The
        history holds the initial frame (normalised); frame k of the block is lead ``emitted + 1 + k``."""
        model: TrajectoryDiffusion = fc.denoiser
        c, frames, s = fc.channels, fc.forecast.horizon, fc.sample
        initial = state.history[:, -c:]
        model.check_grid(frames, tuple(initial.shape[2:]))
        cond = model.coder.condition(initial, frames)
        shape = (initial.shape[0], model.coder.state_channels, *model.coder.coarse_grid(frames, initial.shape[2:]))
        x = s.sigma_max * to_device(model.noise.sample(shape, generator=state.generators, dtype=initial.dtype),
                                    initial.device)

        def denoiser(z: Tensor, sigma: Tensor) -> Tensor:
            return model(z, sigma, cond=cond)

        guided = _guided(fc, model, denoiser, initial, state.emitted, terms_for_lead)
        z = get_solver(solver)(guided, x, sigmas_karras(steps_per_frame * frames, s.sigma_min, s.sigma_max, s.rho))
        out = fold_frames(model.coder.decode_state(z, initial))
        return out, out[:, -c:], None


def _guided(fc: Forecaster, model: TrajectoryDiffusion, denoiser, initial: Tensor, emitted: int, terms_for_lead):
    """``denoiser`` wrapped by guidance for the block's frames that carry sensors (if any)."""
    if terms_for_lead is None:
        return denoiser
    from funcdiff.guidance import GuidedDenoiser
    from funcdiff.guidance.timed import FrameTerm

    c = fc.channels
    terms = [InverseTransformTerm(FrameTerm(term, frame_channels(k, c)), model.coder, initial)
             for k in range(fc.forecast.horizon) for term in terms_for_lead(emitted + 1 + k)]
    if not terms:
        return denoiser
    return GuidedDenoiser(denoiser, terms, model.noise, sigma_data=1.0)


__all__ = ["CoefficientNoise", "InverseTransformTerm", "TrajectoryCoder", "TrajectoryDiffusion", "TrajectoryKind",
           "noise_from_meta", "trajectory_noise"]
