"""Observation likelihood terms for guidance: -log p(y | x_sigma) approximated through the denoised estimate.

A *guidance term* is a callable ``term(denoised, sigma) -> loss`` returning a per-sample negative log-likelihood
(B,) that is differentiable in ``denoised``; :class:`funcdiff.guidance.GuidedDenoiser` differentiates the sum
of its terms with respect to the noisy state x through one denoiser call.

:class:`ObservationGuidance` implements p(y | x_sigma) ≈ N(y; A D(x_sigma), K(sigma)) (DPS, Chung et al.
2023, eq. 11, with the Π-GDM-type covariance of Song et al. 2023, eq. 7) where A is a
:class:`~funcdiff.guidance.observations.SparseObservation` and the covariance of the residual is

    K_c(sigma) = s_c² I + g_c² r²(sigma) A C A^T / a²,        r²(sigma) = σ_e² σ_data² / (σ_e² + σ_data²),

per observed channel c: s_c the measurement-noise std, C the diffusion-noise covariance on the sampling grid
(pointwise variance a²), σ_e = a·sigma the effective noise level, σ_data the data std of the model state and
g_c the gain of the ``decode`` map from model units to the observation's units. The second term models the
denoiser's posterior covariance Cov[x_0 | x_sigma] as r²(sigma)·C/a²: exact when the data covariance is
proportional to C (then guided sampling draws from the exact posterior, see ``tests/test_guidance.py``),
otherwise a resolution-consistent estimate that, unlike plain DPS, keeps the correlations between nearby
sensors (so dense sensors do not over-correct) and stays finite for noise-free observations.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import Tensor

from funcdiff.guidance.covariance import ModelCovariance, per_channel, posterior_variance  # noqa: F401 (re-export)
from funcdiff.guidance.observations import SparseObservation
from funcdiff.guidance.terms import GuidanceTerm, gaussian_nll
from funcdiff.noise import GaussianRandomField
from funcdiff.utils import device_constant, expand_sigma

Decode = Callable[[Tensor], Tensor]
SCALINGS = ("likelihood", "residual")


def sigma_per_sample(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Noise level per sample (B,): ``sigma`` as (B,), scalar, or per element (largest level of each sample)."""
    s = expand_sigma(sigma, x)
    return s.expand(x.shape[0], *s.shape[1:]).flatten(1).amax(dim=1)


def in_chunks(x: Tensor, sigma: Tensor | float, chunk_size: int | None, guided: Callable) -> Tensor:
    """Apply ``guided(x_part, sigma_part, rows)`` over batch chunks of ``chunk_size`` rows and concatenate.

    ``x``: (B, C, *S); ``sigma``: a scalar, or per sample (B,) / broadcastable to ``x`` (split with the rows);
    ``rows`` is the chunk's slice of the batch, for observations that carry per-sample values. Guidance needs a
    graph through the denoiser per chunk, so chunking bounds its memory without changing the result."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    size = chunk_size or x.shape[0]
    per_sample = sigma.ndim > 0 and sigma.shape[0] == x.shape[0] and x.shape[0] > 1
    out = []
    for start in range(0, x.shape[0], size):
        rows = slice(start, start + size)
        out.append(guided(x[rows], sigma[rows] if per_sample else sigma, rows))
    return torch.cat(out)


def decode_gain(decode: Decode | None, like: Tensor) -> Tensor:
    """Per-channel gain g_c of an (affine) decode map, from decode(1) - decode(0), on the host. Shapes: like
    (B, C, *S) -> (C,) float64 on the CPU.

    The map is evaluated on host tensors, so that a step on a GPU does not wait to read the gain back (the decodes of
    funcdiff, :meth:`funcdiff.data.Normalizer.decode`, take tensors on any device); a map bound to ``like``'s device
    is evaluated there instead."""
    if decode is None:
        return torch.ones(like.shape[1], dtype=torch.float64)
    with torch.no_grad():
        ones = torch.ones((1, *like.shape[1:]), dtype=torch.float64)
        try:
            gain = decode(ones) - decode(torch.zeros_like(ones))
        except RuntimeError:  # a map holding tensors on like's device (a user's decode)
            ones = ones.to(like.device)
            gain = decode(ones) - decode(torch.zeros_like(ones))
    return gain.flatten(2).mean(2)[0].to("cpu", torch.float64)


def observation_covariance(observation: SparseObservation, noise: GaussianRandomField, spatial: Sequence[int],
                           chunk: int = 256) -> Tensor:
    """M = A C A^T / a²: the noise's correlation between sensors on the grid ``spatial`` (float64).

    Built by applying C to A^T e_j for each sensor j (one FFT per sensor, in chunks of ``chunk``).
    Shapes: returns (N, N) for N sensors.
    """
    index, weight = observation.stencil(spatial)
    n, total = observation.num_sensors, int(torch.tensor(spatial).prod())
    rows = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        adj = torch.zeros(stop - start, total, dtype=torch.float64)
        adj.scatter_add_(1, index[:, start:stop].T, weight[:, start:stop].T)
        field = noise.apply_cov_power(adj.reshape(stop - start, 1, *spatial), 1.0)
        flat = field.flatten(1)
        rows.append((flat[:, index] * weight).sum(dim=1))
    m = torch.cat(rows)
    return 0.5 * (m + m.T) / noise.amplitude**2


class ObservationGuidance(GuidanceTerm):
    """Gaussian likelihood of sparse observations given the denoised field: a guidance term.

    Args:
        observation: sensors, observed channels, values (in the units of ``decode(denoised)``), noise std.
        noise: the diffusion noise (defines C in the covariance model; see the module docstring).
        sigma_data: std of the model state's data (float or one per state channel), as in the EDM
            preconditioner; sets how fast the denoiser's uncertainty r²(σ) falls with σ.
        scaling: ``"likelihood"`` (default): K(σ) as in the module docstring, exact for Gaussian data with
            covariance ∝ C, needs an N×N eigendecomposition per grid shape (N ≤ ``max_sensors``).
            ``"residual"``: K = (‖y - A D‖²/N + s²) I, the residual-norm normalisation of DPS (the step is
            ζ/‖y - A D‖ in Chung et al. 2023, Alg. 1) read as a plug-in estimate of the residual variance;
            cheap for any N but ignores sensor correlations (may overshoot for very dense sensors).
        weight: multiplies this term's log-likelihood (1 = Bayesian).
        decode: map from model state to observation units (e.g. ``Normalizer.decode``); assumed affine per
            channel for the covariance model.
        jitter: eigenvalues of A C A^T below ``jitter`` × the largest are raised to it (conditioning).

    Call: ``term(denoised, sigma) -> (B,)`` negative log-likelihood ½ rᵀ K⁻¹ r per sample, r = y - A decode(D),
    whose gradient in D is -Aᵀ K⁻¹ r (K is treated as constant, as in Π-GDM).
    """

    def __init__(self, observation: SparseObservation, noise: GaussianRandomField, *,
                 sigma_data: float | Sequence[float] = 1.0, scaling: str = "likelihood", weight: float = 1.0,
                 decode: Decode | None = None, jitter: float = 1e-6, max_sensors: int = 4096) -> None:
        if scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {scaling!r}; valid: {SCALINGS}")
        if observation.values is None:
            raise ValueError("ObservationGuidance needs an observation with values")
        if scaling == "likelihood" and observation.num_sensors > max_sensors:
            raise ValueError(f"{observation.num_sensors} sensors exceed max_sensors={max_sensors} for the dense "
                             "'likelihood' covariance; use scaling='residual' or raise max_sensors")
        self.observation, self.noise, self.scaling = observation, noise, scaling
        self.sigma_data = torch.as_tensor(sigma_data, dtype=torch.float64).flatten()
        self.covariance = ModelCovariance(noise, self.sigma_data)
        self.weight, self.decode, self.jitter = float(weight), decode, float(jitter)
        self._eig: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}
        self._on_device: dict = {}  # constants of whiten on the device of the calls (device_constant)
        self._parts: dict[tuple[int, int, int], ObservationGuidance] = {}  # for_batch's views

    def for_batch(self, part: slice) -> "ObservationGuidance":
        """This term restricted to the samples ``part`` of the batch (per-sample values sliced; caches shared). A
        part's view is made once and kept, so a later step neither checks its values again nor moves its stencil to
        the device again."""
        values = self.observation.values
        if values.shape[0] == 1:
            return self
        key = part.indices(values.shape[0])
        view = self._parts.get(key)
        if view is None:
            view = self._parts[key] = copy.copy(self)
            view.observation = self.observation.with_values(values[part])
        return view

    def eig(self, spatial: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Cached eigendecomposition (λ (N,), U (N, N)) of M = A C A^T / a² on grid ``spatial``."""
        key = tuple(int(n) for n in spatial)
        if key not in self._eig:
            lam, vec = torch.linalg.eigh(observation_covariance(self.observation, self.noise, key))
            self._eig[key] = (lam.clamp(min=self.jitter * float(lam.max())), vec)
        return self._eig[key]

    def _gain2(self, denoised: Tensor) -> Tensor:
        """Per observed channel: g_c² (C_obs,) (float64, on the host; :meth:`whiten` keeps it per device)."""
        return decode_gain(self.decode, denoised)[list(self.observation.channels)] ** 2

    def whiten(self, residual: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
        """K(σ)⁻¹ r. Shapes: residual (B, C_obs, N), sigma (B,) -> (B, C_obs, N) (float64)."""
        r = residual.detach().double()
        cache, device, spatial = self._on_device, r.device, tuple(int(n) for n in denoised.shape[2:])
        s2 = device_constant(cache, "noise_var", device,
                             lambda: self.observation.noise_std_per_channel()[None, :, None] ** 2)  # (1, C_obs, 1)
        if self.scaling == "residual":
            return r / (r.pow(2).mean(dim=2, keepdim=True) + s2).clamp(min=1e-30)
        gain2 = device_constant(cache, ("gain2", denoised.shape[1:]), device, lambda: self._gain2(denoised))
        lam = device_constant(cache, ("eig_values", spatial), device, lambda: self.eig(spatial)[0])
        vec = device_constant(cache, ("eig_vectors", spatial), device, lambda: self.eig(spatial)[1])
        channels = device_constant(cache, "channels", device, lambda: torch.tensor(self.observation.channels))
        r2 = self.covariance.variance(sigma, denoised.shape[1]).index_select(1, channels)  # (B, C_obs)
        k_eig = s2 + (gain2[None, :] * r2)[..., None] * lam  # (B, C_obs, N)
        coeff = (r @ vec) / k_eig.clamp(min=1e-30)
        return coeff @ vec.T

    def __call__(self, denoised: Tensor, sigma: Tensor) -> Tensor:
        """Negative log-likelihood ½ rᵀ K⁻¹ r per sample.

        Shapes: denoised (B, C, *S), sigma (B,) or broadcastable -> (B,).
        """
        field = self.decode(denoised) if self.decode is not None else denoised
        residual = self.observation.residual(field)
        white = self.whiten(residual, sigma_per_sample(sigma, denoised), denoised).to(residual.dtype)
        return self.weight * gaussian_nll(white, residual)  # value ½ rᵀK⁻¹r, gradient -Aᵀ K⁻¹ r

    def misfit(self, x: Tensor) -> Tensor:
        """Relative observation misfit ‖y - A decode(x)‖ / ‖y‖ per sample. Shapes: (B, C, *S) -> (B,)."""
        return self.observation.relative_misfit(self.decode(x) if self.decode is not None else x)
