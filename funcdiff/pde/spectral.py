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


def spectral_resample(x: Tensor, size: int, dims: int) -> Tensor:
    """Resample a periodic field on its last ``dims`` axes to ``size`` points each by Fourier truncation/padding.

    Modes with ``|k| < min(N, size) / 2`` are kept (Nyquist modes are dropped), so a band-limited field is
    reproduced exactly and point values are preserved in the sense of trigonometric interpolation.

    Shapes:
        x: ``(..., N, ..., N)`` (last ``dims`` axes equal); returns ``(..., size, ..., size)``.
    """
    n = x.shape[-1]
    if any(s != n for s in x.shape[-dims:]):
        raise ValueError(f"spectral_resample needs equal spatial sizes, got {tuple(x.shape[-dims:])}")
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    axes = tuple(range(-dims, 0))
    xh = torch.fft.fftn(x, dim=axes)
    keep = (min(n, size) + 1) // 2  # modes 0..keep-1 and -(keep-1)..-1
    idx_src = _kept_indices(n, keep, x.device)
    idx_dst = _kept_indices(size, keep, x.device)
    out = xh.new_zeros(x.shape[:-dims] + (size,) * dims)
    sub = xh
    for ax in axes:
        sub = sub.index_select(ax, idx_src)
    index = tuple([Ellipsis] + [idx_dst.reshape((-1,) + (1,) * (dims - 1 - j)) for j in range(dims)])
    out[index] = sub
    return torch.fft.ifftn(out, dim=axes).real * (size / n) ** dims


def _kept_indices(n: int, keep: int, device) -> Tensor:
    """FFT indices of the modes ``0..keep-1`` and ``-(keep-1)..-1`` of an ``n``-point transform."""
    pos = torch.arange(keep, device=device)
    neg = torch.arange(n - keep + 1, n, device=device)
    return torch.cat([pos, neg])


def periodic_grid(n: int, dims: int, *, device=None, dtype=torch.float64) -> tuple[Tensor, ...]:
    """Coordinates ``x_i = i / n`` of the periodic grid on ``[0, 1)^dims`` (``indexing='ij'``).

    Shapes:
        returns ``dims`` tensors of shape ``(n,) * dims``.
    """
    x = torch.arange(n, device=device, dtype=dtype) / n
    return torch.meshgrid(*([x] * dims), indexing="ij")


TWO_PI = 2.0 * math.pi
