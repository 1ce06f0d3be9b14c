"""funcdiff HDF5 layout: writer round trip, deterministic resume, argument checks, CLI."""

from __future__ import annotations

import argparse
import json

import h5py
import numpy as np
import pytest
import torch

from funcdiff.data import SYNTHETIC, generate_to_hdf5, load_fields, partial_path, read_funcdiff_hdf5
from funcdiff.data.synthetic import SyntheticProblem


def _fake_pair(num_samples, resolution, *, generator, device="cpu", dtype=torch.float32, scale=1.0):
    a = torch.randn(num_samples, resolution, resolution, generator=generator, dtype=dtype).to(device)
    return {"a": scale * a, "u": torch.cumsum(a, dim=-1)}


def _fake_traj(num_samples, resolution, *, generator, device="cpu", dtype=torch.float32, steps=5):
    u0 = torch.randn(num_samples, resolution, generator=generator, dtype=dtype)
    t = torch.linspace(0.0, 1.0, steps, dtype=dtype)
    return {"u": u0[:, None, :] * torch.exp(-t)[None, :, None], "t": t}


PAIR = SyntheticProblem("fake_pair", "pair", ("a", "u"), {"scale": 1.0}, _fake_pair, "fake pair", "fake-solver")
TRAJ = SyntheticProblem("fake_traj", "trajectory", ("u",), {"steps": 5}, _fake_traj, "fake trajectory")


def test_pair_round_trip_values_and_attributes(tmp_path):
    out = generate_to_hdf5(PAIR, tmp_path / "p.h5", num_samples=7, resolution=6, seed=3, batch_size=3,
                           params={"scale": 2.0}, progress=False)
    assert out == tmp_path / "p.h5" and out.exists() and not partial_path(out).exists()
    data = load_fields(out)
    assert data.source == "funcdiff"
    # expected values: batch i drawn from its own seeded generator
    from funcdiff.data import batch_seed
    expected = [_fake_pair(n, 6, generator=torch.Generator().manual_seed(batch_seed(3, i)), scale=2.0)
                for i, n in enumerate((3, 3, 1))]
    for k in ("a", "u"):
        torch.testing.assert_close(data.fields[k], torch.cat([e[k] for e in expected]), rtol=0, atol=0)
    a = data.attrs
    assert (a["pde"], a["kind"], a["fields"], a["resolution"], a["dim"], a["seed"]) == ("fake_pair", "pair",
                                                                                        ["a", "u"], 6, 2, 3)
    assert a["params"] == {"scale": 2.0} and a["solver"] == "fake-solver" and a["complete"]
    assert a["num_written"] == a["num_samples"] == 7 and a["funcdiff_version"] and a["created"]
    np.testing.assert_allclose(data.coords["x"].numpy(), np.arange(6) / 6)
    np.testing.assert_allclose(data.coords["y"].numpy(), np.arange(6) / 6)
    for k in ("a", "u"):
        values = data.fields[k].double()
        assert a["normalization"][k]["mean"] == pytest.approx(values.mean().item(), abs=1e-12)
        assert a["normalization"][k]["std"] == pytest.approx(values.std(correction=0).item(), rel=1e-9)
    with h5py.File(out, "r") as f:
        assert f["a"].chunks is not None and f["a"].attrs["std"] == a["normalization"]["a"]["std"]


def test_trajectory_layout_has_times(tmp_path):
    out = generate_to_hdf5(TRAJ, tmp_path / "t.h5", num_samples=4, resolution=8, batch_size=16, progress=False)
    data = read_funcdiff_hdf5(out)
    assert data.fields["u"].shape == (4, 5, 8) and data.attrs["dim"] == 1
    torch.testing.assert_close(data.coords["t"], torch.linspace(0, 1, 5, dtype=torch.float32))
    torch.testing.assert_close(data.fields["u"][:, -1], data.fields["u"][:, 0] * np.exp(-1.0))


@pytest.mark.parametrize("problem", [PAIR, SYNTHETIC], ids=["fake", "synthetic"])
def test_resume_is_bit_identical(tmp_path, problem):
    kwargs = dict(num_samples=10, resolution=8, seed=11, batch_size=3, progress=False)
    straight = generate_to_hdf5(problem, tmp_path / "a.h5", **kwargs)
    target = tmp_path / "b.h5"
    first = generate_to_hdf5(problem, target, max_batches=2, **kwargs)
    assert first == partial_path(target) and not target.exists()
    with h5py.File(first, "r") as f:
        assert f.attrs["num_written"] == 6 and not f.attrs["complete"]
        np.testing.assert_array_equal(f["a"][6:], 0)  # unwritten rows untouched
    generate_to_hdf5(problem, target, max_batches=1, **kwargs)
    assert generate_to_hdf5(problem, target, **kwargs) == target and not partial_path(target).exists()
    with h5py.File(straight, "r") as f1, h5py.File(target, "r") as f2:
        for k in problem.fields:
            np.testing.assert_array_equal(f1[k][:], f2[k][:])
        for key in ("normalization", "params", "generation_args", "num_written"):
            assert f1.attrs[key] == f2.attrs[key]


def test_resume_survives_exception_mid_run(tmp_path):
    calls = {"n": 0}

    def flaky(num_samples, resolution, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return _fake_pair(num_samples, resolution, **kw)

    problem = SyntheticProblem("fake_pair", "pair", ("a", "u"), {"scale": 1.0}, flaky, "")
    kwargs = dict(num_samples=9, resolution=4, seed=1, batch_size=2, progress=False)
    with pytest.raises(RuntimeError, match="simulated"):
        generate_to_hdf5(problem, tmp_path / "c.h5", **kwargs)
    assert read_funcdiff_hdf5(partial_path(tmp_path / "c.h5"), allow_partial=True).num_samples == 4
    generate_to_hdf5(problem, tmp_path / "c.h5", **kwargs)
    assert calls["n"] == 3 + 3  # only the 3 unfinished batches were generated again
    ref = generate_to_hdf5(PAIR, tmp_path / "ref.h5", **kwargs)
    torch.testing.assert_close(load_fields(ref).fields["u"], load_fields(tmp_path / "c.h5").fields["u"],
                               rtol=0, atol=0)


def test_argument_mismatch_and_overwrite(tmp_path):
    out = tmp_path / "m.h5"
    kwargs = dict(num_samples=6, resolution=4, batch_size=2, progress=False)
    generate_to_hdf5(PAIR, out, seed=0, max_batches=1, **kwargs)
    with pytest.raises(ValueError, match=r"seed: file has 0, requested 1"):
        generate_to_hdf5(PAIR, out, seed=1, **kwargs)
    with pytest.raises(ValueError, match="params"):
        generate_to_hdf5(PAIR, out, seed=0, params={"scale": 3.0}, **kwargs)
    generate_to_hdf5(PAIR, out, seed=1, overwrite=True, **kwargs)
    assert load_fields(out).attrs["seed"] == 1
    assert generate_to_hdf5(PAIR, out, seed=1, **kwargs) == out  # complete + same args: nothing to do
    with pytest.raises(ValueError, match="different arguments"):
        generate_to_hdf5(PAIR, out, seed=2, **kwargs)


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['nu'\].*valid: \['scale'\]"):
        generate_to_hdf5(PAIR, tmp_path / "x.h5", num_samples=2, resolution=4, params={"nu": 1})
    part = partial_path(tmp_path / "corrupt.h5")
    part.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="not a readable funcdiff HDF5 file"):
        generate_to_hdf5(PAIR, tmp_path / "corrupt.h5", num_samples=2, resolution=4, progress=False)
    generate_to_hdf5(PAIR, tmp_path / "i.h5", num_samples=4, resolution=4, batch_size=2, max_batches=1,
                     progress=False)
    with pytest.raises(ValueError, match=r"incomplete \(2 of 4"):
        load_fields(partial_path(tmp_path / "i.h5"))


def test_cli_generate_info_list(tmp_path, capsys):
    from funcdiff.cli import data as cli_data

    parser = argparse.ArgumentParser()
    cli_data.register(parser.add_subparsers(dest="verb"))
    out = tmp_path / "syn.h5"
    args = parser.parse_args(["data", "generate", "synthetic", "--num-samples", "5", "--resolution", "8",
                              "--out", str(out), "--batch-size", "2", "--seed", "4", "--set", "n_bumps=0",
                              "--set", "dim=1", "--no-progress"])
    assert args.func(args) == 0
    data = load_fields(out)
    assert data.fields["a"].shape == (5, 8) and data.attrs["params"]["n_bumps"] == 0
    assert json.loads(json.dumps(data.attrs["generation_args"]))["seed"] == 4
    args = parser.parse_args(["data", "info", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "format: funcdiff" in printed and "/a (5, 8) float32" in printed
    args = parser.parse_args(["data", "list"])
    assert args.func(args) == 0 and "synthetic" in capsys.readouterr().out
    with pytest.raises(ValueError, match="PARAM=VALUE"):
        cli_data.parse_overrides(["oops"])


CHEAP = {"navier_stokes": {"t_final": 0.02}, "navier_stokes_trajectory": {"times": [0.0, 0.01, 0.02]},
         "burgers": {"times": [0.0, 0.01, 0.02]}, "burgers_shock": {"num_frames": 3},
         "burgers_shock_forced": {"num_frames": 3},
         "kolmogorov": {"spin_up": 0.01, "dt": 0.01, "num_frames": 3}}


def test_every_registered_problem_round_trips(tmp_path):
    pde = pytest.importorskip("funcdiff.pde", reason="funcdiff.pde registry not available")
    from funcdiff.data import batch_seed

    for name, problem in pde.PROBLEMS.items():
        params = CHEAP.get(name, {})
        out = generate_to_hdf5(problem, tmp_path / f"{name}.h5", num_samples=3, resolution=8, seed=2,
                               batch_size=2, params=params, progress=False)
        data = load_fields(out)
        direct = problem.generate(2, 8, generator=torch.Generator().manual_seed(batch_seed(2, 0)), **params)
        for k in problem.fields:
            torch.testing.assert_close(data.fields[k][:2], direct[k], rtol=0, atol=0, msg=f"{name}/{k}")
        if problem.kind == "trajectory":
            assert data.fields[problem.fields[0]].shape[:2] == (3, 3)
            torch.testing.assert_close(data.coords["t"], direct["t"])
        node = name in ("darcy", "poisson", "helmholtz")
        expected_x = np.linspace(0, 1, 8) if node else np.arange(8) / 8
        np.testing.assert_allclose(data.coords["x"].numpy(), expected_x, rtol=1e-6, err_msg=name)
        assert data.attrs["grid"]["type"] == ("node" if node else "periodic")


KILLER = """
import os, signal, sys, torch
from funcdiff.data import SYNTHETIC, generate_to_hdf5
from funcdiff.data.synthetic import SyntheticProblem
calls = []
def generate(n, r, **kw):
    calls.append(n)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # no Python clean-up: the file is left as a crash leaves it
    return SYNTHETIC.generate(n, r, **kw)
problem = SyntheticProblem("synthetic", "pair", ("a", "u"), SYNTHETIC.defaults, generate)
generate_to_hdf5(problem, sys.argv[1], num_samples=9, resolution=8, seed=5, batch_size=2, progress=False)
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="needs POSIX SIGKILL")
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "killed.h5"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(target)], capture_output=True, timeout=120)
    assert proc.returncode == -9 and not target.exists()
    with h5py.File(partial_path(target), "r") as f:
        assert f.attrs["num_written"] == 4
    kwargs = dict(num_samples=9, resolution=8, seed=5, batch_size=2, progress=False)
    generate_to_hdf5(SYNTHETIC, target, **kwargs)
    reference = generate_to_hdf5(SYNTHETIC, tmp_path / "ref.h5", **kwargs)
    with h5py.File(reference, "r") as f1, h5py.File(target, "r") as f2:
        for k in ("a", "u"):
            np.testing.assert_array_equal(f1[k][:], f2[k][:])
