"""Noise in function space: Gaussian random fields (GRFs) on the periodic unit torus [0, 1)^d.

A GRF with a Matérn-type spectrum

    u(x) = Σ_k sqrt(λ(k)) ξ_k exp(2πi k·x),    λ(k) ∝ (1 + (2π ℓ |k|)²)^(-α),

is a random *function*; sampling it on an n^d grid sees each Fourier mode k through its aliases k + n·m, so
the grid covariance is diagonal in the discrete Fourier basis with the *periodised* spectrum
Σ_m λ(k + n m). Using that spectrum (rather than truncating λ at the grid's Nyquist frequency) makes the
law consistent across resolutions: a 128² sample restricted to the even 64² sub-grid has the law of a 64²
sample, up to the truncation of the alias sum at ``n_images`` images per dimension (relative error per
mode ≲ (2·n_images + 1)^-(2α - d): 5e-3 for α = 2, d = 2 and 8e-5 for α = 3 with the default 4 images). λ is normalised so
the pointwise variance is ``amplitude²`` at every resolution, which is what the EDM preconditioning expects
of unit noise. White noise (α = 0) is the case λ = const, sampled as i.i.d. N(0, amplitude²) per point.

Sampling is by FFT: O(N log N) in the number of grid points N (a dense Cholesky factor, as in the FunDPS
reference code, costs O(N²) memory and O(N³) set-up; see ``benchmarks/noise.py``).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


@functools.lru_cache(maxsize=64)
def _periodised_spectrum(
    shape: tuple[int, ...], smoothness: float, length_scale: float, n_images: int
) -> torch.Tensor:
    """Periodised Matérn spectrum on the FFT grid of ``shape``, normalised to sum to 1 (float64, CPU)."""
    freqs = [torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64) for n in shape]
    total = torch.zeros(shape, dtype=torch.float64)
    for images in itertools.product(range(-n_images, n_images + 1), repeat=len(shape)):
        k2 = torch.zeros(shape, dtype=torch.float64)
        for axis, (f, n, m) in enumerate(zip(freqs, shape, images)):
            view = [1] * len(shape)
            view[axis] = n
            k2 = k2 + ((f + n * m) ** 2).reshape(view)
        total += (1.0 + (2 * math.pi * length_scale) ** 2 * k2) ** (-smoothness)
    return total / total.sum()


@functools.lru_cache(maxsize=32)
def _cached_multiplier(noise: "GaussianRandomField", spatial: tuple[int, ...], power: float, device: torch.device,
                       dtype: torch.dtype) -> torch.Tensor:
    """:meth:`GaussianRandomField._multiplier`, computed in float64 on the host once and kept on ``device``."""
    lam = noise.spectrum(spatial, dtype=torch.float64) * math.prod(spatial)
    return lam[..., : spatial[-1] // 2 + 1].pow(power).to(device=device, dtype=dtype)


@dataclass(frozen=True)
class GaussianRandomField:
    """Stationary Gaussian random field on the periodic torus [0, 1)^dim.

    Args:
        dim: number of spatial dimensions (1, 2 or 3).
        smoothness: spectral decay exponent α of λ(k) ∝ (1 + (2πℓ|k|)²)^(-α). ``0`` gives white noise;
            otherwise α > dim/2 is required (trace-class covariance, finite pointwise variance).
        length_scale: correlation length ℓ in domain units (the domain has length 1).
        amplitude: pointwise standard deviation of the field.
        n_images: alias images per dimension used to periodise the spectrum (cost (2·n_images+1)^dim · N once
            per grid shape, cached).

    The FNO / DiffusionPDE convention (-Δ + τ²)^(-α) is ``length_scale = 1/τ`` (see :meth:`from_tau`).
    """

    dim: int = 2
    smoothness: float = 0.0
    length_scale: float = 0.1
    amplitude: float = 1.0
    n_images: int = 4

    def __post_init__(self) -> None:
        if self.dim not in (1, 2, 3):
            raise ValueError(f"GRF dim must be 1, 2 or 3, got {self.dim}")
        if self.smoothness != 0 and self.smoothness <= self.dim / 2:
            raise ValueError(
                f"smoothness α={self.smoothness} ≤ dim/2={self.dim / 2}: covariance is not trace-class "
                "(infinite pointwise variance); use α=0 (white noise) or α > dim/2"
            )
        if self.length_scale <= 0 or self.amplitude <= 0:
            raise ValueError("GRF length_scale and amplitude must be positive")

    @classmethod
    def from_tau(cls, dim: int, alpha: float, tau: float, amplitude: float = 1.0) -> "GaussianRandomField":
        """GRF with covariance ∝ (-Δ + τ²)^(-α) (FNO / DiffusionPDE convention), pointwise std ``amplitude``."""
        return cls(dim=dim, smoothness=alpha, length_scale=1.0 / tau, amplitude=amplitude)

    @property
    def is_white(self) -> bool:
        return self.smoothness == 0

    def _check_spatial(self, spatial: Sequence[int]) -> tuple[int, ...]:
        spatial = tuple(int(n) for n in spatial)
        if len(spatial) != self.dim:
            raise ValueError(f"GRF has dim={self.dim} but got spatial shape {spatial}")
        if min(spatial) < 1:
            raise ValueError(f"spatial shape {spatial} must be positive")
        return spatial

    def spectrum(self, spatial: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
        """Variance of each discrete Fourier mode, in ``torch.fft.fftn`` layout.

        Shapes: returns ``spatial``. Units: ``amplitude²``; the entries sum to ``amplitude²`` (the pointwise
        variance). With ``norm="ortho"`` FFTs, ``E|x̂_k|² = N · spectrum[k]`` for N grid points.
        """
        spatial = self._check_spatial(spatial)
        if self.is_white:
            lam = torch.full(spatial, 1.0 / math.prod(spatial), dtype=torch.float64)
        else:
            lam = _periodised_spectrum(spatial, float(self.smoothness), float(self.length_scale), self.n_images)
        return (self.amplitude**2 * lam).to(device=device, dtype=dtype)

    def _multiplier(self, spatial: tuple[int, ...], power: float, device, dtype) -> torch.Tensor:
        """(N λ)^power on the ``rfftn`` half-grid: the Fourier multiplier of C^power (made once per grid, power,
        device and dtype: a call copies nothing from the host)."""
        return _cached_multiplier(self, tuple(int(n) for n in spatial), float(power), torch.device(device), dtype)

    def apply_cov_power(self, x: torch.Tensor, power: float) -> torch.Tensor:
        """Apply C^power, the covariance operator raised to ``power`` (e.g. 0.5, -0.5, 1, -1).

        Shapes: x (B, C, *S) with ``len(S) == dim`` -> same shape. C^{1/2} maps white noise to this GRF.
        """
        spatial = self._check_spatial(x.shape[2:])
        if self.is_white:
            return x * self.amplitude ** (2 * power)
        dims = tuple(range(2, x.ndim))
        x_hat = torch.fft.rfftn(x, dim=dims, norm="ortho")
        x_hat = x_hat * self._multiplier(spatial, power, x.device, x.real.dtype)
        return torch.fft.irfftn(x_hat, s=spatial, dim=dims, norm="ortho")

    def sample(
        self,
        shape: Sequence[int],
        generator: Generators = None,
        device=None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw GRF samples.

        Args:
            shape: (B, C, *S) with ``len(S) == dim``; channels are independent.
            generator: one ``torch.Generator`` for the batch, or a sequence of B generators (one per sample,
                so a sample does not depend on which batch or chunk it was drawn in).
        Shapes: returns ``shape``.
        """
        shape = tuple(int(n) for n in shape)
        self._check_spatial(shape[2:])
        if generator is None or isinstance(generator, torch.Generator):
            xi = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        else:
            if len(generator) != shape[0]:
                raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
            xi = torch.stack([torch.randn(shape[1:], generator=g, device=device, dtype=dtype) for g in generator])
        return self.apply_cov_power(xi, 0.5)

    def as_dict(self) -> dict:
        """JSON-serialisable description (stored in checkpoints)."""
        return {"dim": self.dim, "smoothness": self.smoothness, "length_scale": self.length_scale,
                "amplitude": self.amplitude, "n_images": self.n_images}


def make_generators(seed: int, indices: Sequence[int], device=None) -> list[torch.Generator]:
    """One generator per sample index, seeded from ``(seed, index)``, so sample i is the same in any batch."""
    gens = []
    for i in indices:
        g = torch.Generator(device=device or "cpu")
        g.manual_seed((int(seed) * 1_000_003 + int(i)) % (2**63 - 1))
        gens.append(g)
    return gens


def noise_from_dict(raw: dict):
    """Rebuild a noise from its ``as_dict()``: the torus GRF, or the sphere GRF when ``raw["domain"] == "sphere"``
    (:class:`funcdiff.noise_sphere.SphericalGaussianRandomField`)."""
    raw = dict(raw)
    if raw.pop("domain", "torus") == "sphere":
        from funcdiff.noise_sphere import SphericalGaussianRandomField

        return SphericalGaussianRandomField(**raw)
    return GaussianRandomField(**raw)
