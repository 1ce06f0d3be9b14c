"""Fourier helpers for periodic fields on ``[0, 1)^d`` sampled at ``x_i = i / N``.

Wavenumbers are integers ``k`` (cycles per unit length); a derivative multiplies mode ``k`` by ``2 pi i k``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def integer_wavenumbers(n: int, *, real: bool = False, device=None, dtype=torch.float64) -> Tensor:
    """Integer wavenumbers of an ``n``-point FFT (``rfft`` layout when ``real``).

    Shapes:
        returns ``(n,)`` or ``(n // 2 + 1,)`` with ``real``.
    """
    freqs = torch.fft.rfftfreq(n, d=1.0 / n) if real else torch.fft.fftfreq(n, d=1.0 / n)
    return freqs.to(device=device, dtype=dtype)


def wavenumber_grid_2d(n: int, *, device=None, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """Integer wavenumbers ``(kx, ky)`` of an ``rfft2`` on an ``n x n`` grid (x along axis -2, y along axis -1).

    Shapes:
        returns two ``(n, n // 2 + 1)`` tensors.
    """
    kx = integer_wavenumbers(n, device=device, dtype=dtype)[:, None]
    ky = integer_wavenumbers(n, real=True, device=device, dtype=dtype)[None, :]
    return kx.expand(n, n // 2 + 1), ky.expand(n, n // 2 + 1)


def dealias_mask(n: int, dims: int, *, device=None) -> Tensor:
    """Orszag 2/3-rule mask in ``rfftn`` layout: keeps modes with every ``|k_j| <= n / 3``.

    Shapes:
        returns a boolean tensor ``(n,) * (dims - 1) + (n // 2 + 1,)``.
    """
    cutoff = n / 3.0
    axes = [integer_wavenumbers(n, device=device).abs() <= cutoff for _ in range(dims - 1)]
    axes.append(integer_wavenumbers(n, real=True, device=device).abs() <= cutoff)
    mask = axes[0]
    for ax in axes[1:]:
        mask = mask[..., None] & ax
    return mask


def periodic_grid(n: int, dims: int, *, device=None, dtype=torch.float64) -> tuple[Tensor, ...]:
    """Coordinates ``x_i = i / n`` of the periodic grid on ``[0, 1)^dims`` (``indexing='ij'``).

    Shapes:
        returns ``dims`` tensors of shape ``(n,) * dims``.
    """
    x = torch.arange(n, device=device, dtype=dtype) / n
    return torch.meshgrid(*([x] * dims), indexing="ij")


TWO_PI = 2.0 * math.pi
