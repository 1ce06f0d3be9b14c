"""Batch inference as a case list: rank split, per-case parts, restart after a kill or a signal, merge, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr

from funcdiff.cli import main
from funcdiff.errors import UserError
from funcdiff.io.netcdf import fields_to_dataset, write_netcdf
from funcdiff.pde import get_problem
from funcdiff.tasks import batch
from funcdiff.tasks.batch import Case, case_seed, merge_parts, parse_indices, same_result, select_frames
from funcdiff.training.distributed import batch_rank_from_env
from funcdiff.training.signals import REQUEUE_EXIT
from tiny_darcy import tiny_darcy_run

N, CASES = 12, 10
SOLVE_ARGS = ["--task", "darcy-inverse", "--obs-fraction", "0.1", "--num-samples", "2", "--steps", "3",
              "--seed", "4", "--no-progress"]


@pytest.fixture(scope="module")
def darcy(tmp_path_factory):
    """A barely trained joint Darcy model at 12² (results need not be good, only reproducible) and a netCDF case
    file with 10 truths."""
    tmp = tmp_path_factory.mktemp("batch")
    return tmp, tiny_darcy_run(tmp, n=N, fields=CASES, cases=CASES)


def _solve_cmd(darcy, out_dir, *extra):
    tmp, ckpt = darcy
    return ["solve", "--checkpoint", str(ckpt), "--cases", str(tmp / "cases.nc"), "--out-dir", str(out_dir),
            *SOLVE_ARGS, *extra]


def _subprocess(args, rank=None, world=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "LOCAL_RANK"):
        env.pop(key, None)
    if world is not None:
        env.update(RANK=str(rank), WORLD_SIZE=str(world))
    return subprocess.Popen([sys.executable, "-m", "funcdiff", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# ---------------------------------------------------------------------------------------------- case lists
def test_parse_indices_and_errors():
    assert parse_indices("0:5", 10) == [0, 1, 2, 3, 4]
    assert parse_indices("2:10:3,0", 10) == [2, 5, 8, 0]
    assert parse_indices("7:", 10) == [7, 8, 9]
    with pytest.raises(UserError, match="up to 11 but f.h5 holds 10"):
        parse_indices("0:12", 10, "f.h5")
    with pytest.raises(UserError, match="more than once"):
        parse_indices("1,1", 10)
    with pytest.raises(UserError, match="START:STOP"):
        parse_indices("a:b", 10)


def test_select_frames_numeric_and_dated():
    times = (np.arange(20) * 0.1).astype(np.float32)  # float32 like the HDF5 reader
    assert select_frames("0.4/1.0/0.2", times) == [4, 6, 8, 10]
    assert select_frames("0.4/0.7", times) == [4, 5, 6, 7]
    with pytest.raises(UserError, match="time 0.45 is not covered.*run from 0 to"):
        select_frames("0.45/1.0/0.2", times)
    with pytest.raises(UserError, match="time 2 is not covered.*run from 0 to 1.9 every 0.1;"):
        select_frames("1.8/2.2/0.2", times)
    dated = np.arange("2020-01-01T00", "2020-01-03T00", np.timedelta64(6, "h"), dtype="datetime64[s]")
    assert select_frames("2020-01-01T06/2020-01-02T06/12h", dated) == [1, 3, 5]
    with pytest.raises(UserError, match="2020-01-03T00:00:00 is not covered"):
        select_frames("2020-01-02T00/2020-01-03T00/12h", dated)
    with pytest.raises(UserError, match="holds dates"):
        select_frames("0/1/1", dated)


def test_rank_split_covers_every_case_once_and_reads_torchrun_or_slurm():
    cases = [Case(i) for i in range(10)]
    shares = [batch.shard(cases, r, 3) for r in range(3)]
    assert sorted(c.index for s in shares for c in s) == list(range(10))
    assert [len(s) for s in shares] == [4, 3, 3]
    assert batch_rank_from_env({"RANK": "1", "WORLD_SIZE": "4", "SLURM_PROCID": "3"}) == (1, 4)
    assert batch_rank_from_env({"SLURM_PROCID": "2", "SLURM_NTASKS": "3"}) == (2, 3)
    assert batch_rank_from_env({}) == (0, 1)
    with pytest.raises(ValueError, match="RANK=4"):
        batch_rank_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    assert case_seed(0, Case(3)) == case_seed(0, Case(3)) != case_seed(1, Case(3)) != case_seed(0, Case(4))


# ---------------------------------------------------------------------------------------------- solve cases
def test_two_ranks_write_the_merged_result_of_one_rank(darcy, tmp_path):
    """Two processes given RANK/WORLD_SIZE split 10 cases; the merged file equals the single-process one."""
    assert main(_solve_cmd(darcy, tmp_path / "one")) == 0
    procs = [_subprocess(_solve_cmd(darcy, tmp_path / "two"), rank=r, world=2) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert "5 case(s) computed" in outs[0][0] and "rank 1/2" in outs[1][0]
    assert main(["merge", str(tmp_path / "one")]) == 0
    assert main(["merge", str(tmp_path / "two"), "--out", str(tmp_path / "two.nc")]) == 0
    assert same_result(tmp_path / "one" / "merged.nc", tmp_path / "two.nc")
    with xr.open_dataset(tmp_path / "two.nc") as ds:
        assert ds.sizes["case"] == CASES and list(ds["case"].values) == list(range(CASES))
        assert ds["rel_l2_a"].dims == ("case",) and np.isfinite(ds["rel_l2_a"].values).all()
        assert len(set(ds["case_seed"].values.tolist())) == CASES
        # one case equals the single-case command with that case's seed
        seed = int(ds["case_seed"].values[3])
        a_mean = ds["a_mean"].values[3]
    tmp, ckpt = darcy
    single = tmp_path / "single.nc"
    assert main(["solve", "--checkpoint", str(ckpt), "--truth", str(tmp / "cases.nc"), "--index", "3",
                 "--out", str(single), "--no-plot", *SOLVE_ARGS[:-3], "--seed", str(seed), "--no-progress"]) == 0
    with xr.open_dataset(single) as ds:
        np.testing.assert_array_equal(ds["a_mean"].values, a_mean)


def test_killed_run_resumes_without_losing_or_duplicating_cases(darcy, tmp_path, monkeypatch, capsys):
    """A run that dies after 3 cases (with a half-written temporary file) is rerun: the 7 others are computed,
    the 3 finished ones are not recomputed, and the merged file equals an uninterrupted run's."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(_solve_cmd(darcy, tmp_path / "full")) == 0
    original = batch.BatchRun.run
    written: list[str] = []

    def dying_run(self, compute, progress=True):
        def compute_then_die(case, part):
            if len(written) == 3:
                (part.parent / f".{part.name}.abc123.tmp.nc").write_bytes(b"half a netCDF file")
                raise KeyboardInterrupt("killed")
            compute(case, part)
            written.append(case.key)
        return original(self, compute_then_die, progress=progress)

    monkeypatch.setattr(batch.BatchRun, "run", dying_run)
    assert main(_solve_cmd(darcy, tmp_path / "resumed")) == 130  # Ctrl-C: one line saying how to resume
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err
    monkeypatch.setattr(batch.BatchRun, "run", original)
    parts = tmp_path / "resumed" / "parts"
    assert len(list(parts.glob("case_*.nc"))) == 3 and len(list(parts.glob(".*tmp*"))) == 1
    with pytest.raises(UserError, match="7 of 10 cases are not finished"):
        merge_parts(tmp_path / "resumed")
    mtimes = {p.name: p.stat().st_mtime_ns for p in parts.glob("case_*.nc")}
    assert main(_solve_cmd(darcy, tmp_path / "resumed")) == 0
    assert {p.name: p.stat().st_mtime_ns for p in parts.glob("case_*.nc") if p.name in mtimes} == mtimes
    assert len(list(parts.glob("case_*.nc"))) == CASES and not list(parts.glob(".*tmp*"))
    merge_parts(tmp_path / "full")
    merge_parts(tmp_path / "resumed")
    assert same_result(tmp_path / "full" / "merged.nc", tmp_path / "resumed" / "merged.nc")


def test_sigterm_finishes_the_case_in_hand_and_asks_for_requeue(darcy, tmp_path, monkeypatch, capsys):
    """A real SIGTERM to this process while case 3 is being computed: case 3 is finished and written, no further
    case is started, the status is 75 (requeue), and the rerun computes exactly the rest."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    original = batch.BatchRun.run
    started: list[str] = []

    def signalled_run(self, compute, progress=True):
        def compute_with_signal(case, part):
            started.append(case.key)
            if len(started) == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # arrives while this case is in hand
            compute(case, part)
        return original(self, compute_with_signal, progress=progress)

    monkeypatch.setattr(batch.BatchRun, "run", signalled_run)
    assert main(_solve_cmd(darcy, tmp_path / "out")) == REQUEUE_EXIT
    assert "stopped by SIGTERM" in capsys.readouterr().out
    parts = tmp_path / "out" / "parts"
    assert len(started) == 3 and len(list(parts.glob("case_*.nc"))) == 3 and not list(parts.glob(".*tmp*"))
    monkeypatch.setattr(batch.BatchRun, "run", original)
    assert main(_solve_cmd(darcy, tmp_path / "out")) == 0
    assert "7 case(s) computed, 3 already finished" in capsys.readouterr().out
    assert len(list(parts.glob("case_*.nc"))) == CASES


def test_idle_ranks_and_clear_errors(darcy, tmp_path, capsys, monkeypatch):
    tmp, ckpt = darcy
    monkeypatch.setenv("SLURM_PROCID", "3")  # srun -n 4 over 2 cases: ranks 2 and 3 have nothing to do
    monkeypatch.setenv("SLURM_NTASKS", "4")
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert main(_solve_cmd(darcy, tmp_path / "idle", "--indices", "0:2")) == 0
    assert "rank 3/4: no cases for this rank" in capsys.readouterr().out
    assert not list((tmp_path / "idle" / "parts").glob("case_*"))
    monkeypatch.delenv("SLURM_PROCID")
    monkeypatch.delenv("SLURM_NTASKS")
    # a case file without the task's variables
    d = get_problem("darcy").generate(2, N, generator=torch.Generator().manual_seed(1))
    write_netcdf(fields_to_dataset(d["a"][:, None], ("a",), grid="node"), tmp_path / "only_a.nc")
    assert main(_solve_cmd(darcy, tmp_path / "bad")[:4] + [str(tmp_path / "only_a.nc"), "--out-dir",
                                                           str(tmp_path / "bad"), *SOLVE_ARGS]) == 2
    err = capsys.readouterr().err
    assert "case file" in err and "['u']" in err and "darcy-inverse" in err and "Traceback" not in err
    assert main(_solve_cmd(darcy, tmp_path / "x", "--indices", "5:20")) == 2
    assert "--indices '5:20': asks for samples up to 19" in capsys.readouterr().err
    # the same folder with other settings is refused
    assert main(_solve_cmd(darcy, tmp_path / "idle", "--indices", "0:2", "--steps", "4")) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "nowhere")]) == 2
    assert "not a batch output folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- forecast cases
@pytest.fixture(scope="module")
def forecaster(tmp_path_factory):
    from test_forecast import tiny_forecaster

    tmp = tmp_path_factory.mktemp("batch_forecast")
    tiny_forecaster(tmp, test_fraction=0.34)
    return tmp


def _forecast_cmd(tmp, out_dir, *extra):
    return ["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--lead-steps", "3",
            "--members", "2", "--seed", "2", "--out-dir", str(out_dir), "--no-progress", *extra]


def test_forecast_init_times_on_two_ranks_equal_one_rank(forecaster, tmp_path, monkeypatch):
    tmp = forecaster
    select = ["--init-times", "0.4/1.0/0.2", "--index", "1", "--index", "4"]
    monkeypatch.delenv("RANK", raising=False)
    assert main(_forecast_cmd(tmp, tmp_path / "one", *select)) == 0
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (1, 0):  # any order
        monkeypatch.setenv("RANK", str(rank))
        assert main(_forecast_cmd(tmp, tmp_path / "two", *select)) == 0
    merged = [merge_parts(tmp_path / d) for d in ("one", "two")]
    assert same_result(*merged)
    from funcdiff.tasks.forecast_io import read_forecast

    members = read_forecast(merged[0])
    assert members.shape[:4] == (8, 2, 1, 3)  # 2 trajectories x 4 start times, 2 members, 1 channel, 3 leads
    with xr.open_dataset(merged[0]) as ds:
        assert list(ds["init_index"].values) == [1, 1, 1, 1, 4, 4, 4, 4]
        assert list(ds["init_frame"].values) == [4, 6, 8, 10] * 2
        assert list(ds["case"].values) == list(range(8))
    # a case is the single-start forecast with the case's seed
    from funcdiff.tasks.forecast import forecast
    from funcdiff.tasks.forecast_io import initial_from_file

    initial, _, _, _ = initial_from_file(tmp / "adv.h5", ("u",), 4, 6, 1)
    alone = forecast(tmp / "run", initial, 3, members=2, seed=case_seed(2, Case(4, 6))).to_tensor()
    torch.testing.assert_close(members[5], alone[0], rtol=0, atol=0)


# Run before anything is imported: dask looks not installed (find_spec None, import fails), as after `pip install -e .`.
NO_DASK = """
import sys
class _NoDask:
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        return None if name.split(".")[0] == "dask" else self.inner.find_spec(name, path, target)
    def __getattr__(self, name):
        return getattr(self.inner, name)
sys.meta_path[:] = [_NoDask(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
"""


def test_merge_needs_no_dask(darcy, forecaster, tmp_path, monkeypatch):
    """`funcdiff merge` works in the base install (dask is only in the test/era5 extras): a process in which dask
    cannot be imported merges solve and forecast parts into the same file as this process does."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(_solve_cmd(darcy, tmp_path / "solve", "--indices", "0:3")) == 0
    assert main(_forecast_cmd(forecaster, tmp_path / "forecast", "--init-times", "0.4/0.8/0.2", "--index", "1")) == 0
    code = NO_DASK + "import importlib.util; assert importlib.util.find_spec('dask') is None\n" \
        "from funcdiff.cli import main; sys.exit(main(['merge', sys.argv[1], '--out', sys.argv[2]]))"
    for kind, cases in (("solve", 3), ("forecast", 3)):
        run = subprocess.run([sys.executable, "-c", code, str(tmp_path / kind), str(tmp_path / f"{kind}-nodask.nc")],
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"({cases} cases)" in run.stdout
        assert same_result(merge_parts(tmp_path / kind), tmp_path / f"{kind}-nodask.nc")


def test_forecast_batch_errors(forecaster, tmp_path, capsys):
    tmp = forecaster
    assert main(_forecast_cmd(tmp, tmp_path / "a", "--init-times", "0.4/9.0/0.2")) == 2
    err = capsys.readouterr().err
    assert "--init-times '0.4/9.0/0.2': time" in err and "is not covered by" in err and "frames run from 0 to" in err
    assert main(_forecast_cmd(tmp, tmp_path / "b", "--indices", "0:9")) == 2
    assert "holds 6" in capsys.readouterr().err
    assert main(["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"),
                 "--lead-steps", "3"]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_solve_signature_is_the_settings_only(tmp_path):
    """The signature of ``solve --cases`` comes from SolveSettings: an argument that does not change results (a new
    cosmetic flag) leaves it unchanged, a setting changes it; a folder signed the old way (all arguments minus an
    exclusion list) keeps its signature."""
    import argparse
    import json

    from funcdiff.cli import build_parser
    from funcdiff.cli.batch import signature_of, solve_signature
    from funcdiff.cli.solve import settings_from_args

    argv = ["solve", "--checkpoint", "ckpt.pt", "--cases", "cases.nc", "--out-dir", str(tmp_path), *SOLVE_ARGS]
    args = build_parser().parse_args(argv)
    sign = solve_signature(args, settings_from_args(args), "darcy-inverse", 2)
    cosmetic = argparse.Namespace(**vars(args), colour_map="magma")
    assert solve_signature(cosmetic, settings_from_args(cosmetic), "darcy-inverse", 2) == sign
    other = build_parser().parse_args([*argv, "--cg-iters", "2"])
    assert solve_signature(other, settings_from_args(other), "darcy-inverse", 2) != sign
    legacy = signature_of(args, "solve", checkpoint_step=2)
    (tmp_path / "cases.json").write_text(json.dumps({"kind": "solve", "signature": legacy, "cases": []}))
    assert solve_signature(args, settings_from_args(args), "darcy-inverse", 2) == legacy
