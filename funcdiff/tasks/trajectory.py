"""Burgers shocks and baselines for whole-trajectory forecasts (WDNO, Hu, Wang et al., ICLR 2025).

The trajectory kind itself -- coder, coefficient noise, :class:`~funcdiff.kinds.trajectory.TrajectoryDiffusion`,
the guidance term on inverse-transformed frames and the forecast step -- lives in :mod:`funcdiff.kinds.trajectory`
(``TrajectoryDiffusion`` and ``InverseTransformTerm`` imported from here still work, with a DeprecationWarning).
Here: where a shock is, how far two shocks are apart, and the advected initial state as a baseline.
"""

from __future__ import annotations

import torch
from torch import Tensor

from funcdiff.utils import moved_attribute

_MOVED = {"TrajectoryDiffusion": "funcdiff.kinds.trajectory", "InverseTransformTerm": "funcdiff.kinds.trajectory"}


def __getattr__(name: str):
    return moved_attribute(__name__, name, _MOVED)


# ------------------------------------------------------------------------------------------ shocks (1-D)
def shock_position(u: Tensor) -> Tensor:
    """Position of the steepest descent of a 1-D periodic field on the grid x_i = i/N (the shock of Burgers'
    equation, where u_x is most negative): the midpoint of the cell with the most negative forward difference.

    Shapes: u (..., N) -> (...), in domain units [0, 1).
    """
    n = u.shape[-1]
    step = torch.roll(u, -1, dims=-1) - u
    return (step.argmin(-1).to(torch.float64) + 0.5) / n


def periodic_distance(a: Tensor, b: Tensor) -> Tensor:
    """Distance on the unit circle between positions in [0, 1). Shapes: broadcastable -> broadcast."""
    d = (a - b).abs() % 1.0
    return torch.minimum(d, 1.0 - d)


def shock_error(pred: Tensor, truth: Tensor) -> Tensor:
    """Mean periodic distance between the shock positions (:func:`shock_position`) of ``pred`` and ``truth``.

    Shapes: pred, truth (..., N) (broadcastable) -> scalar, domain units.
    """
    return periodic_distance(shock_position(pred), shock_position(truth)).mean()


def advected_initial_state(initial: Tensor, times: Tensor) -> Tensor:
    """The baseline of a Burgers trajectory: the initial state carried by its mean velocity, u0(x - ū t) (ū is
    conserved by Burgers' equation on the periodic interval), shifted exactly in Fourier space.

    Shapes: initial (..., N) on x_i = i/N, times (T,) -> (..., T, N).
    """
    n = initial.shape[-1]
    k = torch.fft.rfftfreq(n, d=1.0 / n, dtype=torch.float64)
    mean = initial.double().mean(-1, keepdim=True)  # (..., 1)
    shift = mean.unsqueeze(-1) * times.double().reshape(-1, 1)  # (..., T, 1)
    spectrum = torch.fft.rfft(initial.double(), dim=-1).unsqueeze(-2)  # (..., 1, K)
    moved = torch.fft.irfft(spectrum * torch.exp(-2j * torch.pi * k * shift), n=n, dim=-1)
    return moved.to(initial.dtype)


__all__ = ["advected_initial_state", "periodic_distance", "shock_error", "shock_position"]
