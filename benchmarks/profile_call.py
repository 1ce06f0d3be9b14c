"""Where one call's time goes: torch.profiler's operator table for a denoiser call (forward, no grad) and a training
step of the `denoiser_speed` model and of neuraloperator's FNO of the same size, on CPU or CUDA, at given grids.

The profiler adds its own overhead to every operator (on a CPU it inflates the memory-bound ones): read the tables
for where time goes and how many kernels a call launches, and take speed from ``benchmarks/denoiser_speed.py``.
Prints the tables; ``--out`` writes them with the kernel counts as JSON rows
{grid, impl, pass, device, ops (aten operator calls, nested ones included), kernels (CUDA kernels launched; None on a CPU),
 table (the text)}.

    python benchmarks/profile_call.py --device cuda --grids 256 1024 --out runs/profile_cuda.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, sync, write_json  # noqa: E402
from denoiser_speed import CHANNELS, MODEL, calls, neuralop_fno  # noqa: E402

from funcdiff.models import build_denoiser  # noqa: E402


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--grids", type=int, nargs="+", default=[256], help="grid sides (default 256)")
    p.add_argument("--rows", type=int, default=15, help="operators per table (default 15)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = args.device
    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    models = {"funcdiff": (build_denoiser(MODEL).to(device), True), "neuralop-fno": (neuralop_fno().to(device), False)}
    rows = []
    for n in args.grids:
        x = torch.randn(1, CHANNELS, n, n, device=device)
        sigma = torch.full((1,), 0.7, device=device)
        for pass_ in ("forward", "train-step"):
            for impl, (model, is_denoiser) in models.items():
                fn = calls(model, is_denoiser, pass_, x, sigma, torch.float32)
                fn(), fn()  # warm-up: plans, caches, allocator
                sync(device)
                with profile(activities=activities) as prof:
                    fn()
                    sync(device)
                events = prof.key_averages()
                table = events.table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                     row_limit=args.rows)
                kernels = sum(e.count for e in prof.events() if e.device_type.name == "CUDA") if cuda else None
                rows.append({"grid": n, "impl": impl, "pass": pass_, "device": device,
                             "ops": sum(e.count for e in events if e.key.startswith("aten::")), "kernels": kernels,
                             "table": table})
                print(f"== {n}² {pass_} {impl}: {rows[-1]['ops']} aten ops, {kernels} kernels\n{table}", flush=True)
    write_json(rows, args.out, {"benchmark": "profile_call", "model": MODEL, "device": device,
                                "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
