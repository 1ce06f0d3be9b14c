"""Physics in the loop: the Darcy adjoint, samplers with the numerical solver in the observation operator, the
method switch of ``solve`` and its clear errors (tiny joint Darcy model of tests/test_tasks.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from funcdiff.cli import main as cli_main
from funcdiff.errors import UserError
from funcdiff.pde import darcy_residual, get_problem, solve_darcy
from funcdiff.pde.darcy_adjoint import solve_darcy_adjoint
from funcdiff.tasks import TASKS, load_model, make_observation, solve
from funcdiff.tasks.solve import check_compatible

from test_tasks import darcy_run  # noqa: F401  (module fixture: a tiny joint (a, u) Darcy model at 16²)


def test_darcy_adjoint_gradient_equals_central_differences():
    """Float64, a binary-like coefficient (3 / 12 with smooth transitions) and a random source: the adjoint
    gradient of an arbitrary linear functional matches central differences to 1e-5 (gradcheck), and the solve
    equals the plain solver."""
    g = torch.Generator().manual_seed(0)
    a = (3 + 9 * torch.rand(2, 1, 10, 10, generator=g, dtype=torch.float64)).requires_grad_(True)
    f = torch.rand(2, 1, 10, 10, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.allclose(solve_darcy_adjoint(a, f), solve_darcy(a.detach(), f.detach()), rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(solve_darcy_adjoint, (a, f), eps=1e-6, atol=1e-5, rtol=1e-5)
    weights = torch.randn(2, 1, 10, 10, generator=g, dtype=torch.float64)
    grad, = torch.autograd.grad((solve_darcy_adjoint(a, 1.0) * weights).sum(), a)
    i, j, h = 4, 5, 1e-6
    bumped = [a.detach().clone() for _ in range(2)]
    bumped[0][0, 0, i, j] += h
    bumped[1][0, 0, i, j] -= h
    fd = ((solve_darcy(bumped[0]) - solve_darcy(bumped[1])) * weights).sum() / (2 * h)
    assert abs(float(grad[0, 0, i, j]) - float(fd)) < 1e-5 * max(1.0, abs(float(fd)))


@pytest.mark.parametrize("method", ["dps-physics", "mmps-physics", "enkg-physics"])
@pytest.mark.parametrize("direction", ["inverse", "forward"])
def test_physics_samples_satisfy_the_discrete_pde(darcy_run, method, direction):
    """Every reported (a, u) satisfies the discrete Darcy equation to solver precision; the guidance fits the
    observations better than the same sampler unguided (measured misfit of the mean, 12 steps: inverse
    dps-physics 0.21, enkg-physics with 3 particles 0.27, vs 0.34 unguided; mmps-physics: see the print);
    solver calls are counted."""
    checkpoint, test = darcy_run
    task = TASKS[f"darcy-{direction}"]
    truth = test[:1]
    obs = make_observation(task, truth, fraction=0.15, seed=0)
    post = solve(checkpoint, task, obs, num_samples=3, steps=12, truth=truth, method=method, seed=0)
    prior = solve(checkpoint, task, obs, num_samples=3, steps=12, truth=truth, method=method, seed=0,
                  guidance_strength=0.0)
    a, u = post.samples[:, :1].double(), post.samples[:, 1:].double()
    f = get_problem("darcy").defaults["f"]
    assert float(a.min()) >= 0.1 - 1e-6
    residual = darcy_residual(a, u, f).abs().max() / abs(f)
    assert residual < 1e-4, residual  # samples are stored in float32: round-off of u at 1e-7 relative
    assert float(darcy_residual(a, solve_darcy(a, f), f).abs().max()) < 1e-9
    assert post.settings["method"] == method and post.settings["solver_calls"] >= 3
    misfit, unguided = post.metrics()["misfit_mean"], prior.metrics()["misfit_mean"]
    print(f"{method} darcy-{direction}: misfit {misfit:.3f} (unguided {unguided:.3f}), "
          f"solver calls {post.settings['solver_calls']}")
    assert misfit < (0.9 if method == "enkg-physics" else 0.75) * unguided  # enkg: an ensemble of only 3


def test_methods_share_the_solver_and_report_their_costs(darcy_run):
    checkpoint, test = darcy_run
    obs = make_observation("darcy-inverse", test[:1], fraction=0.15, seed=0)
    for method in ("mmps", "enkg"):
        post = solve(checkpoint, "darcy-inverse", obs, num_samples=3, steps=5, method=method, cg_iters=2, seed=1)
        assert post.samples.shape == (3, 2, 16, 16) and bool(torch.isfinite(post.samples).all())
        assert post.settings["nfe"] == 9
        # batched VJPs: at most cg_iters + 1 per denoiser call (CG stops early once converged)
        assert (9 <= post.settings["vjps"] <= 9 * 3) if method == "mmps" else post.settings["vjps"] == 0
        assert post.metrics()["misfit_mean"] < 0.3
    dps = solve(checkpoint, "darcy-inverse", obs, num_samples=3, steps=5, seed=1)
    assert dps.settings["vjps"] == 9 and dps.settings["solver_calls"] == 0


def test_methods_a_task_cannot_use_give_clear_errors(darcy_run):
    checkpoint, test = darcy_run
    obs = make_observation("darcy-inverse", test[:1], fraction=0.1, seed=0)
    with pytest.raises(UserError, match="unknown method 'ddim'; valid methods: dps, mmps"):
        solve(checkpoint, "darcy-inverse", obs, method="ddim")
    with pytest.raises(UserError, match="runs the task's numerical solver in the loop, but task 'burgers'"):
        solve(checkpoint, "burgers", obs, method="dps-physics")
    with pytest.raises(UserError, match="at least 2 samples"):
        solve(checkpoint, "darcy-inverse", obs, method="enkg", num_samples=1)
    with pytest.raises(UserError, match="whole ensemble in one batch"):
        solve(checkpoint, "darcy-inverse", obs, method="enkg", num_samples=4, batch_size=2)
    with pytest.raises(UserError, match="combines with method 'dps' only"):
        solve(checkpoint, "darcy-inverse", obs, method="mmps", pde_guidance=True)
    with pytest.raises(UserError, match="implied by method"):
        solve(checkpoint, "darcy-forward", make_observation("darcy-forward", test[:1], fraction=0.1),
              method="dps-physics", pushforward=True)


def test_physics_methods_need_only_the_input_channel(darcy_run):
    """A prior over the coefficient alone serves the physics methods; the others need both channels."""
    _, meta = load_model(darcy_run[0])
    input_only = dataclasses.replace(meta, channel_names=("a",))
    check_compatible(TASKS["darcy-inverse"], input_only, "dps-physics")
    with pytest.raises(UserError, match="missing"):
        check_compatible(TASKS["darcy-inverse"], input_only, "mmps")


def test_cli_method_choice_and_error(darcy_run, tmp_path, capsys):
    checkpoint, test = darcy_run
    from funcdiff.io.netcdf import fields_to_dataset, write_netcdf

    truth_path = tmp_path / "truth.nc"
    write_netcdf(fields_to_dataset(test[:1], ("a", "u"), {}, grid="node"), truth_path)
    out = tmp_path / "post.nc"
    code = cli_main(["solve", "--checkpoint", str(checkpoint), "--task", "darcy-inverse", "--truth", str(truth_path),
                     "--obs-fraction", "0.1", "--num-samples", "2", "--steps", "4", "--method", "mmps",
                     "--cg-iters", "1", "--out", str(out), "--no-plot", "--no-progress"])
    assert code == 0 and out.exists()
    physics = tmp_path / "physics.nc"
    code = cli_main(["solve", "--checkpoint", str(checkpoint), "--task", "darcy-inverse", "--truth", str(truth_path),
                     "--obs-fraction", "0.1", "--num-samples", "2", "--steps", "4", "--method", "mmps-physics",
                     "--cg-iters", "2", "--out", str(physics), "--no-plot", "--no-progress"])
    assert code == 0 and physics.exists()
    code = cli_main(["solve", "--checkpoint", str(checkpoint), "--task", "darcy-inverse", "--truth", str(truth_path),
                     "--obs-fraction", "0.1", "--num-samples", "1", "--method", "enkg", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "at least 2 samples" in err[0] and "Traceback" not in err[0]
