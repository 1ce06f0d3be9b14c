"""Forced viscous Burgers (u_t + u u_x = nu u_xx + f(x)) and the ``burgers_shock_forced`` problem."""

import math

import torch

from funcdiff.pde import get_problem
from funcdiff.pde.burgers import burgers_residual, solve_burgers

TIMES = [0.0, 0.05, 0.1, 0.2]


def _grf(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.arange(n, dtype=torch.float64) / n
    a = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    return sum(0.3 * (a[k, 0] * torch.cos(2 * math.pi * (k + 1) * x) + a[k, 1] * torch.sin(2 * math.pi * (k + 1) * x))
               for k in range(3)).reshape(1, 1, n)


def test_unforced_path_is_bit_identical_with_none_and_zero_forcing():
    u0 = _grf(64)
    plain = solve_burgers(u0, TIMES, nu=1e-2)
    assert torch.equal(plain, solve_burgers(u0, TIMES, nu=1e-2, forcing=None))
    zero = solve_burgers(u0, TIMES, nu=1e-2, forcing=torch.zeros_like(u0))
    assert torch.allclose(plain, zero, atol=1e-14, rtol=0)


def test_mean_grows_by_t_times_mean_forcing_from_a_constant_state():
    """Conservation form: d/dt mean(u) = mean(f); from u0 = c (constant) the mean is c + t mean(f) exactly."""
    n = 64
    f = _grf(n, 1) + 0.25
    u0 = torch.full((1, 1, n), 0.1, dtype=torch.float64)
    u = solve_burgers(u0, TIMES, nu=1e-2, forcing=f)
    expected = 0.1 + torch.tensor(TIMES, dtype=torch.float64) * f.mean()
    assert torch.allclose(u.mean(-1)[0, 0], expected, atol=1e-12)
    assert float((u[0, 0, -1] - u[0, 0, 0]).std()) > 1e-3  # the non-constant part of f did act


def test_forcing_that_balances_a_steady_state_keeps_it():
    """u_s = A sin(2 pi x) is steady for f = u_s u_s' - nu u_s''; the solve must stay at u_s."""
    n, nu, amp = 64, 0.05, 0.2
    x = torch.arange(n, dtype=torch.float64) / n
    us = amp * torch.sin(2 * math.pi * x)
    dus = amp * 2 * math.pi * torch.cos(2 * math.pi * x)
    d2us = -(2 * math.pi) ** 2 * us
    f = (us * dus - nu * d2us).reshape(1, 1, n)
    u = solve_burgers(us.reshape(1, 1, n), [0.0, 0.5, 1.0], nu=nu, forcing=f)
    assert float((u - us).abs().max()) < 1e-10
    # the same initial state without the forcing decays: the check is not vacuous
    free = solve_burgers(us.reshape(1, 1, n), [0.0, 1.0], nu=nu)
    assert float((free[0, 0, -1] - us).abs().max()) > 0.05


def test_fourth_order_in_dt():
    n, nu = 64, 1e-2
    u0, f = _grf(n, 2), _grf(n, 3)
    ref = solve_burgers(u0, [0.0, 0.4], nu=nu, forcing=f, dt=1e-3)[..., -1, :]
    errs = [float((solve_burgers(u0, [0.0, 0.4], nu=nu, forcing=f, dt=dt)[..., -1, :] - ref).abs().max())
            for dt in (0.04, 0.02)]
    assert errs[1] < errs[0] / 10  # ~16x expected for fourth order


def test_registry_problem_writes_u_and_f_and_satisfies_the_forced_equation():
    problem = get_problem("burgers_shock_forced")
    assert problem.fields == ("u", "f")
    kw = dict(generator=torch.Generator().manual_seed(0), num_frames=21, dt=0.01, nu=1e-2, dtype=torch.float64)
    out = problem.generate(2, 128, **kw)
    assert out["u"].shape == out["f"].shape == (2, 21, 128) and out["t"].shape == (21,)
    assert torch.equal(out["f"][:, :1].expand_as(out["f"]), out["f"])  # time independent
    assert float(out["f"].mean(-1).abs().max()) < 1e-12  # zero-mean modes k = 1..3
    again = problem.generate(2, 128, **{**kw, "generator": torch.Generator().manual_seed(0)})
    assert torch.equal(again["u"], out["u"]) and torch.equal(again["f"], out["f"])
    # the unforced problem draws the same initial states first
    free = get_problem("burgers_shock").generate(2, 128, **{**kw, "generator": torch.Generator().manual_seed(0)})
    assert torch.equal(free["u"][:, 0], out["u"][:, 0])
    u, f = out["u"][:, None], out["f"][:, None, 0]
    forced = burgers_residual(u, out["t"], 1e-2, forcing=f).pow(2).mean()
    unforced = burgers_residual(u, out["t"], 1e-2).pow(2).mean()
    assert float(forced) < 1e-2 * float(unforced)  # measured 3.5e-3 (trapezoid in time, dt 0.01)
