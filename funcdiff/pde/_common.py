"""Input checks and small helpers shared by the solvers and residuals of :mod:`funcdiff.pde`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def check_field(x: Tensor, name: str, spatial_dims: int, *, time_axis: bool = False) -> None:
    """Raise ``ValueError`` unless ``x`` is a finite real ``(B, 1, [T,] *S)`` tensor with ``spatial_dims`` axes.

    Shapes:
        x: ``(B, 1, *S)`` or, with ``time_axis``, ``(B, 1, T, *S)``; ``len(S) == spatial_dims``.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    expected = 2 + int(time_axis) + spatial_dims
    layout = "(batch, 1, time, *spatial)" if time_axis else "(batch, 1, *spatial)"
    if x.ndim != expected or x.shape[1] != 1:
        raise ValueError(
            f"{name} must have shape {layout} with {spatial_dims} spatial axes and one channel, "
            f"got shape {tuple(x.shape)}"
        )
    if x.is_complex() or not x.is_floating_point():
        raise ValueError(f"{name} must be a real floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_square(x: Tensor, name: str, min_size: int = 3) -> int:
    """Return the side length of the square spatial grid of ``x`` (last two axes) or raise ``ValueError``."""
    n1, n2 = x.shape[-2], x.shape[-1]
    if n1 != n2 or n1 < min_size:
        raise ValueError(f"{name} must live on a square grid of at least {min_size} points, got {n1}x{n2}")
    return n1


def check_nonnegative(value: float, name: str) -> float:
    """Return ``float(value)`` or raise ``ValueError`` if it is negative or not finite."""
    value = float(value)
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite non-negative number, got {value}")
    return value


def check_positive(value: float, name: str) -> float:
    """Return ``float(value)`` or raise ``ValueError`` if it is not finite and strictly positive."""
    value = float(value)
    if not value > 0.0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return value


def check_times(times: Sequence[float] | Tensor) -> list[float]:
    """Return snapshot times as a list of floats; raise ``ValueError`` unless they are finite, >= 0 and sorted."""
    values = [float(t) for t in (times.tolist() if isinstance(times, Tensor) else times)]
    if not values:
        raise ValueError("times must contain at least one snapshot time")
    if any(not (t >= 0.0 and t < float("inf")) for t in values):
        raise ValueError(f"times must be finite and non-negative, got {values}")
    if any(b < a for a, b in zip(values[:-1], values[1:])):
        raise ValueError(f"times must be non-decreasing, got {values}")
    return values


def trapezoid_residual(traj: Tensor, times: Sequence[float] | Tensor, rhs: Callable[[Tensor], Tensor]) -> Tensor:
    """Trapezoidal-rule residual of ``du/dt = rhs(u)`` between consecutive frames of a trajectory.

    ``r_n = (u_{n+1} - u_n) / (t_{n+1} - t_n) - (rhs(u_n) + rhs(u_{n+1})) / 2``: second order in the frame spacing,
    differentiable in ``traj``.

    Shapes:
        traj: ``(B, 1, T, *S)``; times: ``(T,)`` strictly increasing; rhs maps ``(B, 1, T, *S)`` to the same shape.
        returns ``(B, 1, T - 1, *S)`` in units of ``u`` per unit time.
    """
    t = torch.as_tensor(times, dtype=traj.dtype, device=traj.device).reshape(-1)
    if t.numel() != traj.shape[2] or t.numel() < 2:
        raise ValueError(f"times must have one entry per frame (>= 2), got {t.numel()} for {traj.shape[2]} frames")
    dt = t[1:] - t[:-1]
    if not bool((dt > 0).all()):
        raise ValueError("times must be strictly increasing for a residual")
    dt = dt.reshape((1, 1, -1) + (1,) * (traj.ndim - 3))
    f = rhs(traj)
    return (traj[:, :, 1:] - traj[:, :, :-1]) / dt - 0.5 * (f[:, :, 1:] + f[:, :, :-1])


def mean_square(residual: Tensor, *, exclude_boundary: bool = False) -> Tensor:
    """Mean of ``residual**2`` over every axis but the batch axis: a resolution-independent residual size.

    With ``exclude_boundary`` the outermost ring of the last two axes is dropped first (Dirichlet problems on the
    node grid, whose residual is only defined at interior nodes).

    Shapes:
        residual: ``(B, ...)``; returns ``(B,)``.
    """
    if exclude_boundary:
        residual = residual[..., 1:-1, 1:-1]
    return residual.pow(2).flatten(1).mean(dim=1)


def draw_normal(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Standard normal float64 samples drawn on the generator's device (deterministic for a generator state)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float64)
