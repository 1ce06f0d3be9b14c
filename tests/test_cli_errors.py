"""The CLI's error catalogue: every user mistake is one line ``funcdiff <verb>: error: ...`` and exit status 2,
``--debug``/``FUNCDIFF_DEBUG=1`` show the traceback, and bugs keep theirs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import xarray as xr
import yaml

from funcdiff.cli import main
from funcdiff.config import config_from_dict
from funcdiff.guidance import SparseObservation, save_observation
from funcdiff.io.netcdf import fields_to_dataset, write_netcdf
from funcdiff.training import Trainer

N = 8


def tiny_config(out_dir, name: str = "darcy-tiny", channels=("a", "u"), **data) -> dict:
    """A 2-step run config of a tiny FNO on N² fields (seconds on one core)."""
    return {
        "name": name,
        "data": {"source": "synthetic", "channels": list(channels), "resolution": N, "num_samples": 16, **data},
        "noise": {"smoothness": 2.0, "length_scale": 0.1},
        "model": {"backbone": "fno", "n_modes": [3, 3], "hidden_channels": 4, "n_layers": 1, "emb_dim": 8,
                  "norm_groups": 1},
        "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "log_every": 0, "checkpoint_every": 0,
                  "eval_every": 0, "out_dir": str(out_dir), "device": "cpu"},
        "sample": {"steps": 2},
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny Darcy-named checkpoint, an (a, u) truth netCDF, its NaN twin and a truncated checkpoint."""
    root = tmp_path_factory.mktemp("cli_errors")
    trainer = Trainer.from_config(config_from_dict(tiny_config(root / "run")), progress=False)
    trainer.fit()
    checkpoint = trainer.save_checkpoint()
    truth = torch.rand(2, 2, N, N) + 1.0
    write_netcdf(fields_to_dataset(truth, ("a", "u"), grid="node"), root / "truth.nc")
    truth[1, 0, 2, 3] = float("nan")
    write_netcdf(fields_to_dataset(truth, ("a", "u"), grid="node"), root / "nan_truth.nc")
    data = checkpoint.read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    return {"root": root, "checkpoint": checkpoint, "truth": root / "truth.nc", "nan_truth": root / "nan_truth.nc",
            "truncated": root / "truncated.pt"}


def user_error(argv: list[str], capsys) -> str:
    """Run the CLI in-process; assert exit status 2 with one stderr line and no traceback; return the line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def solve_args(f, *extra) -> list:
    return ["solve", "--checkpoint", f["checkpoint"], "--task", "darcy-inverse", "--truth", f["truth"],
            "--obs-fraction", "0.2", "--num-samples", "1", "--steps", "1", "--no-plot", "--no-progress",
            "--out", f["root"] / "posterior.nc", *extra]


def test_missing_checkpoint(files, capsys):
    line = user_error(["solve", "--checkpoint", files["root"] / "nope.pt", "--task", "darcy-inverse",
                       "--truth", files["truth"], "--obs-fraction", "0.1"], capsys)
    assert line.startswith("funcdiff solve: error: no such checkpoint:") and "nope.pt" in line
    line = user_error(["sample", "--checkpoint", files["root"] / "empty_dir", "--resolution", "8",
                       "--num-samples", "1", "--out", files["root"] / "s.nc"], capsys)
    assert line.startswith("funcdiff sample: error:") and "empty_dir" in line


def test_truncated_checkpoint(files, capsys):
    line = user_error(["sample", "--checkpoint", files["truncated"], "--resolution", "8", "--num-samples", "1",
                       "--out", files["root"] / "s.nc"], capsys)
    assert "truncated" in line and "truncated.pt" in line


def test_nan_truth(files, capsys):
    args = solve_args(files)
    args[args.index(files["truth"])] = files["nan_truth"]
    line = user_error([*args, "--index", "1"], capsys)
    assert "non-finite" in line and "1 NaN" in line


def test_nan_training_data(files, capsys, tmp_path):
    a, u = torch.rand(8, N, N), torch.rand(8, N, N)
    u[3, 1, 1] = float("nan")
    torch.save({"x": a, "y": u}, tmp_path / "data.pt")
    config = tiny_config(tmp_path / "run", source="file", path=str(tmp_path / "data.pt"))
    del config["data"]["resolution"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    line = user_error(["train", "--config", tmp_path / "c.yaml", "--no-progress"], capsys)
    assert line.startswith("funcdiff train: error: non-finite values") and "'u': 1 NaN" in line


def test_unknown_task(files, capsys):
    args = solve_args(files)
    args[args.index("darcy-inverse")] = "darcy-invrse"
    line = user_error(args, capsys)
    assert "unknown task 'darcy-invrse'" in line and "darcy-inverse" in line


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.1"])
def test_bad_fraction(files, capsys, fraction):
    args = solve_args(files)
    args[args.index("0.2")] = fraction
    assert "fraction must be in (0, 1]" in user_error(args, capsys)
    line = user_error(["observe", "--truth", files["truth"], "--task", "darcy-inverse", "--fraction", fraction,
                       "--out", files["root"] / "obs.nc"], capsys)
    assert line.startswith("funcdiff observe: error:") and "fraction" in line


@pytest.mark.parametrize("flag, value", [("--resolution", "-4"), ("--num-samples", "0"), ("--steps", "0")])
def test_non_positive_integers(files, capsys, flag, value):
    line = user_error([*solve_args(files), flag, value], capsys)
    assert f"argument {flag}: must be a positive integer, got {value}" in line
    if flag != "--steps":
        line = user_error(["sample", "--checkpoint", files["checkpoint"], "--resolution", "8", "--num-samples", "1",
                           "--out", files["root"] / "s.nc", flag, value], capsys)
        assert line.startswith("funcdiff sample: error: argument") and flag in line


def test_unknown_config_key(files, capsys, tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path / "run")))
    line = user_error(["train", "--config", tmp_path / "c.yaml", "--set", "train.stpes=3"], capsys)
    assert "stpes" in line and "steps" in line
    assert "no such config file" in user_error(["train", "--config", tmp_path / "missing.yaml"], capsys)


def test_negative_data_resolution_is_rejected(capsys, tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path / "run")))
    line = user_error(["train", "--config", tmp_path / "c.yaml", "--set", "data.resolution=-32"], capsys)
    assert "data.resolution must be >= 2" in line


def test_off_domain_sensors(files, capsys):
    coords = torch.tensor([[0.1, 0.2], [0.5, 0.5], [0.3, 0.4]], dtype=torch.float64)
    save_observation(SparseObservation(coords, channels=(1,), values=torch.zeros(1, 1, 3), grid="node",
                                       channel_names=("u",)), files["root"] / "obs.nc")
    with xr.open_dataset(files["root"] / "obs.nc") as ds:
        ds = ds.load()
    ds["sensor_coords"].values[1] = [1.3, 0.5]
    ds.to_netcdf(files["root"] / "off.nc")
    args = solve_args(files)
    i = args.index("--obs-fraction")
    args[i:i + 2] = ["--observations", files["root"] / "off.nc"]
    line = user_error(args, capsys)
    assert "off.nc" in line and "1 of 3 sensors lie outside the node domain" in line


def test_wrong_pde_checkpoint(files, capsys):
    args = solve_args(files)
    args[args.index("darcy-inverse")] = "navier_stokes-inverse"  # either spelling of the problem is a task name
    line = user_error(args, capsys)
    assert "trained on 'darcy'" in line and "navier-stokes-inverse" in line


def test_unknown_problem_lists_synthetic(capsys, tmp_path):
    line = user_error(["data", "generate", "darcyy", "--num-samples", "1", "--resolution", "8",
                       "--out", tmp_path / "x.h5"], capsys)
    assert line.startswith("funcdiff data generate: error: unknown problem 'darcyy'") and "synthetic" in line
    assert "navier_stokes" in line


def test_debug_flag_and_environment_show_the_traceback(files, capsys, monkeypatch):
    args = solve_args(files)
    args[args.index("darcy-inverse")] = "darcy-invrse"
    for argv in (["--debug", *args], [*args, "--debug"]):
        with pytest.raises(ValueError, match="unknown task"):
            main([str(a) for a in argv])
    monkeypatch.setenv("FUNCDIFF_DEBUG", "1")
    with pytest.raises(ValueError, match="unknown task"):
        main([str(a) for a in args])


def test_bugs_keep_their_traceback(monkeypatch):
    import funcdiff.cli.data as data_cli

    def broken(args):
        raise ValueError("an internal inconsistency")  # not a UserError: a bug

    monkeypatch.setattr(data_cli, "run_list", broken)
    with pytest.raises(ValueError, match="internal inconsistency"):
        main(["data", "list"])


def test_real_process_prints_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "FUNCDIFF_DEBUG": ""}
    result = subprocess.run([sys.executable, "-m", "funcdiff.cli", "sample", "--checkpoint", str(tmp_path / "x.pt"),
                             "--resolution", "8", "--num-samples", "1", "--out", str(tmp_path / "s.nc")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"funcdiff sample: error: no such checkpoint: {tmp_path / 'x.pt'}"]
    assert not (tmp_path / "s.nc").exists()


def test_cuda_graphs_without_a_cuda_device(files, capsys):
    """``--cuda-graphs`` on a CPU device is a user's mistake (one line, exit 2), not a silently ignored flag; the
    library's ``sample(cuda_graphs=True)`` on a CPU is a ValueError."""
    line = user_error(["sample", "--checkpoint", files["checkpoint"], "--resolution", "8", "--num-samples", "1",
                       "--out", files["root"] / "g.nc", "--cuda-graphs", "--no-progress"], capsys)
    assert line.startswith("funcdiff sample: error:") and "--cuda-graphs needs a CUDA --device" in line
    from funcdiff.noise import GaussianRandomField
    from funcdiff.sampling import sample

    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        sample(lambda x, sigma: x, (1, 1, 8, 8), GaussianRandomField(dim=2), steps=2, device="cpu", cuda_graphs=True)
    for extra in ([], ["--cases", files["truth"], "--out-dir", files["root"] / "graphed_parts"]):
        line = user_error(solve_args(files, "--cuda-graphs", *extra), capsys)
        assert line == "funcdiff solve: error: --cuda-graphs needs a CUDA --device, got 'cpu'", line
    assert not (files["root"] / "graphed_parts").exists()


@pytest.mark.parametrize("method, extra, cause", [
    ("enkg", [], "largest noise level is read on the host"),
    ("dps-physics", [], "solver checks its input and solves on the host"),
    ("mmps-physics", [], "solver checks its input and solves on the host"),
    ("dps", ["--pde-guidance"], "PDE guidance decides on the host"),
])
def test_solve_methods_whose_steps_wait_for_the_host_are_not_graphed(files, capsys, monkeypatch, method, extra,
                                                                     cause):
    """``solve --cuda-graphs`` with a method whose every step waits for the host (so it could not be recorded) is
    one line naming the method and why, before any step runs (not a failed capture at the first step); a
    ``--cases`` batch says it before writing anything. The device check passes as if on a GPU; the method check
    comes first."""
    import funcdiff.cli as cli
    from funcdiff.tasks import samplers

    monkeypatch.setattr(cli, "check_cuda_graphs", lambda cuda_graphs, device: None)
    steps = []
    monkeypatch.setattr(samplers, "sample", lambda *a, **k: steps.append(k) or pytest.fail("sampling started"))
    parts = files["root"] / f"graphed_{method}_parts"
    single = solve_args(files, "--method", method, "--num-samples", "2", "--cuda-graphs", *extra)
    batch = [a for a in single if a not in ("--truth", files["truth"])] + ["--cases", files["truth"], "--out-dir",
                                                                         parts]
    for argv in (single, batch):
        line = user_error(argv, capsys)
        assert line.startswith(f"funcdiff solve: error: method {method!r} cannot be replayed from CUDA graphs "
                               "here: ") and cause in line and line.endswith("run without --cuda-graphs"), line
    assert not steps and not parts.exists()  # a batch is refused before its manifest
