"""Tasks: registry, baselines, guided solving from a tiny jointly trained Darcy model, clear errors, CLI."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import xarray as xr

from funcdiff.cli import main as cli_main
from funcdiff.config import config_from_dict
from funcdiff.guidance import SparseObservation, save_observation
from funcdiff.io.checkpoint import load_denoiser
from funcdiff.io.netcdf import fields_to_dataset, write_netcdf
from funcdiff.metrics import relative_l2
from funcdiff.pde import get_problem
from funcdiff.tasks import TASKS, get_task, load_truth, make_observation, solve
from funcdiff.tasks.baselines import (interpolate_observations, interpolation_baseline, random_masked_inputs,
                                      scatter_to_grid)

N = 16  # grid of the tiny Darcy model
N_TRAIN, N_TEST = 200, 6


def _darcy(num: int, n: int, seed: int) -> torch.Tensor:
    d = get_problem("darcy").generate(num, n, generator=torch.Generator().manual_seed(seed))
    return torch.stack([d["a"], d["u"]], dim=1)


@pytest.fixture(scope="module")
def darcy_run(tmp_path_factory):
    """A tiny joint (a, u) Darcy model at 16², trained with the package's Trainer; returns (checkpoint, test)."""
    fields = _darcy(N_TRAIN + N_TEST, N, seed=0)
    out = tmp_path_factory.mktemp("darcy_run")
    config = config_from_dict({
        "name": "darcy-tiny",
        "data": {"source": "synthetic", "channels": ["a", "u"], "resolution": N, "num_samples": N_TRAIN,
                 "test_fraction": 0.05},
        "noise": {"smoothness": 2.0, "length_scale": 0.1},
        "model": {"backbone": "fno", "n_modes": [6, 6], "hidden_channels": 16, "n_layers": 2, "emb_dim": 32,
                  "norm_groups": 4},
        "train": {"steps": 250, "batch_size": 16, "lr": 2e-3, "warmup_steps": 20, "ema_decay": 0.99,
                  "log_every": 0, "checkpoint_every": 0, "eval_every": 0, "out_dir": str(out), "device": "cpu"},
    })
    from funcdiff.training import Trainer

    trainer = Trainer.from_config(config, fields=fields[:N_TRAIN], progress=False)
    trainer.fit()
    return trainer.save_checkpoint(), fields[N_TRAIN:]


# ---------------------------------------------------------------------------------------------- registry


def test_registry_covers_every_problem_and_direction():
    for problem in ("darcy", "poisson", "helmholtz", "navier-stokes"):
        assert TASKS[f"{problem}-forward"].observed != TASKS[f"{problem}-inverse"].observed
        assert TASKS[f"{problem}-forward"].target == TASKS[f"{problem}-inverse"].observed
    assert TASKS["burgers"].trajectory and TASKS["burgers"].target == ("u",)
    assert TASKS["darcy-inverse"].threshold == 7.5
    with pytest.raises(ValueError, match="valid tasks"):
        get_task("darcy-sideways")


@pytest.mark.parametrize("name", ["darcy-forward", "poisson-inverse", "helmholtz-forward"])
def test_residual_vanishes_on_solver_output(name):
    """The task's residual uses the data solver's stencil: ~0 on generated pairs, O(1) after perturbing u."""
    task = TASKS[name]
    d = get_problem(task.problem).generate(3, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = torch.stack([d["a"], d["u"]], dim=1)
    wrong = x.clone()
    wrong[:, 1] = wrong[:, 1] * 1.1
    scale = float(x[:, 0].std())
    assert float(task.residual_loss(x, scale).max()) < 1e-20
    assert float(task.residual_loss(wrong, scale).min()) > 1e-6


def test_navier_stokes_consistency_residual_and_its_adjoint():
    """S_T(w0) - wT vanishes on generated pairs and not on perturbed ones; its gradient in w0 (autograd through
    the solver: the discrete adjoint) matches a central finite difference."""
    task = TASKS["navier-stokes-inverse"]
    d = get_problem("navier_stokes").generate(2, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = torch.stack([d["w0"], d["wT"]], dim=1)
    scale = float(x[:, 1].std())
    wrong = x.clone()
    wrong[:, 0] = torch.roll(wrong[:, 0], 3, dims=-1)
    assert float(task.residual_loss(x, scale).max()) < 1e-20
    assert float(task.residual_loss(wrong, scale).min()) > 1e-3
    probe = wrong.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(task.residual_loss(probe, scale).sum(), probe)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps = 1e-5
    fd = (task.residual_loss(wrong + eps * direction, scale) - task.residual_loss(wrong - eps * direction, scale)).sum()
    assert math.isclose(float((grad * direction).sum()), float(fd) / (2 * eps), rel_tol=1e-5)


def test_burgers_residual_small_on_solution_large_on_shuffled_frames():
    task = TASKS["burgers"]
    d = get_problem("burgers").generate(2, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    traj = d["u"][:, None]
    shuffled = traj[:, :, torch.randperm(traj.shape[2], generator=torch.Generator().manual_seed(0))]
    assert float(task.residual_loss(traj).mean()) < 0.05 * float(task.residual_loss(shuffled).mean())


# ---------------------------------------------------------------------------------------------- baselines


def test_interpolation_reproduces_linear_fields_inside_the_hull():
    """Piecewise-linear interpolation (node grid) is exact for affine functions inside the sensors' hull."""
    gen = torch.Generator().manual_seed(0)
    coords = torch.cat([torch.rand(40, 2, generator=gen, dtype=torch.float64) * 0.98,
                        torch.tensor([[0.0, 0.0], [0.0, 0.98], [0.98, 0.0], [0.98, 0.98]], dtype=torch.float64)])
    f = lambda c: 1.0 + 2.0 * c[..., 0] - 3.0 * c[..., 1]  # noqa: E731
    out = interpolate_observations(coords, f(coords)[None, None], (21, 21), "node")
    xs = torch.arange(21, dtype=torch.float64) / 20
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    inside = (gx <= 0.98) & (gy <= 0.98)
    assert torch.allclose(out[0, 0][inside].double(), f(torch.stack([gx, gy], dim=-1))[inside], atol=1e-5)


def test_periodic_interpolation_wraps_around():
    """Sensors on a lattice with values depending on x only: the result is the periodic piecewise-linear
    interpolant in x (between x = 0.9 and the image of x = 0 at 1.0 across the boundary)."""
    lx, ly = torch.tensor([0.0, 0.3, 0.6, 0.9]), torch.tensor([0.0, 0.25, 0.5, 0.75])
    coords = torch.cartesian_prod(lx, ly).double()
    values = (coords[:, 0] / 0.3).round()[None, None]  # 0, 1, 2, 3
    out = interpolate_observations(coords, values, (20, 20), "periodic")
    x = torch.arange(20, dtype=torch.float64) / 20
    expected = torch.from_numpy(np.interp(x.numpy(), [0.0, 0.3, 0.6, 0.9, 1.0], [0, 1, 2, 3, 0]))
    assert torch.allclose(out[0, 0].double(), expected[:, None].expand(20, 20), atol=1e-5)


def test_forward_interpolation_baseline_is_exact_with_every_node_observed():
    """Darcy forward: interpolating a fully observed binary coefficient and solving returns the data's u."""
    x = _darcy(2, 12, seed=3).double()
    obs = make_observation("darcy-forward", x[:1], fraction=1.0, seed=0)
    u = interpolation_baseline("darcy-forward", obs, (12, 12))
    assert float(relative_l2(u.double(), x[:1, 1:])[0, 0]) < 1e-5


def test_fno_regression_inputs_put_values_at_sensor_nodes():
    x = _darcy(1, 12, seed=4)
    obs = make_observation("darcy-inverse", x, count=10, seed=1)
    grid = scatter_to_grid(obs, obs.values.float(), (12, 12))
    mask = grid[0, 1].bool()
    assert int(mask.sum()) == 10
    assert torch.allclose(grid[0, 0][mask], x[0, 1][mask])
    inputs = random_masked_inputs(x, (1,), 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(inputs[:, 0] != 0, (inputs[:, 1] > 0) & (x[:, 1] != 0))


# ---------------------------------------------------------------------------------------------- solving


def test_guided_reconstruction_beats_interpolation(darcy_run):
    """Observing 10 % of u: the posterior mean of u beats piecewise-linear interpolation of the sensors on
    held-out fields, the samples fit the observations, and the coefficient is better than chance."""
    checkpoint, test = darcy_run
    ours, interp, miscl = [], [], []
    for i in range(len(test)):
        truth = test[i:i + 1]
        obs = make_observation("darcy-inverse", truth, fraction=0.1, seed=i)
        post = solve(checkpoint, "darcy-inverse", obs, num_samples=2, steps=10, truth=truth, seed=i)
        ours.append(float(relative_l2(post.mean[:, 1:], truth[:, 1:])))
        interp.append(float(relative_l2(interpolate_observations(obs.coords, obs.values, (N, N), "node"),
                                        truth[:, 1:])))
        miscl.append(post.metrics()["misclassification_a"])
        assert post.metrics()["misfit_mean"] < 0.05
    print(f"u rel L2 diffusion {np.mean(ours):.3f} vs interpolation {np.mean(interp):.3f}; "
          f"a misclassification {np.mean(miscl):.3f}")
    assert np.mean(ours) < 0.6 * np.mean(interp)
    assert np.mean(miscl) < 0.45


def test_solve_at_a_finer_grid_than_training(darcy_run):
    """The 16² checkpoint solves at 24² from the same sensors (coordinates, not indices) and fits them."""
    checkpoint, test = darcy_run
    obs = make_observation("darcy-forward", test[:1], fraction=0.15, seed=0)
    post = solve(checkpoint, "darcy-forward", obs, num_samples=2, steps=8, resolution=24)
    assert post.samples.shape[-2:] == (24, 24)
    assert post.metrics()["misfit_mean"] < 0.05
    assert post.settings["trust_region"] == 0.0 and post.settings["sigma_max"] == 20.0  # long schedule: off


def test_trust_region_switches_on_for_few_steps(darcy_run):
    checkpoint, test = darcy_run
    obs = make_observation("darcy-forward", test[:1], fraction=0.1, seed=0)
    few = solve(checkpoint, "darcy-forward", obs, num_samples=2, steps=4)
    forced_off = solve(checkpoint, "darcy-forward", obs, num_samples=2, steps=4, trust_region=None)
    assert few.settings["trust_region"] == 1.0 and forced_off.settings["trust_region"] == 0.0


def test_pushforward_makes_forward_samples_exact_solutions_and_more_accurate(darcy_run):
    """darcy-forward with ``pushforward``: each u sample is the solver's solution for that sample's a, and the
    posterior mean of u is more accurate than the jointly sampled u (the tiny model's a→u map is crude)."""
    checkpoint, test = darcy_run
    task = TASKS["darcy-forward"]
    joint, pushed = [], []
    for i in range(len(test)):
        truth = test[i:i + 1]
        obs = make_observation(task, truth, fraction=0.1, seed=i)
        kwargs = dict(num_samples=2, steps=10, truth=truth, seed=i)
        post, plain = (solve(checkpoint, task, obs, pushforward=p, **kwargs) for p in (True, False))
        assert torch.allclose(post.samples[:, :1], plain.samples[:, :1])
        assert torch.allclose(post.samples[:, 1:], task.forward_solver(post.samples[:, :1]))
        joint.append(plain.metrics()["rel_l2_u"])
        pushed.append(post.metrics()["rel_l2_u"])
    print(f"u rel L2 joint {np.mean(joint):.3f} vs pushforward {np.mean(pushed):.3f}")
    assert np.mean(pushed) < np.mean(joint)
    with pytest.raises(ValueError, match="pushforward needs a forward task"):
        solve(checkpoint, "darcy-inverse", make_observation("darcy-inverse", test[:1], fraction=0.1),
              pushforward=True, num_samples=1, steps=2)


def test_checkpoint_of_another_problem_is_rejected(darcy_run):
    checkpoint, test = darcy_run
    obs = make_observation("darcy-inverse", test[:1], fraction=0.1, seed=0)
    with pytest.raises(ValueError, match="trained on 'darcy'.*'poisson'"):
        solve(checkpoint, "poisson-inverse", obs, num_samples=1, steps=2)


def test_model_lacking_channels_is_rejected(darcy_run):
    checkpoint, test = darcy_run
    denoiser, meta = load_denoiser(checkpoint)
    renamed = dataclasses.replace(meta, channel_names=("a", "v"), task="run")
    obs = make_observation("darcy-inverse", test[:1], fraction=0.1, seed=0)
    with pytest.raises(ValueError, match=r"missing \['u'\]"):
        solve((denoiser, renamed), "darcy-inverse", obs, num_samples=1, steps=2)


def test_observation_of_wrong_channel_is_rejected(darcy_run):
    checkpoint, test = darcy_run
    obs = make_observation("darcy-forward", test[:1], fraction=0.1, seed=0)  # observes a
    with pytest.raises(ValueError, match="observes \\['u'\\]"):
        solve(checkpoint, "darcy-inverse", obs, num_samples=1, steps=2)


def test_pde_guidance_runs_and_keeps_the_fit(darcy_run):
    checkpoint, test = darcy_run
    obs = make_observation("darcy-inverse", test[:1], fraction=0.1, seed=0)
    post = solve(checkpoint, "darcy-inverse", obs, num_samples=1, steps=6, pde_guidance=True)
    assert post.settings["pde_guidance"] == 1 and post.metrics()["misfit_mean"] < 0.1
    with pytest.raises(ValueError, match="no PDE residual"):
        from funcdiff.tasks.solve import _pde_term
        _pde_term(dataclasses.replace(TASKS["darcy-inverse"], residual=None), load_denoiser(checkpoint)[1], 1.0, 1.0)


# ---------------------------------------------------------------------------------------------- CLI


def _write_truth(test: torch.Tensor, path) -> None:
    write_netcdf(fields_to_dataset(test, ("a", "u"), grid="nodes"), path)


def test_cli_solve_writes_netcdf_and_png(darcy_run, tmp_path):
    checkpoint, test = darcy_run
    truth_path, out = tmp_path / "truth.nc", tmp_path / "post.nc"
    _write_truth(test, truth_path)
    assert torch.equal(load_truth(truth_path, ("a", "u"), index=2), test[2:3])
    code = cli_main(["solve", "--checkpoint", str(checkpoint.parent.parent), "--task", "darcy-forward",
                     "--truth", str(truth_path), "--index", "2", "--obs-fraction", "0.1", "--num-samples", "3",
                     "--steps", "4", "--seed", "1", "--out", str(out)])
    assert code == 0 and out.with_suffix(".png").stat().st_size > 1000
    with xr.open_dataset(out) as ds:
        assert ds["u"].shape == (3, N, N) and ds["u_mean"].shape == (N, N)
        np.testing.assert_allclose(ds["u_mean"].values, ds["u"].values.mean(0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ds["u_std"].values, ds["u"].values.std(0, ddof=1), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(ds["u_truth"].values, test[2, 1].numpy())
        rel = np.linalg.norm(ds["u_mean"].values - test[2, 1].numpy()) / np.linalg.norm(test[2, 1].numpy())
        assert math.isclose(float(ds.attrs["rel_l2_u"]), rel, rel_tol=1e-4)
        assert ds.attrs["task"] == "darcy-forward" and float(ds.attrs["misfit_mean"]) < 0.1
        assert ds["sensor_coords"].shape == (round(0.1 * N * N), 2)


def _bad_observation_file(path, coords, values) -> None:
    obs = SparseObservation(coords=torch.rand(4, 2, dtype=torch.float64), channels=(1,),
                            values=torch.zeros(1, 1, 4), grid="node", channel_names=("u",))
    save_observation(obs, path)
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    ds["sensor_coords"].values[:] = coords
    ds["observed_values"].values[:] = values
    ds.to_netcdf(path, mode="w")


@pytest.mark.parametrize("coords, values, match", [
    ([[0.1, 0.2], [1.3, 0.5], [0.5, 0.5], [0.2, 0.9]], 0.0, "outside the node domain"),
    ([[0.1, 0.2], [0.3, 0.5], [0.5, 0.5], [0.2, 0.9]], [[[0.0, float("nan"), 1.0, 2.0]]], "NaN"),
])
def test_cli_rejects_bad_observation_files(darcy_run, tmp_path, capsys, coords, values, match):
    checkpoint, _ = darcy_run
    path = tmp_path / "obs.nc"
    _bad_observation_file(path, coords, values)
    assert cli_main(["solve", "--checkpoint", str(checkpoint), "--task", "darcy-inverse", "--observations", str(path),
                     "--num-samples", "1", "--steps", "2", "--out", str(tmp_path / "p.nc")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"funcdiff solve: error: {path}: ") and match in err and len(err.splitlines()) == 1


def test_cli_needs_truth_for_random_sensors(darcy_run, tmp_path, capsys):
    checkpoint, _ = darcy_run
    assert cli_main(["solve", "--checkpoint", str(checkpoint), "--task", "darcy-inverse", "--obs-fraction", "0.03",
                     "--out", str(tmp_path / "p.nc")]) == 2
    assert "pass --truth" in capsys.readouterr().err


def test_nan_truth_is_rejected():
    truth = _darcy(1, 12, seed=5)
    truth[0, 1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        make_observation("darcy-inverse", truth, fraction=0.1)
