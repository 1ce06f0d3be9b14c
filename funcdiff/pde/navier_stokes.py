"""2-D incompressible Navier-Stokes in vorticity form on the periodic unit square.

``w_t + u . grad w = nu Lap w - drag w + f``, ``u = (psi_y, -psi_x)``, ``-Lap psi = w``; grid ``x_i = i / N`` on
``[0, 1)^2`` with x along axis -2 and y along axis -1 (``indexing='ij'``), as in the FNO data generator
(Li et al., "Fourier Neural Operator", ICLR 2021, Sec. 5.3).

Discretisation: Fourier pseudo-spectral in space with the 2/3 rule on the advection term; in time a
Crank-Nicolson / Heun predictor-corrector (second order; viscosity and drag implicit, advection and forcing
explicit) with a per-sample CFL-limited adaptive step, so a sample's result does not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from funcdiff.pde._common import (
    check_field,
    check_nonnegative,
    check_positive,
    check_square,
    check_times,
    trapezoid_residual,
)
from funcdiff.pde.spectral import TWO_PI, dealias_mask, periodic_grid, wavenumber_grid_2d

FORCINGS = ("fno", "kolmogorov", "none")


def make_forcing(
    name: str | Tensor | None, resolution: int, *, wavenumber: int = 4, amplitude: float = 1.0,
    device=None, dtype=torch.float64,
) -> Tensor:
    """Vorticity forcing ``f(x, y)`` on the ``resolution^2`` periodic grid.

    * ``"fno"``: ``0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))`` (FNO / DiffusionPDE benchmark);
    * ``"kolmogorov"``: the curl of the body force ``amplitude * sin(2 pi wavenumber y) e_x``, i.e.
      ``f = -2 pi wavenumber * amplitude * cos(2 pi wavenumber y)``;
    * ``"none"`` or ``None``: zero; a tensor is used as given (broadcast to the grid).

    Shapes:
        returns ``(resolution, resolution)`` (or the given tensor's shape); vorticity per unit time.
    """
    if isinstance(name, Tensor):
        return name.to(device=device, dtype=dtype)
    x, y = periodic_grid(resolution, 2, device=device, dtype=dtype)
    if name == "fno":
        return 0.1 * (torch.sin(TWO_PI * (x + y)) + torch.cos(TWO_PI * (x + y)))
    if name == "kolmogorov":
        return -TWO_PI * wavenumber * amplitude * torch.cos(TWO_PI * wavenumber * y)
    if name is None or name == "none":
        return torch.zeros_like(x)
    raise ValueError(f"unknown forcing {name!r}; valid: {', '.join(FORCINGS)} or a tensor")


def velocity_from_vorticity(w: Tensor) -> tuple[Tensor, Tensor]:
    """Velocity ``(u, v) = (psi_y, -psi_x)`` with ``-Lap psi = w`` (mean of ``w`` ignored).

    Shapes:
        w: ``(..., N, N)``; returns two ``(..., N, N)`` tensors (length per unit time).
    """
    n = w.shape[-1]
    kx, ky = wavenumber_grid_2d(n, device=w.device, dtype=w.dtype)
    psi_hat = torch.fft.rfft2(w) / _neg_laplacian_symbol(kx, ky)
    u = torch.fft.irfft2(1j * TWO_PI * ky * psi_hat, s=(n, n))
    v = torch.fft.irfft2(-1j * TWO_PI * kx * psi_hat, s=(n, n))
    return u, v


def kinetic_energy(w: Tensor) -> Tensor:
    """Domain-averaged kinetic energy ``<|u|^2> / 2`` of the flow with vorticity ``w``.

    Shapes:
        w: ``(..., N, N)``; returns ``(...)``.
    """
    u, v = velocity_from_vorticity(w)
    return 0.5 * (u**2 + v**2).mean(dim=(-2, -1))


def _neg_laplacian_symbol(kx: Tensor, ky: Tensor) -> Tensor:
    """``4 pi^2 |k|^2`` with the zero mode set to 1 (so dividing by it leaves the mean untouched)."""
    sym = (TWO_PI**2) * (kx**2 + ky**2)
    return torch.where(sym == 0, torch.ones_like(sym), sym)


class _Operators:
    """Spectral symbols of one grid size, dtype and device (built once per solve)."""

    def __init__(self, n: int, nu: float, drag: float, forcing: Tensor, device, dtype) -> None:
        kx, ky = wavenumber_grid_2d(n, device=device, dtype=dtype)
        self.n = n
        self.ikx, self.iky = 1j * TWO_PI * kx, 1j * TWO_PI * ky
        self.inv_lap = 1.0 / _neg_laplacian_symbol(kx, ky)  # psi_hat = w_hat * inv_lap
        self.linear = -nu * (TWO_PI**2) * (kx**2 + ky**2) - drag
        self.mask = dealias_mask(n, 2, device=device)
        self.f_hat = torch.fft.rfft2(forcing)

    def rhs(self, w_hat: Tensor) -> tuple[Tensor, Tensor]:
        """Explicit part ``-u . grad w + f`` in Fourier space and the per-sample max speed ``(B,)``."""
        s = (self.n, self.n)
        psi_hat = w_hat * self.inv_lap
        u = torch.fft.irfft2(self.iky * psi_hat, s=s)
        v = torch.fft.irfft2(-self.ikx * psi_hat, s=s)
        wx = torch.fft.irfft2(self.ikx * w_hat, s=s)
        wy = torch.fft.irfft2(self.iky * w_hat, s=s)
        adv_hat = torch.fft.rfft2(u * wx + v * wy) * self.mask
        speed = torch.maximum(u.abs().flatten(1).amax(1), v.abs().flatten(1).amax(1))
        return self.f_hat - adv_hat, speed


def _cn_heun_step(ops: _Operators, w_hat: Tensor, f0: Tensor, dt: Tensor) -> Tensor:
    """One Crank-Nicolson / Heun step (FNO scheme) with per-sample step ``dt`` of shape ``(B, 1, 1, 1)``."""
    explicit = (1.0 + 0.5 * dt * ops.linear) * w_hat
    implicit = 1.0 / (1.0 - 0.5 * dt * ops.linear)
    w_pred = (explicit + dt * f0) * implicit
    f1, _ = ops.rhs(w_pred)
    return (explicit + 0.5 * dt * (f0 + f1)) * implicit


def solve_navier_stokes(
    w0: Tensor,
    times: Sequence[float] | Tensor,
    *,
    nu: float = 1e-3,
    forcing: str | Tensor | None = "fno",
    drag: float = 0.0,
    cfl: float = 0.5,
    max_dt: float = 1e-2,
    dt: float | None = None,
    max_steps: int = 1_000_000,
) -> Tensor:
    """Integrate vorticity ``w0`` and return snapshots at ``times`` (``t = 0`` is ``w0``).

    The step of each sample is ``min(cfl * (1/N) / max|u|, max_dt)``, cut to land on every snapshot time;
    ``dt`` fixes it instead (for convergence studies). Float32 and float64, CPU and CUDA. Differentiable in
    ``w0`` by autograd through every step (the discrete adjoint; memory grows with the number of steps).

    Shapes:
        w0: ``(B, 1, N, N)`` (1/time); times: ``(T,)``; forcing: a name (see :func:`make_forcing`) or ``(N, N)``.
        returns ``(B, 1, T, N, N)``.
    """
    check_field(w0, "w0", 2)
    n = check_square(w0, "w0", min_size=4)
    nu, drag = check_nonnegative(nu, "nu"), check_nonnegative(drag, "drag")
    check_positive(cfl, "cfl")
    check_positive(max_dt, "max_dt")
    targets = check_times(times)
    f = make_forcing(forcing, n, device=w0.device, dtype=w0.dtype)
    if f.shape[-2:] != (n, n):
        raise ValueError(f"forcing must be an ({n}, {n}) field, got shape {tuple(f.shape)}")
    ops = _Operators(n, nu, drag, f, w0.device, w0.dtype)
    w_hat = torch.fft.rfft2(w0)
    t = torch.zeros(w0.shape[0], dtype=torch.float64, device=w0.device)
    frames, steps = [], 0
    for target in targets:
        while bool((target - t > 1e-12 * max(1.0, target)).any()):
            f0, speed = ops.rhs(w_hat)
            step = _step_size(speed, t, target, n, cfl, max_dt, dt)
            w_hat = _cn_heun_step(ops, w_hat, f0, step.to(w0.dtype).reshape(-1, 1, 1, 1))
            t, steps = t + step, steps + 1
            _check_progress(w_hat, steps, max_steps)
        frames.append(torch.fft.irfft2(w_hat, s=(n, n)))
    return torch.stack(frames, dim=2)


def _step_size(speed: Tensor, t: Tensor, target: float, n: int, cfl: float, max_dt: float, dt: float | None) -> Tensor:
    """Per-sample step ``(B,)`` in float64: CFL-limited (or fixed ``dt``), clipped to the next snapshot time."""
    if dt is None:
        limit = cfl / (n * speed.to(torch.float64).clamp_min(1e-12))
        step = limit.clamp(max=max_dt)
    else:
        step = torch.full_like(t, check_positive(dt, "dt"))
    return torch.minimum(step, (target - t).clamp_min(0.0))


def _check_progress(w_hat: Tensor, steps: int, max_steps: int) -> None:
    if steps % 50 == 0 and not bool(torch.isfinite(w_hat).all()):
        raise RuntimeError(f"Navier-Stokes solve diverged after {steps} steps; lower cfl/max_dt or raise nu")
    if steps > max_steps:
        raise RuntimeError(f"Navier-Stokes solve exceeded max_steps={max_steps}")


def navier_stokes_rhs(
    w: Tensor, nu: float, forcing: str | Tensor | None = "fno", drag: float = 0.0, *, dealias: bool = True
) -> Tensor:
    """Right-hand side ``-u . grad w + nu Lap w - drag w + f`` by spectral derivatives; differentiable in ``w``.

    With ``dealias`` the advection term gets the solver's 2/3-rule mask, so the residual is the solver's own
    semi-discretisation; without it the plain pseudo-spectral product is used.

    Shapes:
        w: ``(..., N, N)``; returns ``(..., N, N)`` (vorticity per unit time).
    """
    n = w.shape[-1]
    kx, ky = wavenumber_grid_2d(n, device=w.device, dtype=w.dtype)
    ikx, iky = 1j * TWO_PI * kx, 1j * TWO_PI * ky
    w_hat = torch.fft.rfft2(w)
    psi_hat = w_hat / _neg_laplacian_symbol(kx, ky)
    s = (n, n)
    u, v = torch.fft.irfft2(iky * psi_hat, s=s), torch.fft.irfft2(-ikx * psi_hat, s=s)
    wx, wy = torch.fft.irfft2(ikx * w_hat, s=s), torch.fft.irfft2(iky * w_hat, s=s)
    adv_hat = torch.fft.rfft2(u * wx + v * wy)
    if dealias:
        adv_hat = adv_hat * dealias_mask(n, 2, device=w.device)
    lin_hat = (-nu * (TWO_PI**2) * (kx**2 + ky**2) - drag) * w_hat
    f = make_forcing(forcing, n, device=w.device, dtype=w.dtype)
    return torch.fft.irfft2(lin_hat - adv_hat, s=s) + f


def navier_stokes_residual(
    w_traj: Tensor,
    times: Sequence[float] | Tensor,
    nu: float,
    forcing: str | Tensor | None = "fno",
    drag: float = 0.0,
    *,
    dealias: bool = True,
) -> Tensor:
    """Residual of the vorticity equation along a trajectory: spectral in space, trapezoidal in time.

    ``r_n = (w_{n+1} - w_n) / dt_n - (R(w_n) + R(w_{n+1})) / 2`` with ``R`` from :func:`navier_stokes_rhs`
    (exact grid spacing ``1/N``); second order in the frame spacing. Differentiable in ``w_traj``. Pointwise, so
    its size is resolution independent; reduce with :func:`funcdiff.pde.mean_square`. For a pair ``(w0, wT)``
    pass a two-frame trajectory (then the residual carries an ``O(T^2)`` time-discretisation error).

    Shapes:
        w_traj: ``(B, 1, T, N, N)``; times: ``(T,)``; returns ``(B, 1, T - 1, N, N)`` (1/time^2).
    """
    check_field(w_traj, "w_traj", 2, time_axis=True)
    n = check_square(w_traj, "w_traj", min_size=4)
    nu, drag = check_nonnegative(nu, "nu"), check_nonnegative(drag, "drag")
    f = make_forcing(forcing, n, device=w_traj.device, dtype=w_traj.dtype)
    return trapezoid_residual(w_traj, times, lambda w: navier_stokes_rhs(w, nu, f, drag, dealias=dealias))


def taylor_green_vorticity(resolution: int, *, amplitude: float = 1.0, device=None, dtype=torch.float64) -> Tensor:
    """Taylor-Green vortex ``w = amplitude * cos(2 pi x) cos(2 pi y)`` (an exact steady-shape solution).

    Unforced, it decays as ``exp(-8 pi^2 nu t)`` because advection vanishes identically.

    Shapes:
        returns ``(1, 1, resolution, resolution)``.
    """
    x, y = periodic_grid(resolution, 2, device=device, dtype=dtype)
    return (amplitude * torch.cos(TWO_PI * x) * torch.cos(TWO_PI * y))[None, None]

