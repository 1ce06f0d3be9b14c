"""Metrics on fields (B, C, *S): relative L2 error, misclassification rate, power spectra.

Grid means are used throughout (not sums), so a metric means the same at every resolution.
"""

from __future__ import annotations

import math

import torch


def _check_same_shape(pred: torch.Tensor, truth: torch.Tensor) -> None:
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from truth shape {tuple(truth.shape)}")


def relative_l2(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Relative L2 error ||pred - truth|| / ||truth|| per sample and channel (the FunDPS metric).

    Shapes: pred, truth (B, C, *S) -> (B, C).
    """
    _check_same_shape(pred, truth)
    dims = tuple(range(2, pred.ndim))
    return torch.linalg.vector_norm(pred - truth, dim=dims) / torch.linalg.vector_norm(truth, dim=dims).clamp_min(1e-30)


def misclassification_rate(pred: torch.Tensor, truth: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fraction of grid points on the wrong side of ``threshold`` (binary fields, e.g. the Darcy coefficient).

    Shapes: pred, truth (B, C, *S) -> (B, C).
    """
    _check_same_shape(pred, truth)
    dims = tuple(range(2, pred.ndim))
    return ((pred > threshold) != (truth > threshold)).float().mean(dims)


def radial_power_spectrum(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially (shell-) averaged power spectrum of periodic fields on [0, 1)^d.

    Power of mode k is |x̂_k|² with x̂ = FFT(x)/N (so a unit-amplitude cosine has power 1/4 in each of ±k);
    shells are |k| rounded to the nearest integer, summed over the shell, averaged over batch and channels,
    up to the largest wavenumber resolved in every direction.

    Shapes: x (B, C, *S) -> (wavenumbers (K,), power (K,)), K = min(S) // 2 + 1.
    """
    dims = tuple(range(2, x.ndim))
    power = (torch.fft.fftn(x.double(), dim=dims, norm="forward").abs() ** 2).mean((0, 1))
    k2 = torch.zeros(x.shape[2:], dtype=torch.float64, device=x.device)
    for axis, n in enumerate(x.shape[2:]):
        view = [1] * len(dims)
        view[axis] = n
        k2 = k2 + (torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64, device=x.device) ** 2).reshape(view)
    shells = k2.sqrt().round().long().flatten()
    n_shells = min(x.shape[2:]) // 2 + 1
    spectrum = torch.bincount(shells, power.flatten(), minlength=n_shells)[:n_shells]
    return torch.arange(n_shells, dtype=torch.float64), spectrum


def log_spectrum_distance(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Root-mean-square difference of log10 radial power spectra, ignoring the mean (k = 0) shell.

    Shapes: x (B, C, *S), reference (B', C, *S') -> float; compared on the shells both resolve.
    """
    _, p = radial_power_spectrum(x)
    _, q = radial_power_spectrum(reference)
    n = min(len(p), len(q))
    diff = torch.log10(p[1:n].clamp_min(1e-30)) - torch.log10(q[1:n].clamp_min(1e-30))
    return math.sqrt(float((diff**2).mean()))
