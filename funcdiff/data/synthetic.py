"""A cheap, file-free synthetic dataset of non-Gaussian periodic fields on ``[0, 1)^d``.

Each sample is built from a *continuous* random function, evaluated exactly on the requested grid:

* ``g``: a smooth Gaussian random field, a finite Fourier series over the modes ``|k_i| <= n_modes`` with
  spectrum ``c(k) ∝ (|k|^2 + tau^2)^(-alpha)`` scaled to unit pointwise variance;
* channel 0 (``a``): ``tanh(sharpness * g)`` (sharp fronts between two plateaus) plus ``n_bumps`` periodic
  Gaussian bumps of random sign, position and width;
* channel 1 (``u``), when asked for: the periodic potential ``(-Δ)^{-1} g`` (exact in Fourier space),
  scaled to unit variance, so a joint model must learn the relation between the channels;
* channels ``>= 2``: further independent draws of channel 0.

Because the random coefficients do not depend on the grid, the same generator state gives the *same function*
at every resolution: ``make_synthetic_fields(..., 64)[..., ::2, ::2]`` equals ``make_synthetic_fields(..., 32)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

SYNTHETIC_DEFAULTS: dict = {"dim": 2, "n_modes": 8, "alpha": 2.0, "tau": 3.0, "sharpness": 3.0, "n_bumps": 4}


@dataclass(frozen=True)
class SyntheticProblem:
    """A data-generating problem with the same attributes as ``funcdiff.pde.Problem`` (duck-typed).

    ``generate(num_samples, resolution, *, generator, device="cpu", dtype=torch.float32, **params)`` returns a
    dict of tensors ``(num_samples, *spatial)`` per field (pairs) or ``(num_samples, T, *spatial)`` plus ``t``.
    """

    name: str
    kind: str
    fields: tuple[str, ...]
    defaults: dict
    generate: Callable[..., dict[str, Tensor]]
    description: str = ""
    solver: str = field(default="")
    grid: str = "periodic"


def _wavenumbers(n_modes: int, dim: int) -> Tensor:
    """Integer wavenumbers of the mode box, shape ``(2*n_modes+1,)*dim + (dim,)``."""
    k1 = torch.arange(-n_modes, n_modes + 1, dtype=torch.float64)
    grids = torch.meshgrid(*([k1] * dim), indexing="ij")
    return torch.stack(grids, dim=-1)


def _fourier_basis(n_modes: int, resolution: int) -> Tensor:
    """``exp(2πi k x)`` for ``x = j/resolution``; shape ``(resolution, 2*n_modes+1)`` complex128."""
    x = torch.arange(resolution, dtype=torch.float64) / resolution
    k = torch.arange(-n_modes, n_modes + 1, dtype=torch.float64)
    return torch.exp(2j * math.pi * x[:, None] * k[None, :])


def _evaluate(coeff: Tensor, resolution: int) -> Tensor:
    """Real part of the Fourier series with coefficients ``coeff`` ``(N, M, ..., M)`` on a uniform grid.

    Shapes:
        coeff: ``(N, *([2K+1] * d))`` complex; returns ``(N, *([resolution] * d))`` float64.
    """
    dim = coeff.ndim - 1
    basis = _fourier_basis((coeff.shape[1] - 1) // 2, resolution)
    letters_k, letters_x = "klm"[:dim], "xyz"[:dim]
    spec = "b" + letters_k + "," + ",".join(x + k for x, k in zip(letters_x, letters_k)) + "->b" + letters_x
    return torch.einsum(spec, coeff, *([basis] * dim)).real


def _grf_spectrum(dim: int, n_modes: int, alpha: float, tau: float) -> Tensor:
    """``c(k) ∝ (|k|^2 + tau^2)^(-alpha)`` on the mode box, normalised to sum 1; shape ``([2K+1] * d)``."""
    k = _wavenumbers(n_modes, dim)
    spectrum = (k.pow(2).sum(-1) + tau**2).pow(-alpha)
    return spectrum / spectrum.sum()


def _grf_coefficients(num_samples: int, spectrum: Tensor, generator: torch.Generator) -> Tensor:
    """Complex coefficients of a unit-variance stationary GRF with spectrum ``c(k)`` (summing to 1).

    Shapes: ``spectrum`` ``([2K+1] * d)``; returns ``(N, *([2K+1] * d))`` complex128.
    """
    shape = (num_samples, *spectrum.shape)
    real = torch.randn(shape, generator=generator, dtype=torch.float64)
    imag = torch.randn(shape, generator=generator, dtype=torch.float64)
    # E|xi|^2 = 2 and Re(.) halves the variance: Var g(x) = sum_k c(k) = 1.
    return torch.complex(real, imag) * spectrum.sqrt()


def _periodic_bumps(num_samples: int, resolution: int, dim: int, n_bumps: int,
                    generator: torch.Generator) -> Tensor:
    """Sum of periodic Gaussian bumps with random centre, width in [0.04, 0.1], amplitude ±[0.5, 1].

    Shapes: returns ``(N, *([resolution] * d))`` float64.
    """
    if n_bumps == 0:
        return torch.zeros((num_samples,) + (resolution,) * dim, dtype=torch.float64)
    centres = torch.rand((num_samples, n_bumps, dim), generator=generator, dtype=torch.float64)
    widths = 0.04 + 0.06 * torch.rand((num_samples, n_bumps), generator=generator, dtype=torch.float64)
    amps = 0.5 + 0.5 * torch.rand((num_samples, n_bumps), generator=generator, dtype=torch.float64)
    signs = torch.randint(0, 2, (num_samples, n_bumps), generator=generator).to(torch.float64) * 2 - 1
    x = torch.arange(resolution, dtype=torch.float64) / resolution
    # a Gaussian bump is separable: exp(-|d|^2 / 2w^2) = prod_axis exp(-d_axis^2 / 2w^2)
    profiles = []
    for axis in range(dim):
        delta = (x.view(1, 1, -1) - centres[:, :, axis, None]).abs()
        delta = torch.minimum(delta, 1.0 - delta)
        profiles.append(torch.exp(-delta.pow(2) / (2 * widths.pow(2))[..., None]))  # (N, n_bumps, R)
    letters = "xyz"[:dim]
    spec = "bn," + ",".join(f"bn{c}" for c in letters) + "->b" + letters
    return torch.einsum(spec, amps * signs, *profiles)


def _potential(coeff: Tensor, spectrum: Tensor) -> Tensor:
    """Coefficients of ``(-Δ)^{-1} g`` (zero mean), scaled to unit expected pointwise variance.

    ``spectrum`` is the normalised GRF spectrum ``c(k)``, so ``Var[(-Δ)^{-1} g] = sum_k c(k) / (4π²|k|²)²``.
    """
    k2 = _wavenumbers((coeff.shape[1] - 1) // 2, coeff.ndim - 1).pow(2).sum(-1)
    inv = torch.where(k2 > 0, 1.0 / (4 * math.pi**2 * k2.clamp(min=1)), torch.zeros_like(k2))
    return coeff * inv / (spectrum * inv.pow(2)).sum().sqrt()


def make_synthetic_fields(num_samples: int, resolution: int, generator: torch.Generator, dim: int = 2,
                          channels: int = 1, *, n_modes: int = 8, alpha: float = 2.0, tau: float = 3.0,
                          sharpness: float = 3.0, n_bumps: int = 4,
                          dtype: torch.dtype = torch.float32) -> Tensor:
    """Sample non-Gaussian periodic fields (see module docstring), exact at any resolution.

    Args:
        num_samples: number of fields N.
        resolution: grid points per axis; coordinates ``j / resolution`` on ``[0, 1)`` (dimensionless).
        generator: CPU ``torch.Generator``; the only source of randomness.
        dim: spatial dimension (1, 2 or 3).
        channels: 1 gives ``a``; 2 gives ``(a, u)`` with ``u = (-Δ)^{-1} g``; more adds independent ``a``'s.
        n_modes, alpha, tau: GRF mode cut-off and spectrum ``(|k|^2 + tau^2)^(-alpha)``.
        sharpness: slope of the ``tanh`` front map; n_bumps: bumps per sample.

    Shapes:
        returns ``(num_samples, channels, *([resolution] * dim))`` (dimensionless values of order 1).
    """
    _check_synthetic_args(num_samples, resolution, dim, channels, n_modes)
    spectrum = _grf_spectrum(dim, n_modes, alpha, tau)
    out, first = [], None
    for c in range(channels):
        if c == 1:  # the potential of the first channel's GRF
            out.append(_evaluate(_potential(first, spectrum), resolution))
            continue
        coeff = _grf_coefficients(num_samples, spectrum, generator)
        if c == 0:
            first = coeff
        a = torch.tanh(sharpness * _evaluate(coeff, resolution))
        out.append(a + _periodic_bumps(num_samples, resolution, dim, n_bumps, generator))
    return torch.stack(out, dim=1).to(dtype)


def _check_synthetic_args(num_samples: int, resolution: int, dim: int, channels: int, n_modes: int) -> None:
    if dim not in (1, 2, 3):
        raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
    for name, value in (("num_samples", num_samples), ("resolution", resolution), ("channels", channels),
                        ("n_modes", n_modes)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


def _generate_synthetic(num_samples: int, resolution: int, *, generator: torch.Generator, device: str = "cpu",
                        dtype: torch.dtype = torch.float32, **params) -> dict[str, Tensor]:
    """``Problem.generate`` for the synthetic pair ``(a, u)``; returns ``(N, *spatial)`` per field."""
    unknown = sorted(set(params) - set(SYNTHETIC_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for 'synthetic'; valid: {sorted(SYNTHETIC_DEFAULTS)}")
    p = {**SYNTHETIC_DEFAULTS, **params}
    if generator.device.type != "cpu":
        raise ValueError(f"the synthetic problem draws on the CPU; got a generator on {generator.device}")
    x = make_synthetic_fields(num_samples, resolution, generator, p["dim"], 2, n_modes=p["n_modes"],
                              alpha=p["alpha"], tau=p["tau"], sharpness=p["sharpness"], n_bumps=p["n_bumps"],
                              dtype=dtype)
    x = x.to(device)
    return {"a": x[:, 0], "u": x[:, 1]}


SYNTHETIC = SyntheticProblem(
    name="synthetic", kind="pair", fields=("a", "u"), defaults=dict(SYNTHETIC_DEFAULTS),
    generate=_generate_synthetic, solver="funcdiff.data.synthetic (exact Fourier series, no solver)",
    description="Non-Gaussian periodic fields a = tanh(s*g) + bumps with the potential u = (-Δ)^{-1} g.")
