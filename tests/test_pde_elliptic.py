"""Darcy, Poisson and Helmholtz solvers and residuals: manufactured solutions at second order, exact identities."""

import math

import pytest
import scipy.fft
import torch

from funcdiff.pde import (
    darcy_residual,
    dirichlet_residual,
    helmholtz_residual,
    mean_square,
    node_grid,
    poisson_residual,
    sample_cosine_grf,
    solve_darcy,
    solve_helmholtz,
    solve_poisson,
    threshold_coefficient,
)
from funcdiff.pde.elliptic import dst1

F64 = torch.float64
PI = math.pi
SIZES = (17, 33, 65)



def _darcy_manufactured(n: int):
    """u = sin(pi x) sin(pi y), a = 1 + sin(2 pi x + 1) cos(2 pi y) / 2, f = -div(a grad u) (exact)."""
    x, y = node_grid(n)
    u = torch.sin(PI * x) * torch.sin(PI * y)
    a = 1 + 0.5 * torch.sin(2 * PI * x + 1) * torch.cos(2 * PI * y)
    a_x = PI * torch.cos(2 * PI * x + 1) * torch.cos(2 * PI * y)
    a_y = -PI * torch.sin(2 * PI * x + 1) * torch.sin(2 * PI * y)
    u_x, u_y = PI * torch.cos(PI * x) * torch.sin(PI * y), PI * torch.sin(PI * x) * torch.cos(PI * y)
    f = -a_x * u_x - a_y * u_y + 2 * PI**2 * a * u
    return a[None, None], u[None, None], f[None, None]


def _laplace_manufactured(n: int):
    """u = exp(x) sin(pi x) sin(2 pi y) and its exact Laplacian."""
    x, y = node_grid(n)
    u = torch.exp(x) * torch.sin(PI * x) * torch.sin(2 * PI * y)
    u_xx = torch.exp(x) * ((1 - PI**2) * torch.sin(PI * x) + 2 * PI * torch.cos(PI * x)) * torch.sin(2 * PI * y)
    return u[None, None], (u_xx - 4 * PI**2 * u)[None, None]


def _assert_second_order(errors: list[float]) -> None:
    ratios = [errors[i] / errors[i + 1] for i in range(len(errors) - 1)]
    assert all(3.7 < r < 4.3 for r in ratios), (errors, ratios)


def test_darcy_second_order_with_variable_coefficient():
    errors = []
    for n in SIZES:
        a, u, f = _darcy_manufactured(n)
        errors.append(float((solve_darcy(a, f) - u).abs().max()))
    _assert_second_order(errors)


def test_poisson_and_helmholtz_second_order():
    for k in (0.0, 3.0):
        errors = []
        for n in SIZES:
            u, lap = _laplace_manufactured(n)
            u_h = solve_poisson(lap) if k == 0 else solve_helmholtz(lap + k**2 * u, k)
            errors.append(float((u_h - u).abs().max()))
        _assert_second_order(errors)


def test_darcy_with_constant_coefficient_is_scaled_poisson():
    g = torch.Generator().manual_seed(0)
    f = sample_cosine_grf(2, 20, generator=g, dtype=F64)
    u = solve_darcy(torch.full_like(f, 4.0), f)
    assert torch.allclose(u, -solve_poisson(f) / 4.0, rtol=0, atol=1e-14)


def test_dst1_matches_scipy_and_is_an_involution():
    x = torch.randn(3, 9, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(dst1(x), torch.from_numpy(scipy.fft.dst(x.numpy(), type=1)) / 2, atol=1e-13)
    assert torch.allclose(dst1(dst1(x)) * 2 / 10, x, atol=1e-13)


def test_residuals_of_solutions_vanish_and_exact_solutions_converge():
    sizes_darcy, sizes_poisson = [], []
    for n in SIZES:
        a, u, f = _darcy_manufactured(n)
        assert float(darcy_residual(a, solve_darcy(a, f), f).abs().max()) < 1e-9 * float(f.abs().max())
        sizes_darcy.append(float(mean_square(darcy_residual(a, u, f), exclude_boundary=True).sqrt()))
        u2, lap = _laplace_manufactured(n)
        assert float(poisson_residual(lap, solve_poisson(lap)).abs().max()) < 1e-9 * float(lap.abs().max())
        r_helmholtz = helmholtz_residual(lap, solve_helmholtz(lap, 2.0), 2.0)
        assert float(r_helmholtz.abs().max()) < 1e-9 * float(lap.abs().max())
        sizes_poisson.append(float(mean_square(poisson_residual(lap, u2), exclude_boundary=True).sqrt()))
    _assert_second_order(sizes_darcy)
    _assert_second_order(sizes_poisson)
    a, u, f = _darcy_manufactured(33)
    wrong = float(mean_square(darcy_residual(a, u.transpose(-1, -2) ** 2, f), exclude_boundary=True).sqrt())
    assert wrong > 0.2 * float(mean_square(f).sqrt())
    assert float(dirichlet_residual(u).abs().max()) < 1e-12
    assert float(dirichlet_residual(u + 1.0)[..., 0, :].min()) > 0.99


def test_darcy_thresholded_coefficient_solution_is_positive_and_converges():
    """Piecewise-constant a in {3, 12}: a maximum principle (u > 0 inside for f = 1) and self-convergence."""
    g = torch.Generator().manual_seed(3)
    field = sample_cosine_grf(1, 129, generator=g, dtype=F64)
    a_fine = threshold_coefficient(field)
    u_fine = solve_darcy(a_fine)
    u_coarse = solve_darcy(a_fine[..., ::2, ::2])
    u_coarser = solve_darcy(a_fine[..., ::4, ::4])
    assert bool((u_fine[..., 1:-1, 1:-1] > 0).all())
    e1 = float((u_coarse - u_fine[..., ::2, ::2]).norm() / u_fine[..., ::2, ::2].norm())
    e2 = float((u_coarser - u_fine[..., ::4, ::4]).norm() / u_fine[..., ::4, ::4].norm())
    assert e1 < 0.05 and e2 > e1


def test_residuals_are_differentiable():
    g = torch.Generator().manual_seed(0)
    a = (2 + sample_cosine_grf(1, 6, generator=g, dtype=F64)).requires_grad_(True)
    u = sample_cosine_grf(1, 6, generator=g, dtype=F64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a_, u_: darcy_residual(a_, u_, 1.0), (a, u))
    assert torch.autograd.gradcheck(lambda a_, u_: helmholtz_residual(a_, u_, 2.0), (a, u))


def test_float32_runs():
    a, u, f = _darcy_manufactured(33)
    u32 = solve_darcy(a.float(), f.float())
    assert u32.dtype == torch.float32 and float((u32.double() - u).abs().max()) < 2e-3
    u2, lap = _laplace_manufactured(33)
    assert float((solve_poisson(lap.float()).double() - u2).abs().max()) < 5e-3


def test_bad_input_raises():
    a = torch.ones(1, 1, 9, 9)
    with pytest.raises(ValueError, match="positive"):
        solve_darcy(a - 2.0)
    with pytest.raises(ValueError, match="NaN"):
        solve_darcy(torch.where(a > 0, float("nan"), 1.0))
    with pytest.raises(ValueError, match="shape"):
        solve_poisson(torch.ones(9, 9))
    with pytest.raises(ValueError, match="broadcast"):
        solve_darcy(a, torch.ones(3, 3))
    with pytest.raises(ValueError, match="eigenvalue"):
        solve_helmholtz(a.double(), math.sqrt(8 * 64) * math.sin(PI / 16))  # k^2 = -(lowest eigenvalue)
    with pytest.raises(ValueError, match="positive"):
        darcy_residual(a - 2.0, a)
    assert torch.isfinite(darcy_residual(a - 2.0, a, averaging="arithmetic")).all()
    with pytest.raises(ValueError, match="share the grid"):
        poisson_residual(torch.ones(1, 1, 8, 8), a)
