"""Noise on the sphere: an isotropic Gaussian random field with a chosen angular power spectrum.

The field (Lang and Schwab 2015, "Isotropic Gaussian random fields on the sphere", Ann. Appl. Probab. 25, eq. (2.4))

    u = Σ_l Σ_m a_lm Y_l^m,     a_lm ~ N(0, C_l) independent (real orthonormal harmonics),
    C_l ∝ (1 + ℓ² l (l + 1))^(-α),

is the sphere analogue of the torus GRF of :mod:`funcdiff.noise`: ``l (l + 1)`` are the eigenvalues of -Δ on the
unit sphere as ``(2π|k|)²`` are on the unit torus, ℓ is a correlation length in radians, and the covariance
``k(p, q) = Σ_l C_l (2l + 1)/(4π) P_l(cos γ)`` depends only on the angle γ between p and q (isotropy). It is
trace-class for α > 1 (= dim/2).

Samples are drawn in spectral space and synthesised with :class:`funcdiff.sphere.GridSHT`, so the values at the
grid points are exactly those of the band-limited continuous field; the grid only decides where it is evaluated.

Band limit and resolution. With ``max_degree`` set, every grid that resolves it (W/2 ≥ max_degree) samples the
*same* law: a fine sample restricted to a coarser grid's points is distributed exactly as a coarse sample. By
default (``max_degree=None``) a grid keeps every degree it resolves, l < W/2, and C_l is normalised over those
degrees so the pointwise variance is ``amplitude²`` on every grid (what EDM preconditioning expects of unit
noise); then the law of a fine sample restricted to a coarse grid differs from the coarse law by the spectral tail
``τ = Σ_{L_c ≤ l < L_f} (2l+1) c_l / Σ_{l < L_f} (2l+1) c_l``: every covariance differs by at most 2τ·amplitude² (τ from renormalising, τ from the tail)
(:meth:`SphericalGaussianRandomField.tail_fraction`; 2e-4 for α = 3, ℓ = 0.2 between 33×64 and 65×128).

White noise (α = 0) is i.i.d. N(0, amplitude²) per grid point, as on the torus.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from funcdiff.sphere import GridSHT, band_limit, grid_kind

Generators = torch.Generator | Sequence[torch.Generator] | None


@functools.lru_cache(maxsize=64)
def _degree_weights(degrees: int, smoothness: float, length_scale: float) -> torch.Tensor:
    """Unnormalised c_l = (1 + ℓ² l(l+1))^(-α), l < degrees (float64)."""
    l = torch.arange(degrees, dtype=torch.float64)
    return (1.0 + length_scale**2 * l * (l + 1)) ** (-smoothness)


@dataclass(frozen=True)
class SphericalGaussianRandomField:
    """Isotropic GRF on the unit sphere, sampled on the regular lat-lon grids of :mod:`funcdiff.sphere`.

    The same interface as :class:`funcdiff.noise.GaussianRandomField` (``sample``, ``apply_cov_power``,
    ``spectrum``, ``as_dict``, ``dim``), so the trainer, the samplers, forecasting and
    :class:`~funcdiff.guidance.GuidedDenoiser` use it unchanged.

    Args:
        smoothness: α of C_l ∝ (1 + ℓ² l(l+1))^(-α); 0 is white noise, otherwise α > 1.
        length_scale: ℓ in radians (0.1 rad ≈ 640 km on the Earth).
        amplitude: pointwise standard deviation.
        max_degree: keep degrees l < max_degree on every grid (same law at every resolution), or None for every
            degree the grid resolves (l < W/2).
    """

    smoothness: float = 2.0
    length_scale: float = 0.1
    amplitude: float = 1.0
    max_degree: int | None = None
    domain: str = "sphere"

    def __post_init__(self) -> None:
        if self.domain != "sphere":
            raise ValueError(f"SphericalGaussianRandomField has domain 'sphere', got {self.domain!r}")
        if self.smoothness != 0 and self.smoothness <= 1:
            raise ValueError(f"smoothness α={self.smoothness} ≤ 1: the covariance on the sphere is not trace-class; "
                             "use α=0 (white noise) or α > 1")
        if self.length_scale <= 0 or self.amplitude <= 0:
            raise ValueError("sphere GRF length_scale and amplitude must be positive")
        if self.max_degree is not None and int(self.max_degree) < 1:
            raise ValueError(f"max_degree must be a positive integer or None, got {self.max_degree}")

    @property
    def dim(self) -> int:
        """Spatial dimensions of a field (latitude, longitude)."""
        return 2

    @property
    def is_white(self) -> bool:
        return self.smoothness == 0

    def degrees(self, spatial: Sequence[int]) -> int:
        """Degrees kept on the grid ``spatial = (H, W)``: ``max_degree`` or W/2 (ValueError if the grid cannot
        resolve ``max_degree``)."""
        spatial = self._check_spatial(spatial)
        resolved = band_limit(*spatial)
        if self.max_degree is None:
            return resolved
        if self.max_degree > resolved:
            raise ValueError(f"a {spatial[0]}x{spatial[1]} grid resolves degrees < {resolved}, fewer than "
                             f"max_degree={self.max_degree}")
        return int(self.max_degree)

    def _check_spatial(self, spatial: Sequence[int]) -> tuple[int, int]:
        spatial = tuple(int(n) for n in spatial)
        if len(spatial) != 2:
            raise ValueError(f"a field on the sphere has 2 spatial dims (latitude, longitude), got {spatial}")
        grid_kind(*spatial)
        return spatial  # type: ignore[return-value]

    def spectrum(self, spatial: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
        """Angular power spectrum C_l, l < :meth:`degrees` (units amplitude² per steradian): normalised so that the
        pointwise variance Σ_l (2l+1) C_l / (4π) is ``amplitude²``. White noise: C_l = 4π amplitude² / N over the
        grid's N points for l < W/2 (the spectrum of i.i.d. values, approximately). Shapes: -> (L,)."""
        degrees = self.degrees(spatial)
        l = torch.arange(degrees, dtype=torch.float64)
        if self.is_white:
            c = torch.full((degrees,), 4 * math.pi / math.prod(spatial), dtype=torch.float64)
        else:
            c = _degree_weights(degrees, float(self.smoothness), float(self.length_scale))
            c = c / ((2 * l + 1) * c).sum() * 4 * math.pi
        return (self.amplitude**2 * c).to(device=device, dtype=dtype)

    def tail_fraction(self, coarse: Sequence[int], fine: Sequence[int]) -> float:
        """τ of the module docstring: |cov_fine - cov_coarse| ≤ 2τ amplitude² at shared points."""
        if self.is_white:
            return 1.0
        lc, lf = self.degrees(coarse), self.degrees(fine)
        c = _degree_weights(max(lc, lf), float(self.smoothness), float(self.length_scale))
        mass = (2 * torch.arange(len(c), dtype=torch.float64) + 1) * c
        return float(mass[min(lc, lf):max(lc, lf)].sum() / mass.sum())

    @functools.cached_property
    def _sht(self) -> GridSHT:
        return GridSHT()

    def _coefficient_std(self, spatial: tuple[int, int], power: float, device, dtype) -> torch.Tensor:
        """(L, M) standard deviations C_l^power, zero above the triangle m ≤ l (M = L)."""
        c = self.spectrum(spatial, dtype=torch.float64)
        table = torch.tril(c[:, None].expand(len(c), len(c)).pow(power))
        return table.to(device=device, dtype=dtype)

    def apply_cov_power(self, x: torch.Tensor, power: float) -> torch.Tensor:
        """Apply C^power, C the covariance *matrix* of the samples on the grid's N points.

        ``power == 1`` is exact: ``C = S D S^T`` (S the synthesis of :meth:`sample`, D the coefficient variances),
        so ``(C x)_i = Σ_j k(p_i, p_j) x_j`` -- what guidance (``A C A^T``, gradient preconditioning) needs. Other
        powers use the quadrature SHT A: ``S diag((N/4π) C_l)^power A x``, the continuum operator divided by the
        mean cell area 4π/N (the torus GRF's convention); C^{1/2} of i.i.d. unit noise then approximates this GRF.
        The quadrature is exact for products of degree < H, so these powers compose exactly on fields of degree
        < H/2 (aliasing above).

        Shapes: x (B, C, H, W) -> same.
        """
        spatial = self._check_spatial(x.shape[-2:])
        if self.is_white:
            return x * self.amplitude ** (2 * power)
        degrees = self.degrees(spatial)
        if power == 1:
            variances = self._coefficient_std(spatial, 1.0, x.device, torch.float64).clone()
            variances[:, 1:] *= 0.5  # real and imaginary parts of m > 0 each carry C_l / 2
            coeffs = self._sht.isht_transpose(x.double(), degrees, degrees) * variances
            return self._sht.isht(coeffs, s=spatial).to(x.dtype)
        scale = self._coefficient_std(spatial, 1.0, x.device, torch.float64) * (math.prod(spatial) / (4 * math.pi))
        multiplier = torch.where(scale > 0, scale.clamp_min(1e-300).pow(power), torch.zeros_like(scale))
        coeffs = self._sht.sht(x.double(), s=(degrees, degrees)) * multiplier
        return self._sht.isht(coeffs, s=spatial).to(x.dtype)

    def sample(self, shape: Sequence[int], generator: Generators = None, device=None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Draw samples: a_lm ~ N(0, C_l) (real and imaginary parts of m > 0 each with variance C_l / 2), then
        synthesis at the grid points. ``generator``: one for the batch or one per sample (a sample then does not
        depend on the batch it was drawn in). Shapes: shape = (B, C, H, W) -> that shape."""
        shape = tuple(int(n) for n in shape)
        spatial = self._check_spatial(shape[2:])
        if self.is_white:
            return self.amplitude * _randn(shape, generator, device, dtype)
        degrees = self.degrees(spatial)
        xi = _randn((*shape[:2], 2, degrees, degrees), generator, device, torch.float64)
        std = self._coefficient_std(spatial, 0.5, xi.device, torch.float64)
        half = torch.full((degrees,), math.sqrt(0.5), dtype=torch.float64, device=xi.device)
        half[0] = 1.0  # m = 0: a real coefficient with the whole variance
        coeffs = torch.complex(xi[:, :, 0] * std * half, xi[:, :, 1] * std * half * (half < 1))
        return self._sht.isht(coeffs, s=spatial).to(dtype)

    def as_dict(self) -> dict:
        """JSON-serialisable description (stored in checkpoints); :func:`funcdiff.noise.noise_from_dict` inverts it."""
        return {"domain": "sphere", "smoothness": self.smoothness, "length_scale": self.length_scale,
                "amplitude": self.amplitude, "max_degree": self.max_degree}


def _randn(shape: tuple[int, ...], generator: Generators, device, dtype) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(shape[1:], generator=g, device=device, dtype=dtype) for g in generator])
