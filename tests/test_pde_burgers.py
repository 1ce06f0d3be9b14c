"""1-D Burgers solver (ETDRK4) and residual against the Cole-Hopf exact solution."""

import pytest
import torch

from funcdiff.pde import (
    burgers_residual,
    burgers_rhs,
    cole_hopf_solution,
    mean_square,
    sample_periodic_grf,
    solve_burgers,
)
from funcdiff.pde.burgers import etdrk4_coefficients

F64 = torch.float64
AMPS = (0.9, 0.3)  # steep two-mode Cole-Hopf profile



def _grid(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=F64) / n


def _cole_hopf_error(n: int, nu: float, t: float, dt: float | None) -> float:
    x = _grid(n)
    u = solve_burgers(cole_hopf_solution(x, 0.0, nu, AMPS)[None, None], [0.0, t], nu=nu, dt=dt)
    return float((u[0, 0, -1] - cole_hopf_solution(x, t, nu, AMPS)).abs().max())


def test_spectral_convergence_in_space():
    errs = [_cole_hopf_error(n, 1e-2, 0.5, 1e-3) for n in (16, 32, 64)]
    assert errs[0] / errs[1] > 50 and errs[2] < 1e-9, errs


def test_fourth_order_in_time():
    errs = [_cole_hopf_error(64, 1e-2, 1.0, dt) for dt in (0.1, 0.05, 0.025)]
    ratios = [errs[i] / errs[i + 1] for i in range(2)]
    assert all(11.0 < r < 20.0 for r in ratios), (errs, ratios)


def test_adaptive_step_matches_exact_solution():
    assert _cole_hopf_error(64, 1e-2, 1.0, None) < 1e-7


def test_etdrk4_coefficients_match_direct_formula_where_it_is_accurate():
    hl = torch.tensor([-3.0, -1.0, 0.5])
    e, e2, q, f1, f2, f3 = etdrk4_coefficients(hl, torch.ones(1, 1, dtype=F64))
    z = hl.double()
    assert torch.allclose(q[0], (torch.exp(z / 2) - 1) / z, atol=1e-13)
    direct_f1 = (-4 - z + torch.exp(z) * (4 - 3 * z + z**2)) / z**3
    assert torch.allclose(f1[0], direct_f1, atol=1e-12)
    limit = etdrk4_coefficients(torch.zeros(1), torch.ones(1, 1, dtype=F64))
    expected = torch.tensor([0.5, 1 / 6, 1 / 6, 1 / 6], dtype=F64)
    assert torch.allclose(torch.stack([c[0, 0] for c in limit[2:]]), expected)


def test_invariants_mean_conserved_energy_decays_max_principle():
    g = torch.Generator().manual_seed(0)
    u0 = sample_periodic_grf(3, 256, 1, generator=g, dtype=F64) + 0.2
    u = solve_burgers(u0, [0.1 * i for i in range(6)], nu=3e-3)
    mean = u.mean(-1)
    assert float((mean - mean[:, :, :1]).abs().max()) < 1e-12
    energy = u.pow(2).mean(-1)[:, 0]
    assert bool((energy[:, 1:] < energy[:, :-1]).all())
    assert bool((u.abs().amax(-1) <= u0.abs().amax(-1, keepdim=True) + 1e-6).all())


def test_batch_independence_and_float32():
    g = torch.Generator().manual_seed(1)
    u0 = sample_periodic_grf(3, 128, 1, generator=g, dtype=F64)
    u0[1] *= 3.0  # a faster sample takes a smaller CFL step
    batched = solve_burgers(u0, [0.0, 0.5], nu=1e-2)
    single = solve_burgers(u0[1:2], [0.0, 0.5], nu=1e-2)
    assert torch.allclose(batched[1:2], single, rtol=0, atol=1e-13)
    u32 = solve_burgers(u0.float(), [0.0, 0.5], nu=1e-2)
    assert u32.dtype == torch.float32
    assert float((u32.double() - batched).norm() / batched.norm()) < 1e-5


def test_residual_small_second_order_and_detects_wrong_field():
    nu, n = 1e-2, 64
    x = _grid(n)
    sizes = []
    for frames in (6, 11):
        times = torch.linspace(0.0, 0.5, frames, dtype=F64)
        traj = torch.stack([cole_hopf_solution(x, float(t), nu, AMPS) for t in times])[None, None]
        sizes.append(float(mean_square(burgers_residual(traj, times, nu)).sqrt()))
    scale = float(mean_square(burgers_rhs(traj[:, :, 0], nu)).sqrt())
    assert sizes[1] < 1e-2 * scale and 3.5 < sizes[0] / sizes[1] < 4.5, (sizes, scale)
    solved = solve_burgers(traj[:, :, 0], times, nu=nu)
    solver_size = float(mean_square(burgers_residual(solved, times, nu)).sqrt())
    assert abs(solver_size - sizes[1]) < 1e-3 * sizes[1]  # solver output is as consistent as the exact solution
    wrong = float(mean_square(burgers_residual(solved.flip(2), times, nu)).sqrt())
    assert wrong > 100 * sizes[1]


def test_residual_is_differentiable():
    u = (0.3 * torch.sin(6.283 * _grid(8))).repeat(1, 1, 3, 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: burgers_residual(v, [0.0, 0.1, 0.2], 1e-2), (u,))


@pytest.mark.parametrize(
    "u0, kwargs, match",
    [
        (torch.zeros(2, 32, dtype=F64), {}, "shape"),
        (torch.full((1, 1, 32), float("nan")), {}, "NaN"),
        (torch.zeros(1, 1, 32), {"nu": -0.01}, "nu"),
        (torch.zeros(1, 1, 32, dtype=torch.int64), {}, "floating"),
        (torch.zeros(1, 1, 32), {"cfl": 0.0}, "cfl"),
    ],
)
def test_bad_input_raises(u0, kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve_burgers(u0, [0.1], **kwargs)
