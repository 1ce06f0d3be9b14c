"""How many torch threads a funcdiff process should use: 1, 2, ..., all allowed cores, alone and beside another
torch job (issue 20, "Threads").

Usage: python benchmarks/threads.py [--quick] [--grid 128] [--threads 1 2 ...] [--competitor-threads N] [--out F]

Both this process and the competitor run with ``OMP_WAIT_POLICY=PASSIVE`` (set before torch is imported, as the
``funcdiff`` command does). For every situation (``alone``; ``beside``: a second Python process running training
steps of the same denoiser in a loop with ``--competitor-threads`` threads, by default the thread count the CLI's rule
gives it, i.e. two funcdiff jobs started with the default) and every pass (a denoiser forward call, eval, no grad; a
training step: forward + backward + AdamW) the thread counts are timed interleaved (set the count, one untimed call,
one timed call; repeat) so that load from other jobs hits every count alike; ``seconds`` is the median.

Rows: {"situation", "pass", "grid", "threads", "seconds", "vs_best"}; ``vs_best`` is seconds / the best count's
seconds in the same situation and pass. The JSON's meta records ``allowed_cores`` (what
``funcdiff.cli.allowed_cores`` reads: SLURM_CPUS_PER_TASK, the affinity mask) and ``rule_threads`` (what the CLI
chooses by default), so the table says whether the rule is within 1.2× of the best count in both situations.

    python benchmarks/threads.py --out benchmarks/results/threads.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads sleep instead of spinning

import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, print_table, write_json  # noqa: E402

from funcdiff.cli import allowed_cores, default_threads  # noqa: E402
from funcdiff.models import build_denoiser  # noqa: E402

MODEL = {"backbone": "fno", "in_channels": 2, "out_channels": 2, "n_modes": [16, 16], "hidden_channels": 32,
         "n_layers": 4, "sigma_data": 0.5}
COLUMNS = ["situation", "pass", "grid", "threads", "seconds", "vs_best"]


def step_functions(grid: int, batch: int) -> dict:
    """``{"forward": f, "train-step": g}``: zero-argument calls of the issue-20 denoiser at ``grid``²."""
    model = build_denoiser(MODEL)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 2, grid, grid)
    sigma = torch.full((batch,), 0.7)
    target = torch.randn_like(x)

    def forward():
        model.eval()
        with torch.no_grad():
            model(x, sigma)

    def train_step():
        model.train()
        optimiser.zero_grad(set_to_none=True)
        (model(x, sigma) - target).square().mean().backward()
        optimiser.step()

    return {"forward": forward, "train-step": train_step}


def worker(grid: int, threads: int) -> None:
    """The competing job: training steps until killed."""
    torch.set_num_threads(threads)
    step = step_functions(grid, 1)["train-step"]
    while True:
        step()


def measure(fns: dict, counts: list[int], repeats: int) -> dict[tuple[str, int], float]:
    times: dict[tuple[str, int], list[float]] = {(p, k): [] for p in fns for k in counts}
    for _ in range(repeats):
        for pass_, fn in fns.items():
            for k in counts:  # interleaved: every count sees the same load
                torch.set_num_threads(k)
                fn()
                start = time.perf_counter()
                fn()
                times[(pass_, k)].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="thread counts to time (default 1, 2, 4, ... up to the allowed cores, and the allowed cores)")
    p.add_argument("--competitor-threads", type=int, default=None,
                   help="threads of the competing job (default: the CLI's default rule)")
    p.add_argument("--competitor-wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE"],
                   help="OMP_WAIT_POLICY of the competing job (ACTIVE: spinning threads, a plain torch script)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per count (default 15; quick 6)")
    p.add_argument("--worker", action="store_true", help=argparse_hidden())
    args = p.parse_args()
    if args.worker:
        worker(args.grid, args.competitor_threads or 1)
        return
    cores = allowed_cores()
    rule = default_threads()
    counts = args.threads or sorted({*(2**i for i in range(cores.bit_length()) if 2**i <= cores), cores})
    competitor = args.competitor_threads or rule
    repeats = args.repeats or (6 if args.quick else 15)
    torch.manual_seed(args.seed)
    fns = step_functions(args.grid, args.batch)
    rows = []
    for situation in ("alone", "beside"):
        job = None
        if situation == "beside":
            job = subprocess.Popen([sys.executable, __file__, "--worker", "--grid", str(args.grid),
                                    "--competitor-threads", str(competitor)],
                                   env={**os.environ, "OMP_WAIT_POLICY": args.competitor_wait_policy})
            time.sleep(3.0)  # let it import torch and start stepping
        try:
            seconds = measure(fns, counts, repeats)
        finally:
            if job is not None:
                job.kill()
                job.wait()
        for pass_ in fns:
            best = min(seconds[(pass_, k)] for k in counts)
            for k in counts:
                rows.append({"situation": situation, "pass": pass_, "grid": args.grid, "threads": k,
                             "seconds": seconds[(pass_, k)], "vs_best": seconds[(pass_, k)] / best})
        print(f"{situation}: " + ", ".join(f"{pa} {k} threads {s:.4g} s" for (pa, k), s in seconds.items()),
              flush=True)
    print_table(rows, COLUMNS)
    verdict = {s: max(r["vs_best"] for r in rows if r["situation"] == s and r["threads"] == rule)
               for s in ("alone", "beside")} if rule in counts else {}
    print(f"allowed cores {cores}; the CLI's default rule gives {rule} thread(s); competitor {competitor} thread(s); "
          f"rule vs best (worst pass): " + ", ".join(f"{s} {v:.2f}×" for s, v in verdict.items()))
    out = args.out or Path(__file__).resolve().parent / "results" / (
        "threads_quick.json" if args.quick else "threads.json")
    write_json(rows, out, {"benchmark": "threads", "model": MODEL, "batch": args.batch, "allowed_cores": cores,
                           "rule_threads": rule, "competitor_threads": competitor,
                           "competitor_wait_policy": args.competitor_wait_policy, "repeats": repeats,
                           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                           "rule_vs_best": verdict, "quick": args.quick})


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
