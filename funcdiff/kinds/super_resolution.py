"""Zero-shot super-resolution in the wavelet domain (WDNO, Hu, Wang et al., ICLR 2025, Sec. "super-resolution"):
the kind ``forecast.kind: super_resolution``: its coder, training items, noise, loss and loading.

One level of an orthogonal wavelet transform (``transform.levels`` must be 1) over the trajectory's axes maps a
fine field (C, *F) to 2^D coefficient channels on the half grid F/2 (D transformed axes): the approximation and
2^D - 1 detail bands (:class:`~funcdiff.transforms.WaveletTransform`, channel 0 of each physical channel is the
approximation). The model is a conditional diffusion of the *details given the approximation*, where the
approximation is taken from the samples of the half grid exactly as it will be at application (below)::

    item = [ approximation from samples (C, *F/2) (clean conditioning) ,
             correction (C, *F/2), details (C·(2^D - 1), *F/2) (diffused) ]

normalised per subband with statistics fitted on the training split. The correction channel is the true
approximation minus the one from samples (zero for a smooth field up to O(h^4) with coif1, non-zero at shocks,
where the filter's average and the sample differ); with it the pair round-trips exactly and the model is trained
on the same conditioning it is applied with. (A first version conditioned on the true approximation and
diffused the details only; it did no better in ``benchmarks/wavelet.py``.)

``transform.residual: true`` diffuses instead the one-level coefficients of the change from interpolation
(spectral in space, linear in time) of the half-grid samples, conditioned on those samples (data-normalised)::

    item = [ samples (C, *F/2) ,  W(fine - interpolate(samples)) (C·K, *F/2), normalised per subband ]

so a zero state is the interpolation and the model learns what interpolation misses (Gibbs ripples and smeared
fronts at shocks). Both layouts round-trip exactly. Being a neural operator, the denoiser
applies on any grid: given a trajectory on the grid G, its samples are the approximation of the unknown field on
2G (below), the model generates that field's details, and the exact inverse transform gives the field on 2G; a
second application gives 4G (:mod:`funcdiff.tasks.super_resolution`).

**Samples as approximation coefficients (orthonormal scaling).** For an orthonormal filter h (sum h = √2) and a
smooth field, one level gives a_k = Σ_n h_n x_{2k+n} ≈ √2 · x(2k + c) along each axis, so over D axes the
approximation is √2^D times the samples of the half grid, displaced by c fine cells (c = the filter's centre in
PyWavelets' periodised convention). Coiflets are built so that the scaling function has vanishing moments:
coif1 has c = 0 and a_k/√2 = x(2k) up to O(h^4) (measured: 5.9e-5 for sin(6πt) + 0.5 cos(10πt) at 256 points),
so ``coif1`` is the default; db4 has c = -2 (one whole coarse cell: handled by a roll of the coarse samples), db2
c = -0.37 and haar c = 0.5 (not whole cells: rejected with a UserError, since coarse samples cannot be placed on
the approximation grid). :func:`approximation_shift` measures c from the transform itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from funcdiff.config import RunConfig
from funcdiff.data import FieldDataset
from funcdiff.errors import UserError
from funcdiff.kinds.autoregressive import window_sets
from funcdiff.kinds.base import ModelKind, encoded
from funcdiff.noise import GaussianRandomField
from funcdiff.sampling import get_solver, sigmas_karras
from funcdiff.schedules import RHO, SIGMA_MAX, SIGMA_MIN
from funcdiff.transforms import TIME_AXIS, WaveletTransform, build_transform, transform_from_state_dict

SHIFT_TOLERANCE = 0.05  # fine cells: how close the filter's centre must be to a whole number of coarse cells


def approximation_shift(wavelet: str, n: int = 256) -> float:
    """The displacement c (in fine cells) of one level's approximation against the samples: a_k ≈ √2 x(2k + c).

    Measured on the periodised transform of the lowest Fourier mode on ``n`` points (its phase). Returns c in
    (-n/2, n/2].
    """
    t = torch.arange(n, dtype=torch.float64) / n
    transform = WaveletTransform(wavelet, levels=1, axes=("x",))
    wave = torch.stack([torch.cos(2 * math.pi * t), torch.sin(2 * math.pi * t)])[None]  # (1, 2, n)
    approx = transform.raw_forward(wave)[0, :, 0]  # (2, n/2)
    k = torch.arange(n // 2, dtype=torch.float64)
    phase = torch.atan2(approx[1], approx[0]) - 2 * math.pi * 2 * k / n  # = 2π c / n per coefficient
    mean_phase = torch.atan2(torch.sin(phase).mean(), torch.cos(phase).mean())
    return float(mean_phase) * n / (2 * math.pi)


def coarse_roll(wavelet: str) -> int:
    """Coarse cells by which samples move onto the approximation grid (a_k ↔ coarse sample k + roll);
    UserError unless the filter's centre is a whole number of coarse cells (an even number of fine cells)."""
    c = approximation_shift(wavelet)
    roll = round(c / 2)
    if abs(c - 2 * roll) > SHIFT_TOLERANCE:
        raise UserError(f"wavelet {wavelet!r}: its approximation sits {c:.2f} fine cells from the samples, not a "
                        "whole number of coarse cells, so a coarse trajectory cannot serve as its approximation; "
                        "use coif1 (centre 0) or db4 (one coarse cell)")
    return roll


def levels_of_factor(factor: int) -> int:
    """log2 of a refinement factor; UserError unless it is a power of 2 (>= 2)."""
    levels = int(round(math.log2(factor))) if factor >= 1 else -1
    if factor < 2 or (1 << levels) != factor:
        raise UserError(f"the super-resolution factor must be a power of 2 (2, 4, 8, ...), got {factor}")
    return levels


def upsample_time_coordinate(times: Tensor, factor: int) -> Tensor:
    """Times of the refined frames: fine frame j at t_0 + j·dt/factor (dt the input's spacing). Shapes: (T,) ->
    (factor·T,)."""
    times = times.double()
    dt = float(times[1] - times[0]) if times.numel() > 1 else 1.0
    return times[0] + torch.arange(factor * times.numel(), dtype=torch.float64) * dt / factor


# ------------------------------------------------------------------------------------------ interpolation
def _spectral_axis(x: Tensor, dim: int, factor: int) -> Tensor:
    """Fourier (band-limited, periodic) interpolation along ``dim``: n -> factor·n samples, the coarse samples
    kept exactly (the Nyquist coefficient split evenly between ±k)."""
    n = x.shape[dim]
    spec = torch.fft.rfft(x.double(), dim=dim)
    if n % 2 == 0:
        idx = [slice(None)] * x.ndim
        idx[dim] = slice(n // 2, n // 2 + 1)
        spec[tuple(idx)] = spec[tuple(idx)] / 2
    m = factor * n
    spec = torch.nn.functional.pad(spec.movedim(dim, -1), [0, m // 2 + 1 - spec.shape[dim]]).movedim(-1, dim)
    return (torch.fft.irfft(spec, n=m, dim=dim) * factor).to(x.dtype)


def _linear_axis(x: Tensor, dim: int, factor: int, periodic: bool) -> Tensor:
    """Linear interpolation along ``dim``: fine j at coarse position j / factor (periodic wrap, or the last
    coarse sample held beyond the end)."""
    n = x.shape[dim]
    pos = torch.arange(factor * n, dtype=torch.float64) / factor
    lo = pos.floor().long()
    w = (pos - lo).to(x.dtype)
    hi = (lo + 1) % n if periodic else (lo + 1).clamp(max=n - 1)
    shape = [1] * x.ndim
    shape[dim] = -1
    return x.index_select(dim, lo) * (1 - w.reshape(shape)) + x.index_select(dim, hi) * w.reshape(shape)


def interpolate(coarse: Tensor, factor: int, *, time_axis: bool, method: str = "spectral",
                refine_time: bool = True) -> Tensor:
    """Baseline refinement of (B, C, [T,] *S) by ``factor`` along every axis after (B, C) (with ``time_axis`` and
    not ``refine_time``: the spatial axes only): ``spectral`` (Fourier interpolation on the periodic space, linear
    in time) or ``linear`` (linear in every axis, periodic in space). The coarse samples are kept at fine index
    factor·k, as in :func:`funcdiff.tasks.super_resolution.super_resolve`."""
    levels_of_factor(factor)
    if method not in ("spectral", "linear"):
        raise UserError(f"unknown interpolation {method!r}; valid: spectral, linear")
    x = coarse
    for dim in range(2, coarse.ndim):
        is_time = time_axis and dim == 2
        if is_time and not refine_time:
            continue
        if method == "spectral" and not is_time:
            x = _spectral_axis(x, dim, factor)
        else:
            x = _linear_axis(x, dim, factor, periodic=not is_time)
    return x


class SuperResolutionCoder:
    """Fine fields (N, C, *F) <-> [approximation from samples | correction, details] on the half grid.

    ``transform``: a one-level orthogonal :class:`~funcdiff.transforms.WaveletTransform` over D axes (fitted
    statistics normalise each subband). Shapes: ``encode`` (N, C, *F) -> (N, C + C·K, *F/2) with K = 2^D,
    conditioning first; ``decode(cond, state)`` -> (N, C, *F); ``condition(coarse)`` (N, C, *G) -> (N, C, *G).
    """

    def __init__(self, transform: WaveletTransform, channels: int, residual: bool = False) -> None:
        if not isinstance(transform, WaveletTransform) or transform.levels != 1:
            raise UserError("super-resolution needs transform.kind: wavelet with transform.levels: 1 (one "
                            "application = one level = 2x per axis; apply it repeatedly for 4x)")
        if not transform.orthogonal or transform.time_boundary != "periodization":
            raise UserError("super-resolution needs an orthogonal wavelet (coif1, db4) with time_boundary: "
                            "periodization, where the approximation is √2^D times the coarse samples")
        self.transform, self.channels = transform, int(channels)
        self.roll = coarse_roll(transform.wavelet)
        self.correction_stats: dict | None = None
        self.residual = bool(residual)

    @classmethod
    def from_config(cls, config: RunConfig) -> "SuperResolutionCoder":
        t, d = config.transform, config.data.dim
        axes = tuple(t.axes)
        valid = (tuple(("x", "y", "z")[:d]), (TIME_AXIS, *("x", "y", "z")[:d]))
        if t.kind != "wavelet" or axes not in valid:
            raise UserError(f"forecast.kind=super_resolution needs transform.kind: wavelet with axes "
                            f"{list(valid[1])} (space and time) or {list(valid[0])} (space only); got "
                            f"kind={t.kind}, axes={list(axes)}")
        return cls(build_transform(**t.options()), len(config.data.channels), residual=t.residual)

    # --------------------------------------------------------------------------------- layout
    @property
    def dims(self) -> int:
        return len(self.transform.axes)

    @property
    def bands(self) -> int:
        """K = 2^D coefficients per physical channel (1 approximation + K - 1 details)."""
        return self.transform.coefficients_per_channel()

    @property
    def state_channels(self) -> int:
        """C·K: the approximation correction and the K - 1 detail bands of every channel."""
        return self.channels * self.bands

    @property
    def cond_channels(self) -> int:
        return self.channels

    @property
    def time_axis(self) -> bool:
        return self.transform.axes[0] == TIME_AXIS

    def items_from_windows(self, windows: Tensor, horizon: int) -> Tensor:
        """Fine fields of training windows (N, C, L, *S): the last ``horizon`` frames as one space-time field
        (N, C, horizon, *S), or every frame as its own spatial field (N·L, C, *S) for a space-only transform."""
        if self.time_axis:
            return windows[:, :, -horizon:]
        return windows.transpose(1, 2).flatten(0, 1)

    def check_grid(self, sizes: Sequence[int]) -> None:
        if len(sizes) != self.dims or any(int(n) % 2 for n in sizes):
            raise UserError(f"super-resolution pairs need a fine grid of {self.dims} even axes "
                            f"({list(self.transform.axes)}); got {tuple(sizes)}")

    # --------------------------------------------------------------------------------- maps
    def fit(self, fine: Tensor) -> None:
        """Per-subband statistics of fine training fields (N, C, *F), then those of the approximation correction
        (mean and std per channel, in normalised approximation units)."""
        self.check_grid(fine.shape[2:])
        if self.residual:
            self.transform.fit(fine.double() - self.base(self.subsample(fine.double())))
            return
        self.transform.fit(fine.double())
        self.correction_stats = None
        corr = self._correction(fine.double())  # (N, C, *F/2)
        mean = corr.transpose(0, 1).flatten(1).mean(1)
        std = corr.transpose(0, 1).flatten(1).std(1, correction=0)
        std = torch.where(std < 1e-8, torch.ones_like(std), std)
        self.correction_stats = {"mean": mean.tolist(), "std": std.tolist()}

    @staticmethod
    def subsample(fine: Tensor) -> Tensor:
        """The half-grid samples of a fine field: every other point along every axis after (N, C)."""
        return fine[(..., *[slice(None, None, 2)] * (fine.ndim - 2))]

    def base(self, coarse: Tensor) -> Tensor:
        """``residual``: the interpolation the state is the change from (spectral in space, linear in time),
        (N, C, *G) -> (N, C, *2G)."""
        return interpolate(coarse, 2, time_axis=self.time_axis)

    def _correction(self, fine: Tensor) -> Tensor:
        """True normalised approximation minus the one from the half-grid samples. Shapes: (N, C, *F) ->
        (N, C, *F/2)."""
        approx = self._split(self.transform.forward(fine))[0]
        return approx - self.condition(self.subsample(fine))

    def _corr_view(self, key: str, like: Tensor) -> Tensor:
        stats = self.correction_stats
        value = [0.0 if key == "mean" else 1.0] * self.channels if stats is None else stats[key]
        return torch.tensor(value, dtype=like.dtype, device=like.device).reshape(1, -1, *[1] * (like.ndim - 2))

    def _split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        k = self.bands
        z = z.reshape(z.shape[0], self.channels, k, *z.shape[2:])
        return z[:, :, 0], z[:, :, 1:].flatten(1, 2)

    def encode(self, fine: Tensor) -> Tensor:
        """Training items (N, C, *F) -> (N, C + C·K, *F/2): the conditioning (:meth:`condition` of the half-grid
        samples), then the state: the normalised approximation correction and the normalised details."""
        self.check_grid(fine.shape[2:])
        if self.residual:
            coarse = self.subsample(fine)
            return torch.cat([coarse, self.transform.forward(fine - self.base(coarse))], dim=1)
        approx, details = self._split(self.transform.forward(fine))
        cond = self.condition(self.subsample(fine))
        corr = (approx - cond - self._corr_view("mean", cond)) / self._corr_view("std", cond)
        return torch.cat([cond, corr, details], dim=1)

    def decode(self, cond: Tensor, state: Tensor) -> Tensor:
        """Conditioning (N, C, *G) and state (N, C·K, *G) (correction, then details) -> the fine field
        (N, C, *2G), exactly undoing :meth:`encode`."""
        n, k, c = cond.shape[0], self.bands, self.channels
        if self.residual:
            return self.base(cond) + self.transform.inverse(state)
        approx = cond + state[:, :c] * self._corr_view("std", cond) + self._corr_view("mean", cond)
        details = state[:, c:].reshape(n, c, k - 1, *state.shape[2:])
        return self.transform.inverse(torch.cat([approx.unsqueeze(2), details], dim=2).flatten(1, 2))

    def approximation_scale(self) -> float:
        """√2^D: the approximation of an orthonormal one-level transform over D axes per unit sample value."""
        return math.sqrt(2.0) ** self.dims

    def condition(self, coarse: Tensor) -> Tensor:
        """Coarse samples (N, C, *G) (data-normalised units) -> the normalised approximation of the field on 2G:
        √2^D · samples moved by the filter's centre (:func:`coarse_roll`), then the fitted band statistics."""
        self.check_grid([2 * n for n in coarse.shape[2:]])
        if self.residual:
            return coarse
        approx = self.approximation_scale() * coarse
        if self.roll:
            approx = torch.roll(approx, shifts=[-self.roll] * self.dims, dims=list(range(2, coarse.ndim)))
        stats = self.transform.stats
        if stats is None:
            return approx
        mean = torch.tensor([m[0] for m in stats.mean], dtype=coarse.dtype, device=coarse.device)
        std = torch.tensor([s[0] for s in stats.std], dtype=coarse.dtype, device=coarse.device)
        shape = (1, self.channels, *[1] * self.dims)
        return (approx - mean.reshape(shape)) / std.reshape(shape)

    # --------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"transform": self.transform.state_dict(), "channels": self.channels,
                "correction": self.correction_stats, "residual": self.residual}

    @classmethod
    def from_state_dict(cls, state: dict) -> "SuperResolutionCoder":
        coder = cls(transform_from_state_dict(state["transform"]), int(state["channels"]),
                    residual=bool(state.get("residual", False)))
        coder.correction_stats = state.get("correction")
        return coder


@dataclass
class SuperResolver:
    """A loaded super-resolution model: ``denoiser(details, sigma, cond=approximation)`` in normalised
    coefficients, the ``coder``, the data ``normalizer`` (physical <-> normalised; None = identity), the detail
    noise, the Fourier modes of the backbone per axis and the checkpoint's sigma range."""

    denoiser: nn.Module
    coder: SuperResolutionCoder
    normalizer: object = None
    noise: GaussianRandomField = None
    n_modes: tuple[int, ...] = ()
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX
    rho: float = RHO
    channel_names: tuple[str, ...] = ("u",)

    def __post_init__(self) -> None:
        if self.noise is None:
            self.noise = GaussianRandomField(dim=self.coder.dims, smoothness=0.0)

    def encode(self, x: Tensor) -> Tensor:
        return x if self.normalizer is None else self.normalizer.encode(x).to(x.dtype)

    def decode(self, x: Tensor) -> Tensor:
        return x if self.normalizer is None else self.normalizer.decode(x).to(x.dtype)



# ------------------------------------------------------------------------------------------ the sampling step
@torch.no_grad()
def refine_once(sr: SuperResolver, coarse: Tensor, *, steps: int = 16, solver: str = "heun",
                generator: Optional[torch.Generator] = None, batch_size: int = 16) -> Tensor:
    """One level: normalised fields (B, C, *G) -> normalised fields (B, C, *2G), sampling the state (details and
    approximation correction, or the residual from interpolation) with ``steps`` Karras steps of ``solver``
    (NFE = 2·steps - 1 for Heun) conditioned on the samples ``coarse``."""
    grid = tuple(coarse.shape[2:])
    if sr.n_modes and any(n <= m for n, m in zip(grid, sr.n_modes)):
        raise UserError(f"the grid {grid} is too coarse for the model: it needs more than {sr.n_modes} points per "
                        "axis (its Fourier modes)")
    cond = sr.coder.condition(coarse)
    return sr.coder.decode(cond, sample_state(sr, cond, steps=steps, solver=solver, generator=generator,
                                              batch_size=batch_size))


@torch.no_grad()
def sample_state(sr: SuperResolver, cond: Tensor, *, steps: int = 16, solver: str = "heun",
                 generator: Optional[torch.Generator] = None, batch_size: int = 16) -> Tensor:
    """The diffused state (approximation correction and details, normalised) given the conditioning ``cond``
    (B, C, *G): white noise × sigma_max, ``steps`` Karras steps of ``solver``. Shapes: -> (B, C·K, *G)."""
    b, grid = cond.shape[0], tuple(cond.shape[2:])
    noise = sr.noise.sample((b, sr.coder.state_channels, *grid), generator=generator, dtype=cond.dtype)
    sigmas = sigmas_karras(steps, sr.sigma_min, sr.sigma_max, sr.rho).to(cond.device)
    out = []
    for start in range(0, b, batch_size):
        part = slice(start, start + batch_size)
        c = cond[part]

        def denoiser(z: Tensor, sigma: Tensor, c=c) -> Tensor:
            return sr.denoiser(z, sigma, cond=c)

        out.append(get_solver(solver)(denoiser, sr.sigma_max * noise[part].to(cond.device), sigmas))
    return torch.cat(out)


class SuperResolutionKind(ModelKind):
    """One wavelet level's details given the half-grid samples (module docstring); trained on the last ``horizon``
    frames of trajectory windows; its sampling step is :func:`refine_once` (one level), repeated by ``funcdiff
    upsample`` (:func:`funcdiff.tasks.super_resolution.super_resolve`)."""

    several_grids = False  # its items are pairs of two grids already

    name = "super_resolution"
    role = "super_resolution"
    refusals = {"field": "checkpoint {checkpoint} is a super-resolution model; it refines a given trajectory: use "
                         "`funcdiff upsample --checkpoint ... --input FILE`",
                "forecaster": "checkpoint {checkpoint} is a super-resolution model, not a forecaster: apply it to a "
                              "trajectory with `funcdiff upsample`"}

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.coder: Optional[SuperResolutionCoder] = None

    def model_config(self, num_channels: int) -> dict:
        """The approximation correction and details of every channel (C·K), the samples (C) as conditioning."""
        c, k = int(num_channels), self.config.transform.coefficients_per_channel()
        return {**self.config.model, "in_channels": c * k, "out_channels": c * k, "cond_channels": c}

    def datasets(self, fields: Optional[Tensor] = None) -> tuple[FieldDataset, FieldDataset]:
        return window_sets(self.config, fields)

    def fit(self, train_set: FieldDataset) -> None:
        """The coder's band and correction statistics from the normalised training windows."""
        x = encoded(train_set)
        self.coder = SuperResolutionCoder.from_config(self.config)
        self.coder.fit(self.coder.items_from_windows(x, self.config.forecast.horizon))

    def items(self, dataset: FieldDataset, device: torch.device) -> Tensor:
        x = encoded(dataset, device)
        return self.coder.encode(self.coder.items_from_windows(x, self.config.forecast.horizon))

    def noise(self) -> GaussianRandomField:
        """White noise on the normalised coefficients."""
        return GaussianRandomField(dim=self.coder.dims, smoothness=0.0)

    def cond_channels(self) -> int:
        return self.coder.cond_channels

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"super_resolution": self.coder.state_dict()}

    @classmethod
    def load(cls, denoiser, meta, config, device="cpu") -> SuperResolver:
        if "super_resolution" not in meta.extra:
            raise UserError(cls.refusal(meta.path, "super_resolution"))
        coder = SuperResolutionCoder.from_state_dict(meta.extra["super_resolution"])
        s = config.sample
        return SuperResolver(denoiser=denoiser, coder=coder, normalizer=meta.normalizer, noise=meta.noise,
                             n_modes=tuple(int(m) for m in meta.model_config.get("n_modes", ())),
                             sigma_min=s.sigma_min, sigma_max=s.sigma_max, rho=s.rho,
                             channel_names=tuple(meta.channel_names))


__all__ = ["SuperResolutionCoder", "SuperResolutionKind", "SuperResolver", "approximation_shift", "coarse_roll",
           "interpolate", "levels_of_factor", "refine_once", "sample_state", "upsample_time_coordinate"]
