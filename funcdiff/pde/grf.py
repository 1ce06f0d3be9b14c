"""Gaussian random fields for initial conditions, coefficients and sources (self-contained, FFT/DCT based).

Two families, both following the FNO / DiffusionPDE data conventions:

* :func:`sample_periodic_grf` on ``[0, 1)^d`` (grid ``x_i = i / N``): covariance
  ``C(x, y) = sum_{k != 0} s_k^2 cos(2 pi k . (x - y))`` with ``s_k = sigma (4 pi^2 |k|^2 + tau^2)^(-alpha / 2)``,
  i.e. ``sigma^2 (-Laplacian + tau^2)^(-alpha)`` without the constant mode. Default ``sigma = tau^(alpha - d/2)``.
* :func:`sample_cosine_grf` on ``[0, 1]^2`` at the nodes ``x_i = i / (N - 1)`` (Neumann eigenfunctions):
  ``u(x, y) = sum_{k != 0} xi_k s_k cos(pi k_1 x) cos(pi k_2 y)`` with ``s_k = sigma (pi^2 |k|^2 + tau^2)^(-alpha/2)``,
  ``k_j = 0 .. N - 1``; default ``sigma = tau^(alpha - 1)`` (the FNO Darcy generator).

Both draw their normal variates in float64 on the generator's device, so a generator state fixes the sample.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from funcdiff.pde._common import check_positive, draw_normal
from funcdiff.pde.spectral import integer_wavenumbers


def sample_periodic_grf(
    num_samples: int,
    resolution: int,
    dims: int,
    *,
    alpha: float = 2.5,
    tau: float = 7.0,
    sigma: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Mean-zero periodic GRF with covariance ``sigma^2 (4 pi^2 |k|^2 + tau^2)^(-alpha)`` per Fourier mode.

    Modes with ``|k_j| < resolution / 2`` are used (no Nyquist mode), so samples are band-limited and can be
    resampled exactly with :func:`funcdiff.utils.fourier_resample`.

    Shapes:
        returns ``(num_samples, 1, *(resolution,) * dims)``; dimensionless.
    """
    _check_grf_args(num_samples, resolution, alpha, tau)
    sigma = tau ** (alpha - dims / 2.0) if sigma is None else check_positive(sigma, "sigma")
    k = integer_wavenumbers(resolution, device=device)
    ksq = sum(kk**2 for kk in torch.meshgrid(*([k] * dims), indexing="ij"))
    scale = sigma * (4.0 * math.pi**2 * ksq + tau**2) ** (-alpha / 2.0)
    band = torch.stack(torch.meshgrid(*([k.abs()] * dims), indexing="ij")).amax(0) < resolution / 2.0
    scale = torch.where(band & (ksq > 0), scale, torch.zeros_like(scale))
    shape = (num_samples, 1) + (resolution,) * dims
    xi = torch.complex(draw_normal(shape, generator), draw_normal(shape, generator)).to(device)
    axes = tuple(range(-dims, 0))
    field = torch.fft.ifftn(xi * scale, dim=axes, norm="forward").real
    return field.to(dtype)


def sample_cosine_grf(
    num_samples: int,
    resolution: int,
    *,
    alpha: float = 2.0,
    tau: float = 3.0,
    sigma: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Mean-zero 2-D GRF in the cosine (Neumann) basis, evaluated at the nodes ``i / (N - 1)`` of ``[0, 1]^2``.

    Shapes:
        returns ``(num_samples, 1, resolution, resolution)``; dimensionless.
    """
    _check_grf_args(num_samples, resolution, alpha, tau)
    basis, scale = cosine_grf_expansion(resolution, alpha=alpha, tau=tau, sigma=sigma, device=device)
    xi = draw_normal((num_samples, 1, resolution, resolution), generator).to(device) * scale
    field = basis @ xi @ basis.T
    return field.to(dtype)


def cosine_grf_expansion(resolution: int, *, alpha: float = 2.0, tau: float = 3.0, sigma: float | None = None,
                         device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """The expansion behind :func:`sample_cosine_grf`: field = B (scale ⊙ ξ) Bᵀ with white ξ, the cosine basis
    B[i, k] = cos(π k x_i) at the nodes x_i = i / (N - 1) and the mode std scale[k, l] = σ (π²(k² + l²) + τ²)^(-α/2)
    (mean-zero: scale[0, 0] = 0; σ = τ^(α-1) by default).

    Shapes: returns B (N, N) and scale (N, N), float64; dimensionless."""
    sigma = tau ** (alpha - 1.0) if sigma is None else check_positive(sigma, "sigma")
    k = torch.arange(resolution, device=device, dtype=torch.float64)
    ksq = k[:, None] ** 2 + k[None, :] ** 2
    scale = sigma * (math.pi**2 * ksq + tau**2) ** (-alpha / 2.0)
    scale[0, 0] = 0.0
    x = torch.linspace(0.0, 1.0, resolution, device=device, dtype=torch.float64)
    basis = torch.cos(math.pi * x[:, None] * k[None, :])  # (N nodes, K modes)
    return basis, scale


def threshold_coefficient(field: Tensor, high: float = 12.0, low: float = 3.0) -> Tensor:
    """Piecewise-constant Darcy coefficient: ``high`` where ``field >= 0`` and ``low`` elsewhere (FNO Darcy data).

    Shapes:
        field: any; returns the same shape and dtype.
    """
    check_positive(high, "high")
    check_positive(low, "low")
    return torch.where(field >= 0, torch.full_like(field, high), torch.full_like(field, low))


def _check_grf_args(num_samples: int, resolution: int, alpha: float, tau: float) -> None:
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if int(resolution) < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    check_positive(alpha, "alpha")
    check_positive(tau, "tau")
