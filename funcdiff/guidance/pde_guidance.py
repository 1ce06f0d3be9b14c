"""PDE-residual guidance (DiffusionPDE, Huang et al. 2024, Sec. 3.3): penalise the physics residual of the
denoised estimate late in sampling."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from funcdiff.guidance.likelihood import Decode, sigma_per_sample
from funcdiff.guidance.terms import GuidanceTerm

ResidualFn = Callable[..., Tensor]


class PDEResidualGuidance(GuidanceTerm):
    """Guidance term ``weight · mean(residual²)`` of the decoded denoised estimate, active for σ ≤ start_sigma.

    Args:
        residual_fn: differentiable residual of *physical* fields, e.g. ``funcdiff.pde.darcy_residual``.
            Called as ``residual_fn(*[field[:, [c]] for c in channels])`` (each (B, 1, *S)) when ``channels``
            is given, else ``residual_fn(field)`` with the whole decoded field (B, C, *S). Returns any
            tensor (B, ...) (pointwise residual, units of the PDE's right-hand side).
        weight: strength λ; the term is the negative log of exp(-λ · mean residual²), i.e. a soft constraint
            whose tolerated rms residual is about 1/sqrt(2λ) per grid point (mean, so λ means the same at
            every resolution). Tune in units of 1/residual².
        start_sigma: the term is zero for samples with σ > start_sigma (DiffusionPDE switches physics guidance
            on late in sampling, where the denoised estimate is sharp); ``inf`` = always on.
        channels: which state channels to hand to ``residual_fn`` (indices), e.g. ``(0, 1)`` for (a, u).
        decode: model state -> physical units (e.g. ``Normalizer.decode``); ``None`` = identity.
        enabled: switch the term off without removing it.
        damping: step-length control (default on; see :meth:`curvature` and ``GuidedDenoiser``): the
            correction along the guidance direction is shortened to the Kalman step length, so a large
            ``weight`` enforces the constraint instead of making the sampling ODE stiff and blowing up.

    Call: ``term(denoised, sigma) -> (B,)``. Shapes: denoised (B, C, *S), sigma (B,) or broadcastable.
    """

    def __init__(self, residual_fn: ResidualFn, weight: float = 1.0, *, start_sigma: float = math.inf,
                 channels: Sequence[int] | None = None, decode: Decode | None = None,
                 enabled: bool = True, damping: bool = True) -> None:
        if not weight >= 0 or not start_sigma > 0:
            raise ValueError(f"need weight >= 0 and start_sigma > 0, got {weight}, {start_sigma}")
        self.residual_fn, self.weight, self.start_sigma = residual_fn, float(weight), float(start_sigma)
        self.channels = None if channels is None else tuple(int(c) for c in channels)
        self.decode, self.enabled, self.damped = decode, enabled, damping

    def active(self, sigma: Tensor) -> Tensor:
        """Boolean (B,): which samples are guided at noise levels ``sigma`` (B,)."""
        return (sigma <= self.start_sigma) & self.enabled & (self.weight > 0)

    def mean_square_residual(self, field: Tensor) -> Tensor:
        """mean(residual²) per sample of a model-state field (decoded first). Shapes: (B, C, *S) -> (B,)."""
        return self._residual(field).flatten(1).pow(2).mean(dim=1)

    def _residual(self, denoised: Tensor) -> Tensor:
        field = self.decode(denoised) if self.decode is not None else denoised
        if self.channels is not None and max(self.channels) >= field.shape[1]:
            raise ValueError(f"PDE guidance reads channels {self.channels} but the field has "
                             f"{field.shape[1]} channels")
        if self.channels is None:
            return self.residual_fn(field)
        return self.residual_fn(*[field[:, [c]] for c in self.channels])

    def curvature(self, denoised: Tensor, direction: Tensor, sigma: Tensor) -> Tensor:
        """Gauss–Newton curvature δᵀHδ of this term along ``direction`` δ, per sample.

        δᵀHδ = 2 λ mean((J_R δ)²) with J_R δ from a central difference of the residual (exact for linear R).
        Shapes: denoised, direction (B, C, *S); sigma (B,) -> (B,).
        """
        with torch.no_grad():
            view = (-1, *[1] * (denoised.ndim - 1))
            eps = 1e-3 * (denoised.flatten(1).norm(dim=1) + 1.0) / direction.flatten(1).norm(dim=1).clamp(min=1e-30)
            step = eps.reshape(view) * direction
            diff = (self._residual(denoised + step) - self._residual(denoised - step)).flatten(1)
            jvp = diff / (2 * eps[:, None])
            mask = self.active(sigma_per_sample(sigma, denoised)).to(denoised.dtype)
            return 2 * self.weight * jvp.pow(2).mean(dim=1) * mask

    def __call__(self, denoised: Tensor, sigma: Tensor) -> Tensor:
        mask = self.active(sigma_per_sample(sigma, denoised))
        if not bool(mask.any()):
            return denoised.new_zeros(denoised.shape[0])
        return self.weight * self.mean_square_residual(denoised) * mask.to(denoised.dtype)
