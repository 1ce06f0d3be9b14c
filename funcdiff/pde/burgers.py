"""1-D viscous Burgers ``u_t + (u^2 / 2)_x = nu u_xx (+ f(x))`` on the periodic interval ``[0, 1)`` (grid ``x_i = i / N``),
optionally with a time-independent forcing ``f`` (the forced setting of WDNO's Burgers experiments).

Discretisation: Fourier pseudo-spectral in space (2/3 rule on the flux), ETDRK4 in time with the contour-integral
coefficients of Kassam & Trefethen, "Fourth-order time-stepping for stiff PDEs", SIAM J. Sci. Comput. 26 (2005),
Eq. (2.5) and Sec. 3. The step of each sample is CFL-limited by its initial ``max|u|`` (``cfl = 1`` is stable:
the explicit RK4-type stages allow ``|u| k_max dt <~ 2.8`` with ``k_max = 2 pi N / 3`` after de-aliasing); by the
maximum principle ``max|u|`` never grows, so the step stays CFL-stable for the whole run. With a forcing ``f``,
``max|u(t)| <= max|u0| + t max|f|`` (at an extremum ``u_x = 0`` and ``nu u_xx`` has the restoring sign), so the
forced step is CFL-limited by that bound at the last snapshot time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from funcdiff.pde._common import check_field, check_nonnegative, check_positive, check_times, trapezoid_residual
from funcdiff.pde.spectral import TWO_PI, dealias_mask, integer_wavenumbers

CONTOUR_POINTS = 32


def etdrk4_coefficients(linear: Tensor, h: Tensor) -> tuple[Tensor, ...]:
    """ETDRK4 coefficients ``(E, E2, Q, f1, f2, f3)`` for the diagonal linear symbol ``linear`` and steps ``h``.

    Computed in float64 by the mean over ``CONTOUR_POINTS`` points of a unit circle around each ``h L``
    (Kassam & Trefethen 2005, Sec. 3), which avoids the cancellation of the direct formulas.

    Shapes:
        linear: ``(K,)``; h: ``(B, 1)``; returns six ``(B, K)`` float64 tensors.
    """
    hl = h.to(torch.float64) * linear.to(torch.float64)  # (B, K)
    j = torch.arange(1, CONTOUR_POINTS + 1, dtype=torch.float64, device=linear.device)
    roots = torch.exp(1j * math.pi * (j - 0.5) / CONTOUR_POINTS)
    lr = hl[..., None] + roots  # (B, K, M)
    h = h.to(torch.float64)
    q = h * ((torch.exp(lr / 2) - 1) / lr).mean(-1).real
    f1 = h * ((-4 - lr + torch.exp(lr) * (4 - 3 * lr + lr**2)) / lr**3).mean(-1).real
    f2 = h * ((2 + lr + torch.exp(lr) * (-2 + lr)) / lr**3).mean(-1).real
    f3 = h * ((-4 - 3 * lr - lr**2 + torch.exp(lr) * (4 - lr)) / lr**3).mean(-1).real
    return torch.exp(hl), torch.exp(hl / 2), q, f1, f2, f3


class _Burgers:
    """Spectral symbols of one grid: linear part ``-nu (2 pi k)^2`` and de-aliased flux derivative."""

    def __init__(self, n: int, nu: float, device, dtype, forcing: Tensor | None = None) -> None:
        k = integer_wavenumbers(n, real=True, device=device, dtype=dtype)
        self.n = n
        self.linear = -nu * (TWO_PI * k) ** 2
        self.flux_symbol = -0.5j * TWO_PI * k * dealias_mask(n, 1, device=device)
        self.forcing_hat = None if forcing is None else torch.fft.rfft(forcing.to(dtype))  # (B, 1, K)

    def nonlinear(self, v: Tensor) -> Tensor:
        """``-(u^2 / 2)_x (+ f)`` in Fourier space for the Fourier coefficients ``v``."""
        u = torch.fft.irfft(v, n=self.n)
        out = self.flux_symbol * torch.fft.rfft(u * u)
        return out if self.forcing_hat is None else out + self.forcing_hat

    def step(self, v: Tensor, c: tuple[Tensor, ...]) -> Tensor:
        """One ETDRK4 step (Kassam & Trefethen 2005, Eq. 2.5); ``c`` from :func:`etdrk4_coefficients`."""
        e, e2, q, f1, f2, f3 = c
        nv = self.nonlinear(v)
        a = e2 * v + q * nv
        na = self.nonlinear(a)
        b = e2 * v + q * na
        nb = self.nonlinear(b)
        cc = e2 * a + q * (2 * nb - nv)
        nc = self.nonlinear(cc)
        return e * v + nv * f1 + 2 * (na + nb) * f2 + nc * f3


def solve_burgers(
    u0: Tensor,
    times: Sequence[float] | Tensor,
    *,
    nu: float = 1e-2,
    cfl: float = 1.0,
    max_dt: float = 1e-2,
    dt: float | None = None,
    forcing: Tensor | None = None,
) -> Tensor:
    """Integrate ``u0`` with ETDRK4 and return snapshots at ``times`` (``t = 0`` is ``u0``).

    Each sample steps with ``min(cfl * (1/N) / max|u0|, max_dt)`` (or the fixed ``dt``), shortened so that a whole
    number of equal steps fills every interval between snapshots. Float32 and float64, CPU and CUDA.
    ``forcing``: a time-independent source ``f(x)`` added to the right-hand side (part of the explicit stages of
    ETDRK4); the speed in the step rule is then ``max|u0| + t_last max|f|`` (module docstring). ``None`` (default)
    is the unforced solver, unchanged.

    Shapes:
        u0: ``(B, 1, N)`` (length/time); times: ``(T,)``; forcing: ``(B, 1, N)`` (length/time^2);
        returns ``(B, 1, T, N)``.
    """
    check_field(u0, "u0", 1)
    if u0.shape[-1] < 4:
        raise ValueError(f"u0 needs at least 4 grid points, got {u0.shape[-1]}")
    nu = check_nonnegative(nu, "nu")
    check_positive(cfl, "cfl")
    check_positive(max_dt, "max_dt")
    targets = check_times(times)
    n = u0.shape[-1]
    if forcing is not None and forcing.shape != u0.shape:
        raise ValueError(f"forcing must have the shape of u0 {tuple(u0.shape)}, got {tuple(forcing.shape)}")
    model = _Burgers(n, nu, u0.device, u0.dtype, forcing)
    if dt is None:
        speed = u0.abs().flatten(1).amax(1).to(torch.float64).clamp_min(1e-12)
        if forcing is not None:
            speed = speed + max(targets) * forcing.abs().flatten(1).amax(1).to(torch.float64)
        base = (cfl / (n * speed)).clamp(max=max_dt)[:, None]  # (B, 1)
    else:
        base = torch.full((u0.shape[0], 1), check_positive(dt, "dt"), dtype=torch.float64, device=u0.device)
    v = torch.fft.rfft(u0)
    frames, t_prev, plans = [], 0.0, {}
    for target in targets:
        if target > t_prev:
            interval = target - t_prev
            if interval not in plans:  # equally spaced frames reuse one set of coefficients
                plans = {interval: _plan(model, interval, base, v.real.dtype)}
            v = _advance(model, v, *plans[interval])
        frames.append(torch.fft.irfft(v, n=n))
        t_prev = target
    return torch.stack(frames, dim=2)


def _plan(model: _Burgers, interval: float, base: Tensor, dtype: torch.dtype) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Step counts ``ceil(interval / base)`` ``(B, 1)`` and their ETDRK4 coefficients (each ``(B, 1, K)``)."""
    steps = torch.ceil(interval / base - 1e-9).clamp_min(1)  # (B, 1)
    coeffs = etdrk4_coefficients(model.linear, interval / steps)
    return steps, tuple(c.to(dtype)[:, None, :] for c in coeffs)


def _advance(model: _Burgers, v: Tensor, steps: Tensor, coeffs: tuple[Tensor, ...]) -> Tensor:
    """Advance the spectral state ``v`` ``(B, 1, K)`` by ``steps`` ``(B, 1)`` ETDRK4 steps of each sample."""
    active_until = steps.to(torch.int64).reshape(-1, 1, 1)
    for i in range(int(steps.max())):
        v_new = model.step(v, coeffs)
        v = torch.where(active_until > i, v_new, v)
    if not bool(torch.isfinite(v).all()):
        raise RuntimeError("Burgers solve diverged; lower cfl/max_dt or raise nu")
    return v


def burgers_rhs(u: Tensor, nu: float, forcing: Tensor | None = None) -> Tensor:
    """Right-hand side ``-(u^2 / 2)_x + nu u_xx (+ f)`` by spectral derivatives (no de-aliasing); differentiable.

    Shapes:
        u: ``(..., N)``; forcing: broadcastable to ``u``; returns ``(..., N)`` (length/time^2).
    """
    n = u.shape[-1]
    ik = 1j * TWO_PI * integer_wavenumbers(n, real=True, device=u.device, dtype=u.dtype)
    flux = torch.fft.irfft(ik * torch.fft.rfft(0.5 * u * u), n=n)
    out = -flux + nu * torch.fft.irfft(ik**2 * torch.fft.rfft(u), n=n)
    return out if forcing is None else out + forcing


def burgers_residual(u_traj: Tensor, times: Sequence[float] | Tensor, nu: float,
                     forcing: Tensor | None = None) -> Tensor:
    """Residual of viscous Burgers along a trajectory: spectral in space, trapezoidal in time (second order).

    Differentiable in ``u_traj``; pointwise, so its size is resolution independent
    (reduce with :func:`funcdiff.pde.mean_square`).

    Shapes:
        u_traj: ``(B, 1, T, N)``; times: ``(T,)``; forcing (time-independent): ``(B, 1, N)``;
        returns ``(B, 1, T - 1, N)``.
    """
    check_field(u_traj, "u_traj", 1, time_axis=True)
    nu = check_nonnegative(nu, "nu")
    f = None if forcing is None else forcing.unsqueeze(-2)
    return trapezoid_residual(u_traj, times, lambda u: burgers_rhs(u, nu, f))


def cole_hopf_solution(
    x: Tensor, t: float, nu: float, amplitudes: Sequence[float] = (0.8,), offset: float = 1.0
) -> Tensor:
    """Exact Burgers solution ``u = -2 nu phi_x / phi`` from the heat solution
    ``phi = offset + sum_m b_m exp(-4 pi^2 m^2 nu t) cos(2 pi m x)`` (Cole-Hopf; needs ``phi > 0``).

    Shapes:
        x: any; returns the same shape.
    """
    phi, phi_x = torch.full_like(x, offset), torch.zeros_like(x)
    for m, b in enumerate(amplitudes, start=1):
        decay = b * math.exp(-4 * math.pi**2 * m**2 * nu * t)
        phi = phi + decay * torch.cos(TWO_PI * m * x)
        phi_x = phi_x - decay * TWO_PI * m * torch.sin(TWO_PI * m * x)
    return -2 * nu * phi_x / phi
