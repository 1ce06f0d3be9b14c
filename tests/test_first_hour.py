"""What a new user meets in the first hour: coordinates that agree between commands, files others can read,
attributes that reopen as numbers, one observation format from the command line, honest reruns, and names
accepted in either spelling."""

from __future__ import annotations

import json
import os
import stat

import h5py
import numpy as np
import pytest
import torch
import xarray as xr

from funcdiff.cli import main
from funcdiff.cli.data import problem_name
from funcdiff.config import config_from_dict
from funcdiff.errors import UserError
from funcdiff.guidance import load_observation, save_observation
from funcdiff.io.atomic import write_text_atomic
from funcdiff.io.checkpoint import save_checkpoint
from funcdiff.io.netcdf import fields_to_dataset, write_netcdf
from funcdiff.tasks import make_observation
from funcdiff.training import Trainer
from tests.test_cli_errors import N, tiny_config


@pytest.fixture(scope="module")
def darcy(tmp_path_factory):
    """A tiny Darcy-named (node grid) checkpoint and an (a, u) truth file on the N² node grid."""
    root = tmp_path_factory.mktemp("first_hour")
    trainer = Trainer.from_config(config_from_dict(tiny_config(root / "run")), progress=False)
    trainer.fit()
    truth = torch.rand(2, 2, N, N) + 1.0
    write_netcdf(fields_to_dataset(truth, ("a", "u"), grid="node"), root / "truth.nc")
    return root, trainer.save_checkpoint(), truth


def test_sample_and_solve_write_the_same_node_grid_coordinates(darcy, capsys):
    root, checkpoint, _ = darcy
    assert main(["sample", "--checkpoint", str(checkpoint), "--resolution", str(N), "--num-samples", "2",
                 "--out", str(root / "samples.nc"), "--no-progress"]) == 0
    assert main(["solve", "--checkpoint", str(checkpoint), "--task", "darcy-inverse", "--truth", str(root / "truth.nc"),
                 "--obs-fraction", "0.3", "--num-samples", "2", "--steps", "2", "--no-plot", "--no-progress",
                 "--out", str(root / "posterior.nc")]) == 0
    with xr.open_dataset(root / "samples.nc") as samples, xr.open_dataset(root / "posterior.nc") as posterior:
        for axis in ("x", "y"):
            np.testing.assert_array_equal(samples[axis].values, posterior[axis].values)
            np.testing.assert_allclose(samples[axis].values, np.linspace(0.0, 1.0, N))  # x_i = i/(N-1), both ends
        assert samples.attrs["grid"] == posterior.attrs["grid"] == "node"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = [write_text_atomic(tmp_path / "a.txt", "x"),
                 write_netcdf(fields_to_dataset(torch.zeros(1, 1, 4, 4), ["a"]), tmp_path / "f.nc"),
                 save_checkpoint(tmp_path / "c.pt", {"step": 0}),
                 write_text_atomic(tmp_path / "a.txt", "replaced")]
    finally:
        os.umask(old)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "c.pt", "f.nc"]  # no temporary files left


def test_numeric_attributes_reopen_as_numbers_and_variables_are_described(tmp_path):
    attrs = {"steps": 24, "sigma": 0.5, "flag": True, "resolution": [64, 64], "sampler": {"solver": "heun"},
             "missing": None}
    ds = fields_to_dataset(torch.zeros(2, 2, 4, 4), ["a", "u"], attrs, grid="nodes",
                           extra={"mean": torch.zeros(2, 2, 4, 4)})
    with xr.open_dataset(write_netcdf(ds, tmp_path / "f.nc")) as back:
        assert isinstance(back.attrs["steps"], (int, np.integer)) and back.attrs["steps"] == 24
        assert isinstance(back.attrs["sigma"], (float, np.floating)) and back.attrs["sigma"] == 0.5
        assert back.attrs["flag"] == 1 and list(back.attrs["resolution"]) == [64, 64]
        assert back.attrs["sampler"] == '{"solver": "heun"}' and back.attrs["grid"] == "node"
        assert back["u"].attrs == {"long_name": "PDE solution u", "units": "1"}
        assert back["a_mean"].attrs["long_name"] == "posterior mean of PDE coefficient (input) a"


def test_posterior_files_have_described_derived_variables(darcy):
    root, checkpoint, _ = darcy
    assert main(["solve", "--checkpoint", str(checkpoint), "--task", "darcy-forward", "--truth", str(root / "truth.nc"),
                 "--obs-count", "5", "--num-samples", "2", "--steps", "1", "--no-plot", "--no-progress",
                 "--out", str(root / "fwd.nc")]) == 0
    with xr.open_dataset(root / "fwd.nc") as ds:
        for name in ("u_mean", "u_std", "u_truth", "u_error", "a_mean"):
            assert ds[name].attrs["units"] == "1" and ds[name].attrs["long_name"].endswith(("u", "a")), name
        assert isinstance(ds.attrs["num_sensors"], (int, np.integer)) and ds.attrs["num_sensors"] == 5
        assert isinstance(ds.attrs["rel_l2_u"], (float, np.floating))


def test_observe_writes_what_solve_reads_and_solve_output_is_an_observation(darcy, capsys):
    root, checkpoint, truth = darcy
    obs_path = root / "obs.nc"
    assert main(["observe", "--truth", str(root / "truth.nc"), "--index", "1", "--task", "darcy-inverse",
                 "--fraction", "0.25", "--noise-std", "0.01", "--seed", "3", "--out", str(obs_path)]) == 0
    assert f"wrote {round(0.25 * N * N)} sensors of ['u']" in capsys.readouterr().out
    observation = load_observation(obs_path)
    expected = make_observation("darcy-inverse", truth[1:2], fraction=0.25, seed=3, noise_std=0.01)
    assert torch.equal(observation.coords, expected.coords) and torch.equal(observation.values, expected.values)
    assert observation.channel_names == ("u",) and observation.grid == "node"
    out = root / "from_obs.nc"
    assert main(["solve", "--checkpoint", str(checkpoint), "--task", "darcy-inverse", "--observations", str(obs_path),
                 "--num-samples", "1", "--steps", "1", "--no-plot", "--no-progress", "--out", str(out)]) == 0
    again = load_observation(out)  # a posterior file holds its sensors in the same layout
    assert torch.equal(again.coords, observation.coords) and torch.equal(again.values, observation.values)
    assert again.noise_std_per_channel().tolist() == [0.01] and again.grid == "node"
    assert main(["solve", "--checkpoint", str(checkpoint), "--task", "darcy-inverse", "--observations", str(out),
                 "--num-samples", "1", "--steps", "1", "--no-plot", "--no-progress",
                 "--out", str(root / "again.nc")]) == 0


def test_legacy_observation_files_are_read(tmp_path):
    coords = torch.tensor([[0.0, 0.5], [1.0, 0.25]], dtype=torch.float64)
    values = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    legacy = xr.Dataset({"values": (("sample", "channel", "sensor"), values.numpy()),
                         "coords": (("sensor", "dim"), coords.numpy()), "noise_std": (("channel",), [0.1]),
                         "channel_index": (("channel",), np.array([1]))},
                        coords={"channel": ["u"]}, attrs={"grid": "node", "has_channel_names": 1})
    legacy.to_netcdf(tmp_path / "old.nc")
    back = load_observation(tmp_path / "old.nc")
    assert torch.equal(back.coords, coords) and torch.equal(back.values, values) and back.channels == (1,)
    xr.Dataset({"a": (("x",), np.zeros(3))}).to_netcdf(tmp_path / "other.nc")
    with pytest.raises(UserError, match="holds no sensors"):
        load_observation(tmp_path / "other.nc")


def test_rerun_of_a_complete_generation_says_nothing_to_do_and_info_flags_nans(tmp_path, capsys):
    out = tmp_path / "syn.h5"
    argv = ["data", "generate", "synthetic", "--num-samples", "3", "--resolution", "8", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0 and capsys.readouterr().out.strip() == f"wrote {out}"
    assert main(argv) == 0
    assert "already complete with these arguments: nothing to do" in capsys.readouterr().out
    assert main(["data", "info", str(out)]) == 0
    assert "non-finite values: none" in capsys.readouterr().out
    with h5py.File(out, "r+") as f:
        name = json.loads(f.attrs["fields"])[0]
        f[name][1, 2, 3] = np.nan
        f[name][2, 0, 0] = np.inf
    assert main(["data", "info", str(out)]) == 0
    assert f"/{name}: 1 NaN, 1 Inf" in capsys.readouterr().out


def test_problem_and_task_names_in_either_spelling():
    from funcdiff.cli.solve import task_name
    from funcdiff.tasks import get_task

    assert problem_name("navier-stokes") == problem_name("navier_stokes") == "navier_stokes"
    assert problem_name("synthetic") == "synthetic"
    assert get_task(task_name("navier_stokes-forward")).name == "navier-stokes-forward"
    with pytest.raises(UserError, match="synthetic"):
        problem_name("stokes")


def test_file_data_resolution_warns(darcy, tmp_path, capsys):
    import yaml

    torch.save({"x": torch.rand(8, N, N), "y": torch.rand(8, N, N)}, tmp_path / "data.pt")
    config = tiny_config(tmp_path / "run", source="file", path=str(tmp_path / "data.pt"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--no-progress"]) == 0
    assert "warning: data.resolution is ignored for file data" in capsys.readouterr().err


@pytest.mark.parametrize("grid", ["node", "periodic"])
def test_regrid_is_exact_for_fields_the_interpolation_represents(grid):
    from funcdiff.tasks.solve import regrid

    def field(n: int) -> torch.Tensor:  # linear on the node grid; a constant on the (wrapping) periodic grid
        x = torch.arange(n, dtype=torch.float64) / (n - 1 if grid == "node" else n)
        value = x[:, None] + 2 * x[None, :] if grid == "node" else torch.full((n, n), 3.0, dtype=torch.float64)
        return value[None, None].expand(2, 3, n, n)

    torch.testing.assert_close(regrid(field(5), (9, 9), grid), field(9))
    torch.testing.assert_close(regrid(field(9), (5, 5), grid), field(5))
    assert regrid(field(6), (7, 4), grid).shape == (2, 3, 7, 4)


def test_solve_at_another_resolution_than_the_truth_scores_on_the_sampling_grid(darcy):
    root, checkpoint, _ = darcy
    out = root / "fine.nc"
    assert main(["solve", "--checkpoint", str(checkpoint), "--task", "darcy-inverse", "--truth", str(root / "truth.nc"),
                 "--obs-fraction", "0.3", "--resolution", str(2 * N), "--num-samples", "1", "--steps", "1",
                 "--no-plot", "--no-progress", "--out", str(out)]) == 0
    with xr.open_dataset(out) as ds:
        assert ds["a_truth"].shape == (2 * N, 2 * N) and ds["a"].shape == (1, 2 * N, 2 * N)
        assert ds.attrs["scored_on"].startswith(f"the sampling grid {2 * N}x{2 * N}") and "rel_l2_a" in ds.attrs


def test_train_prints_the_held_out_samples_and_solve_warns_on_training_data(tmp_path, capsys):
    import re

    import yaml

    torch.save({"x": torch.rand(8, N, N) + 1, "y": torch.rand(8, N, N)}, tmp_path / "data.pt")
    config = tiny_config(tmp_path / "run", source="file", path=str(tmp_path / "data.pt"), test_fraction=0.25)
    del config["data"]["resolution"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    held = json.loads(re.search(r"held out for validation \(use these to evaluate\): samples (\[[0-9, ]*\]) of 8",
                                out).group(1))
    assert len(held) == 2
    used = next(i for i in range(8) if i not in held)
    solve = ["solve", "--checkpoint", str(tmp_path / "run"), "--task", "darcy-forward", "--truth",
             str(tmp_path / "data.pt"), "--obs-fraction", "0.3", "--num-samples", "1", "--steps", "2", "--no-plot",
             "--no-progress", "--out", str(tmp_path / "p.nc")]
    assert main(solve + ["--index", str(held[0])]) == 0
    assert "training split" not in capsys.readouterr().err
    assert main(solve + ["--index", str(used)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"sample {used} of" in err[0] and str(held) in err[0], err
