"""Registry contract: every problem generates deterministic, correctly shaped data that satisfies its PDE."""

import json

import pytest
import torch

from funcdiff.pde import (
    PROBLEMS,
    darcy_residual,
    get_problem,
    helmholtz_residual,
    mean_square,
    poisson_residual,
    solve_navier_stokes,
)

RES = {"burgers": 32, "burgers_shock": 32, "burgers_shock_forced": 32, "navier_stokes": 16, "navier_stokes_trajectory": 16, "kolmogorov": 16}
SMALL = {"navier_stokes_trajectory": {"times": [0.0, 0.25, 0.5]}, "burgers": {"times": [0.0, 0.2, 0.4]},
         "burgers_shock": {"dt": 0.2, "num_frames": 3}, "burgers_shock_forced": {"dt": 0.2, "num_frames": 3},
         "kolmogorov": {"spin_up": 0.1, "dt": 0.25, "num_frames": 3}}
ONE_D = ("burgers", "burgers_shock", "burgers_shock_forced")



def _generate(name: str, seed: int, **kwargs):
    n = RES.get(name, 9)
    params = {**SMALL.get(name, {}), **kwargs}
    return get_problem(name).generate(3, n, generator=torch.Generator().manual_seed(seed), **params), n


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_every_problem_follows_the_contract(name):
    problem = get_problem(name)
    assert problem.name == name and problem.kind in ("pair", "trajectory")
    json.dumps(problem.defaults)
    out, n = _generate(name, 0)
    again, _ = _generate(name, 0)
    other, _ = _generate(name, 1)
    assert set(problem.fields) <= set(out)
    spatial = (n,) if name in ONE_D else (n, n)
    for key in problem.fields:
        expected = (3, *spatial) if problem.kind == "pair" else (3, 3, *spatial)
        assert out[key].shape == expected and out[key].dtype == torch.float32
        assert torch.isfinite(out[key]).all() and torch.equal(out[key], again[key])
        assert not torch.equal(out[key], other[key])
    if problem.kind == "trajectory":
        small = SMALL[name]
        expected = small.get("times") or [i * small["dt"] for i in range(small["num_frames"])]
        assert out["t"].tolist() == pytest.approx(expected)


def test_pair_data_satisfy_their_equations():
    for name, residual in (("darcy", darcy_residual), ("poisson", poisson_residual), ("helmholtz", helmholtz_residual)):
        params = {"k": 2.0} if name == "helmholtz" else {}
        generator = torch.Generator().manual_seed(0)
        out = get_problem(name).generate(2, 12, generator=generator, dtype=torch.float64, **params)
        a, u = out["a"][:, None], out["u"][:, None]
        r = residual(a, u, 2.0) if name == "helmholtz" else residual(a, u)
        assert float(mean_square(r, exclude_boundary=True).max()) < 1e-18, name
        assert float(u[..., 0, :].abs().max()) == 0.0


def test_navier_stokes_pair_is_the_solver_output():
    out = get_problem("navier_stokes").generate(2, 16, generator=torch.Generator().manual_seed(0),
                                                dtype=torch.float64, t_final=0.3)
    w = solve_navier_stokes(out["w0"][:, None], [0.3], nu=1e-3)
    assert torch.allclose(w[:, 0, -1], out["wT"], atol=1e-12)


def test_unknown_names_and_parameters_raise():
    with pytest.raises(ValueError, match="darcy"):
        get_problem("darcyy")
    with pytest.raises(ValueError, match="viscosity"):
        get_problem("burgers").generate(1, 16, generator=torch.Generator(), viscosity=0.1)
    with pytest.raises(ValueError, match="nu"):
        get_problem("navier_stokes").generate(1, 16, generator=torch.Generator(), nu=-1.0)
