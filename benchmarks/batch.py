"""Batch inference throughput: Darcy inverse cases through `funcdiff solve --cases` on 1 and K processes.

A small joint Darcy (a, u) model is trained here with the package's Trainer; the cases are held-out Darcy pairs
(another seed) in a netCDF case file. Each configuration is the real command line: K processes launched at once
with RANK/WORLD_SIZE (as torchrun or srun would), each with one torch thread; the wall time runs from the launch to
the last exit (process start-up included, as a user sees it), then `funcdiff merge`. ``identical``: the merged file
equals the 1-process one (xarray ``identical``: every value and attribute). The machine may be shared: the load
average at the start of each row is recorded; a speed-up needs K idle cores.

Rows: {"procs", "cases", "seconds", "cases_per_second", "identical", "loadavg"}

    python benchmarks/batch.py --quick --out benchmarks/results/batch_quick.json    # 64 cases at 32², 1 and 2 procs
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, print_table, train_in_memory, write_json  # noqa: E402

from funcdiff.config import config_from_dict  # noqa: E402
from funcdiff.io.netcdf import fields_to_dataset, write_netcdf  # noqa: E402
from funcdiff.pde import get_problem  # noqa: E402
from funcdiff.tasks.batch import merge_parts, same_result  # noqa: E402

COLUMNS = ["procs", "cases", "seconds", "cases_per_second", "identical", "loadavg"]


def darcy(num: int, n: int, seed: int) -> torch.Tensor:
    d = get_problem("darcy").generate(num, n, generator=torch.Generator().manual_seed(seed))
    return torch.stack([d["a"], d["u"]], dim=1)


def train_model(n: int, steps: int, out: Path) -> Path:
    config = config_from_dict({
        "name": "darcy-batch-bench",
        "data": {"source": "synthetic", "channels": ["a", "u"], "resolution": n, "num_samples": 400,
                 "test_fraction": 0.05},
        "noise": {"smoothness": 2.0, "length_scale": 0.1},
        "model": {"backbone": "fno", "n_modes": [8, 8], "hidden_channels": 16, "n_layers": 2, "emb_dim": 16,
                  "norm_groups": 4},
        "train": {"steps": steps, "batch_size": 16, "lr": 2e-3, "warmup_steps": 20, "ema_decay": 0.99,
                  "log_every": 0, "eval_every": 0, "checkpoint_every": 0, "out_dir": str(out), "device": "cpu"},
    })
    return train_in_memory(config, darcy(400, n, seed=0))[1]


def run_batch(procs: int, command: list[str], out_dir: Path) -> float:
    """Launch ``procs`` ranks of ``command`` at once; wall seconds until the last exits (all must succeed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(key, None)
    start = time.perf_counter()
    ranks = [subprocess.Popen([sys.executable, "-m", "funcdiff", *command, "--out-dir", str(out_dir)],
                              env={**env, "RANK": str(r), "WORLD_SIZE": str(procs)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(procs)]
    outputs = [p.communicate() for p in ranks]
    seconds = time.perf_counter() - start
    for p, (_, err) in zip(ranks, outputs):
        if p.returncode != 0:
            raise SystemExit(f"a rank failed (status {p.returncode}):\n{err[-3000:]}")
    return seconds


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, nargs="*", default=None, help="process counts (default 1 2; full: 1 2 4)")
    args = p.parse_args()
    n, cases, train_steps = (32, 64, 300) if args.quick else (64, 256, 1000)
    procs = args.procs or ([1, 2] if args.quick else [1, 2, 4])
    settings = {"resolution": n, "num_samples": 4, "steps": 20, "obs_fraction": 0.03, "train_steps": train_steps}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        checkpoint = train_model(n, train_steps, tmp / "run")
        print(f"trained the {n}² Darcy model ({train_steps} steps) in {time.perf_counter() - t0:.0f} s", flush=True)
        write_netcdf(fields_to_dataset(darcy(cases, n, seed=args.seed + 100), ("a", "u"), grid="node"),
                     tmp / "cases.nc")
        command = ["solve", "--checkpoint", str(checkpoint), "--task", "darcy-inverse", "--cases",
                   str(tmp / "cases.nc"), "--obs-fraction", str(settings["obs_fraction"]), "--num-samples",
                   str(settings["num_samples"]), "--steps", str(settings["steps"]), "--seed", str(args.seed),
                   "--no-progress", "--threads", "1"]
        reference = None
        for k in procs:
            load = os.getloadavg()[0]
            seconds = run_batch(k, command, tmp / f"procs{k}")
            merged = merge_parts(tmp / f"procs{k}")
            reference = reference or merged
            rows.append({"procs": k, "cases": cases, "seconds": seconds, "cases_per_second": cases / seconds,
                         "identical": same_result(merged, reference), "loadavg": round(load, 2)})
            print_table(rows[-1:], COLUMNS)
            if k == procs[0]:
                import xarray as xr

                with xr.open_dataset(merged) as ds:
                    settings["mean_rel_l2_a"] = float(ds["rel_l2_a"].mean())
                    settings["mean_misclassification_a"] = float(ds["misclassification_a"].mean())
    print()
    print_table(rows, COLUMNS)
    print(f"posterior-mean relative L2 of a over the {cases} cases: {settings['mean_rel_l2_a']:.3f} "
          f"(misclassification {settings['mean_misclassification_a']:.3f})")
    write_json(rows, args.out, {"benchmark": "batch", "quick": args.quick, "settings": settings,
                                "threads_per_process": 1, "cpu_count": os.cpu_count(),
                                "note": "wall time includes process start-up; the machine is shared with other jobs"})


if __name__ == "__main__":
    main()
