"""Reference computations for the redesign (issue 19): what every user path produces for fixed seeds, from stored
tiny checkpoints and data. ``tests/data/make_golden.py`` ran them once with the code before the redesign and
stored the results; ``tests/test_golden.py`` runs them again and compares (fp32 round-off allowed, for the
issue-20 kernels). Each case returns a dict of named arrays."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import xarray as xr

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"


def _cli(*argv) -> None:
    from funcdiff.cli import main

    code = main([str(a) for a in argv])
    if code != 0:
        raise RuntimeError(f"funcdiff {' '.join(map(str, argv))} exited with {code}")


def _read(path: Path, names) -> dict:
    with xr.open_dataset(path) as ds:
        return {n: np.asarray(ds[n].values, dtype=np.float64) for n in names}


def sample_case(tmp: Path) -> dict:
    out = {}
    for res in (12, 18):  # the training grid and a zero-shot finer one
        _cli("sample", "--checkpoint", GOLDEN / "field.pt", "--resolution", res, "--num-samples", 2, "--seed", 3,
             "--out", tmp / f"s{res}.nc", "--no-progress")
        out.update({f"{k}_{res}": v for k, v in _read(tmp / f"s{res}.nc", ("a", "u")).items()})
    return out


def solve_case(tmp: Path) -> dict:
    out = {}
    for method in ("dps", "mmps", "enkg"):
        _cli("solve", "--checkpoint", GOLDEN / "field.pt", "--task", "darcy-forward", "--truth", GOLDEN / "cases.nc",
             "--index", 1, "--obs-fraction", 0.3, "--num-samples", 2, "--steps", 4, "--seed", 1, "--method", method,
             "--out", tmp / f"{method}.nc", "--no-plot", "--no-progress")
        out.update({f"{k}_{method}": v for k, v in _read(tmp / f"{method}.nc", ("u_mean", "a_mean")).items()})
    return out


def batch_case(tmp: Path) -> dict:
    _cli("solve", "--checkpoint", GOLDEN / "field.pt", "--task", "darcy-inverse", "--cases", GOLDEN / "cases.nc",
         "--obs-fraction", 0.3, "--num-samples", 1, "--steps", 3, "--seed", 2, "--out-dir", tmp / "batch",
         "--no-progress")
    _cli("merge", tmp / "batch")
    return _read(tmp / "batch" / "merged.nc", ("a_mean", "u_mean"))


def forecast_case(tmp: Path) -> dict:
    out = {}
    for kind in ("rolling", "autoregressive"):
        _cli("forecast", "--checkpoint", GOLDEN / f"{kind}.pt", "--initial", GOLDEN / "adv.h5", "--index", 4,
             "--index", 5, "--lead-steps", 4, "--members", 2, "--steps-per-frame", 2, "--seed", 4,
             "--sensor-fraction", 0.2, "--sensor-every", 2, "--out", tmp / f"{kind}.nc", "--no-plot",
             "--no-progress")
        out[kind] = _read(tmp / f"{kind}.nc", ("u",))["u"]
    return out


def trajectory_case(tmp: Path) -> dict:
    _cli("forecast", "--checkpoint", GOLDEN / "trajectory.pt", "--initial", GOLDEN / "shock.h5", "--index", 0,
         "--start-frame", 0, "--lead-steps", 8, "--members", 2, "--seed", 0, "--out", tmp / "traj.nc", "--no-plot",
         "--no-progress")
    return _read(tmp / "traj.nc", ("u",))


def upsample_case(tmp: Path) -> dict:
    _cli("upsample", "--checkpoint", GOLDEN / "superres.pt", "--input", GOLDEN / "shock.h5", "--index", 1,
         "--start-frame", 4, "--frames", 8, "--factor", 2, "--steps", 3, "--seed", 5, "--out", tmp / "fine.nc",
         "--no-plot")
    return _read(tmp / "fine.nc", ("u",))


CASES = {"sample": sample_case, "solve": solve_case, "batch": batch_case, "forecast": forecast_case,
         "trajectory": trajectory_case, "upsample": upsample_case}


if __name__ == "__main__":  # pragma: no cover - python tests/golden_cases.py NAME: print the arrays' norms
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for name in sys.argv[1:] or CASES:
            print(name, {k: float(np.linalg.norm(v)) for k, v in CASES[name](Path(d)).items()})
