"""Elliptic problems on the unit square with ``u = 0`` on the boundary: Darcy, Poisson and Helmholtz.

Grid convention (as in the FNO Darcy data): ``N x N`` nodes *including* the boundary,
``x_i = i / (N - 1)``, ``i = 0 .. N - 1``, spacing ``h = 1 / (N - 1)``; x along axis -2, y along axis -1.
Unknowns are the ``(N - 2)^2`` interior nodes; returned solutions carry zeros on the boundary nodes.

* Darcy ``-div(a grad u) = f``: 5-point finite volumes with the harmonic mean of ``a`` on cell faces, assembled in
  scipy.sparse and solved with a sparse LU per sample (second order for smooth ``a``).
* Poisson ``Lap u = a`` and Helmholtz ``Lap u + k^2 u = a``: the 5-point Laplacian, diagonalised exactly by the
  type-I discrete sine transform (implemented with torch FFTs, so it runs batched on any device).

The residuals use the same stencils, so the solver output has a residual at round-off level and a smooth exact
solution has an ``O(h^2)`` residual. Residuals are pointwise (units of ``f`` or ``a``) and zero on the boundary.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import Tensor

from funcdiff.pde._common import check_field, check_square

AVERAGINGS = ("harmonic", "arithmetic")


def node_grid(resolution: int, *, device=None, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """Node coordinates ``x_i = i / (N - 1)`` of ``[0, 1]^2`` (``indexing='ij'``).

    Shapes:
        returns two ``(N, N)`` tensors.
    """
    x = torch.linspace(0.0, 1.0, resolution, device=device, dtype=dtype)
    return torch.meshgrid(x, x, indexing="ij")


def _check_coefficient(a: Tensor, name: str = "a") -> int:
    check_field(a, name, 2)
    n = check_square(a, name)
    if not bool((a > 0).all()):
        raise ValueError(f"{name} must be strictly positive everywhere, min is {float(a.min()):.3g}")
    return n


def _face_coefficients(a: Tensor, averaging: str = "harmonic") -> tuple[Tensor, Tensor]:
    """Face values of ``a`` between neighbouring nodes along x and y.

    Shapes:
        a: ``(..., N, N)``; returns ``(..., N - 1, N)`` (x faces) and ``(..., N, N - 1)`` (y faces).
    """
    if averaging == "harmonic":
        ax = 2 * a[..., 1:, :] * a[..., :-1, :] / (a[..., 1:, :] + a[..., :-1, :])
        ay = 2 * a[..., :, 1:] * a[..., :, :-1] / (a[..., :, 1:] + a[..., :, :-1])
    elif averaging == "arithmetic":
        ax = 0.5 * (a[..., 1:, :] + a[..., :-1, :])
        ay = 0.5 * (a[..., :, 1:] + a[..., :, :-1])
    else:
        raise ValueError(f"unknown averaging {averaging!r}; valid: {', '.join(AVERAGINGS)}")
    return ax, ay


def _darcy_matrix(a: np.ndarray) -> scipy.sparse.csc_matrix:
    """Sparse FV matrix of ``-div(a grad .)`` on the interior nodes (row-major over ``(i, j)``), float64."""
    n = a.shape[0]
    m = n - 2
    h2 = (n - 1) ** 2
    ax, ay = _face_coefficients(torch.from_numpy(a))
    ax, ay = ax.numpy() * h2, ay.numpy() * h2
    west, east = ax[:-1, 1:-1], ax[1:, 1:-1]  # faces (i-1/2, j), (i+1/2, j) of interior nodes, (m, m)
    south, north = ay[1:-1, :-1], ay[1:-1, 1:]
    idx = np.arange(m * m).reshape(m, m)
    rows, cols, vals = [idx.ravel()], [idx.ravel()], [(west + east + south + north).ravel()]
    for coeff, src, dst in (
        (east[:-1, :], idx[:-1, :], idx[1:, :]),
        (west[1:, :], idx[1:, :], idx[:-1, :]),
        (north[:, :-1], idx[:, :-1], idx[:, 1:]),
        (south[:, 1:], idx[:, 1:], idx[:, :-1]),
    ):
        rows.append(src.ravel())
        cols.append(dst.ravel())
        vals.append(-coeff.ravel())
    return scipy.sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m * m, m * m)
    )


def solve_darcy(a: Tensor, f: float | Tensor = 1.0) -> Tensor:
    """Solve ``-div(a grad u) = f`` with ``u = 0`` on the boundary of the unit square (sparse LU, float64 inside).

    Shapes:
        a: ``(B, 1, N, N)`` > 0 at the nodes; f: a number or broadcastable to ``(B, 1, N, N)``;
        returns ``(B, 1, N, N)`` in ``a``'s dtype and device, zero on the boundary nodes.
    """
    n = _check_coefficient(a)
    rhs = _broadcast_source(f, a)
    a64 = a.detach().to("cpu", torch.float64).numpy()
    rhs64 = rhs.detach().to("cpu", torch.float64).numpy()
    u = np.zeros_like(a64)
    for b in range(a64.shape[0]):
        matrix = _darcy_matrix(a64[b, 0])
        u[b, 0, 1:-1, 1:-1] = scipy.sparse.linalg.spsolve(matrix, rhs64[b, 0, 1:-1, 1:-1].ravel()).reshape(n - 2, n - 2)
    return torch.from_numpy(u).to(device=a.device, dtype=a.dtype)


def _broadcast_source(f: float | Tensor, like: Tensor) -> Tensor:
    """``f`` as a finite tensor of ``like``'s shape; ValueError if it does not broadcast."""
    f = torch.as_tensor(f, dtype=like.dtype, device=like.device)
    try:
        f = f.expand_as(like) if f.ndim else f.expand(like.shape)
    except RuntimeError as err:
        raise ValueError(f"f must broadcast to {tuple(like.shape)}, got shape {tuple(f.shape)}") from err
    if not bool(torch.isfinite(f).all()):
        raise ValueError("f contains NaN or infinite values")
    return f


def darcy_operator(a: Tensor, u: Tensor, averaging: str = "harmonic") -> Tensor:
    """Discrete ``-div(a grad u)`` at the interior nodes (zero on the boundary); differentiable in ``a`` and ``u``.

    Shapes:
        a, u: ``(B, 1, N, N)``; returns ``(B, 1, N, N)``.
    """
    n = u.shape[-1]
    ax, ay = _face_coefficients(a, averaging)
    gx = ax * (u[..., 1:, :] - u[..., :-1, :])  # flux across x faces (times h)
    gy = ay * (u[..., :, 1:] - u[..., :, :-1])
    div = (gx[..., 1:, 1:-1] - gx[..., :-1, 1:-1]) + (gy[..., 1:-1, 1:] - gy[..., 1:-1, :-1])
    return torch.nn.functional.pad(-div * (n - 1) ** 2, (1, 1, 1, 1))


def darcy_residual(a: Tensor, u: Tensor, f: float | Tensor = 1.0, averaging: str = "harmonic") -> Tensor:
    """Interior residual ``-div(a grad u) - f`` of the Darcy equation with the solver's stencil; zero on the boundary.

    Differentiable in ``a`` and ``u``. Harmonic face averaging needs ``a > 0``; pass ``averaging="arithmetic"`` for
    coefficients that may be non-positive (e.g. noisy iterates in guided sampling). Pair with
    :func:`dirichlet_residual` for the boundary condition.

    Shapes:
        a, u: ``(B, 1, N, N)``; f: number or broadcastable; returns ``(B, 1, N, N)`` (units of ``f``).
    """
    check_field(u, "u", 2)
    n = check_square(u, "u")
    if averaging == "harmonic":
        _check_coefficient(a)
    else:
        check_field(a, "a", 2)
    if a.shape[-2:] != (n, n):
        raise ValueError(f"a and u must share the grid, got {tuple(a.shape)} and {tuple(u.shape)}")
    return _mask_interior(darcy_operator(a, u, averaging) - _broadcast_source(f, u))


def laplacian_5point(u: Tensor) -> Tensor:
    """5-point Laplacian at the interior nodes with spacing ``1 / (N - 1)``; zero on the boundary.

    Shapes:
        u: ``(..., N, N)``; returns ``(..., N, N)``.
    """
    n = u.shape[-1]
    c = u[..., 1:-1, 1:-1]
    lap = u[..., 2:, 1:-1] + u[..., :-2, 1:-1] + u[..., 1:-1, 2:] + u[..., 1:-1, :-2] - 4 * c
    return torch.nn.functional.pad(lap * (n - 1) ** 2, (1, 1, 1, 1))


def poisson_residual(a: Tensor, u: Tensor) -> Tensor:
    """Interior residual ``Lap_h u - a`` of the Poisson problem; differentiable; zero on the boundary.

    Shapes:
        a, u: ``(B, 1, N, N)``; returns ``(B, 1, N, N)`` (units of ``a``).
    """
    return helmholtz_residual(a, u, 0.0)


def helmholtz_residual(a: Tensor, u: Tensor, k: float = 1.0) -> Tensor:
    """Interior residual ``Lap_h u + k^2 u - a`` of the Helmholtz problem; differentiable; zero on the boundary.

    Shapes:
        a, u: ``(B, 1, N, N)``; returns ``(B, 1, N, N)`` (units of ``a``).
    """
    _check_pair(a, u)
    return _mask_interior(laplacian_5point(u) + float(k) ** 2 * u - a)


def dirichlet_residual(u: Tensor) -> Tensor:
    """Boundary-condition residual: ``u`` on the boundary nodes, zero inside.

    Shapes:
        u: ``(B, 1, N, N)``; returns ``(B, 1, N, N)``.
    """
    check_field(u, "u", 2)
    check_square(u, "u")
    return u - _mask_interior(u)


def _mask_interior(r: Tensor) -> Tensor:
    return torch.nn.functional.pad(r[..., 1:-1, 1:-1], (1, 1, 1, 1))


def _check_pair(a: Tensor, u: Tensor) -> int:
    check_field(a, "a", 2)
    check_field(u, "u", 2)
    n = check_square(u, "u")
    if a.shape[-2:] != u.shape[-2:]:
        raise ValueError(f"a and u must share the grid, got {tuple(a.shape)} and {tuple(u.shape)}")
    return n


def dst1(x: Tensor, dim: int = -1) -> Tensor:
    """Type-I discrete sine transform ``X_k = sum_j x_j sin(pi j k / (n + 1))``, ``j, k = 1 .. n``, via an FFT.

    Its own inverse up to ``2 / (n + 1)``. Shapes: ``x`` any; returns the same shape.
    """
    x = x.movedim(dim, -1)
    zero = torch.zeros_like(x[..., :1])
    odd = torch.cat([zero, x, zero, -x.flip(-1)], dim=-1)
    out = -0.5 * torch.fft.rfft(odd, dim=-1).imag[..., 1 : x.shape[-1] + 1]
    return out.movedim(-1, dim)


def solve_helmholtz(a: Tensor, k: float = 1.0) -> Tensor:
    """Solve ``Lap_h u + k^2 u = a`` (5-point Laplacian) with ``u = 0`` on the boundary, exactly, by DST-I.

    Raises ``ValueError`` if ``k^2`` is (numerically) a Dirichlet eigenvalue of the discrete Laplacian.

    Shapes:
        a: ``(B, 1, N, N)`` at the nodes (its boundary values are ignored); returns ``(B, 1, N, N)``.
    """
    check_field(a, "a", 2)
    n = check_square(a, "a")
    m = n - 2
    p = torch.arange(1, m + 1, device=a.device, dtype=torch.float64)
    eig = -4.0 * (n - 1) ** 2 * torch.sin(torch.pi * p / (2 * (n - 1))) ** 2
    denom = eig[:, None] + eig[None, :] + float(k) ** 2
    if bool((denom.abs() < 1e-8 * eig.abs().max()).any()):
        raise ValueError(
            f"k^2 = {float(k) ** 2} is a Dirichlet eigenvalue of the discrete Laplacian; no unique solution"
        )
    rhs = a[..., 1:-1, 1:-1]
    coeff = dst1(dst1(rhs, -1), -2) / denom.to(a.dtype)
    u = dst1(dst1(coeff, -1), -2) * (2.0 / (m + 1)) ** 2
    return torch.nn.functional.pad(u, (1, 1, 1, 1))


def solve_poisson(a: Tensor) -> Tensor:
    """Solve ``Lap_h u = a`` with ``u = 0`` on the boundary (DST-I, exact for the 5-point stencil).

    Shapes:
        a: ``(B, 1, N, N)``; returns ``(B, 1, N, N)``.
    """
    return solve_helmholtz(a, 0.0)
