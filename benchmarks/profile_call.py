"""Where one call's time goes: torch.profiler's operator table for a denoiser call (forward, no grad) and a training
step of the `denoiser_speed` model and of neuraloperator's FNO of the same size, on CPU or CUDA, at given grids.

The profiler adds its own overhead to every operator (on a CPU it inflates the memory-bound ones): read the tables
for where time goes and how many kernels a call launches, and take speed from ``benchmarks/denoiser_speed.py``.
Prints the tables; ``--out`` writes them with the kernel counts as JSON rows
{grid, impl, pass, device, ops (aten operator calls, nested ones included), kernels (CUDA kernels launched; None on a CPU),
 table (the text)}.

    python benchmarks/profile_call.py --device cuda --grids 256 1024 --out runs/profile_cuda.json

``--op-counts`` instead counts, on any device, the aten operators one inference call dispatches (a
``TorchDispatchMode``; ``ops`` all of them, ``compute_ops`` those that are not views, reshapes or aliases, i.e. the
ones that launch work: on a GPU about one kernel each) for funcdiff along both of its code paths (``path``: ``cpu``,
the cache-sized chunks and two-pass statistics; ``cuda``, the GPU's one chunk and Welford statistics, selected by
replacing ``funcdiff.models.fno.cache_sized``) and for neuraloperator's FNO, at batch 1 and 16. A GPU session is
not needed to see how many launches a change saves on a GPU:

    python benchmarks/profile_call.py --op-counts --grids 64 --out benchmarks/results/op_counts.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, sync, write_json  # noqa: E402
from denoiser_speed import CHANNELS, MODEL, calls, neuralop_fno  # noqa: E402

from funcdiff.models import build_denoiser  # noqa: E402


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--grids", type=int, nargs="+", default=[256], help="grid sides (default 256)")
    p.add_argument("--rows", type=int, default=15, help="operators per table (default 15)")
    p.add_argument("--op-counts", action="store_true",
                   help="count the aten operators of an inference call along both code paths instead (any device)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = args.device
    if args.op_counts:
        return op_counts(args)
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


VIEW_OPS = {"view", "_unsafe_view", "reshape", "unsqueeze", "squeeze", "expand", "permute", "transpose", "t",
            "select", "slice", "split", "chunk", "unbind", "as_strided", "alias", "detach", "view_as_real",
            "view_as_complex", "_conj", "_neg_view", "_reshape_alias", "lift_fresh"}


class _Counter(TorchDispatchMode):
    """Counts the aten operators dispatched inside the block: all, and those that are not views."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = self.compute_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.compute_ops += func.__name__.split(".")[0] not in VIEW_OPS
        return func(*args, **(kwargs or {}))


def op_counts(args) -> None:
    """Rows {grid, batch, impl, path, ops, compute_ops} of one inference call (see the module docstring)."""
    from funcdiff.models import fno

    device, rows = args.device, []
    ours, theirs = build_denoiser(MODEL).to(device).eval(), neuralop_fno().to(device).eval()
    real = fno.cache_sized
    for n in args.grids:
        for batch in (1, 16):
            x = torch.randn(batch, CHANNELS, n, n, device=device)
            sigma = torch.full((batch,), 0.7, device=device)
            runs = [("funcdiff", path, lambda: ours(x, sigma)) for path in ("cpu", "cuda")]
            runs.append(("neuralop-fno", "-", lambda: theirs(x)))
            for impl, path, call in runs:
                fno.cache_sized = real if path == "-" else (lambda t, cpu=path == "cpu": cpu)
                try:
                    with torch.no_grad():
                        call()  # caches made
                        with _Counter() as counter:
                            call()
                finally:
                    fno.cache_sized = real
                rows.append({"grid": n, "batch": batch, "impl": impl, "path": path, "ops": counter.ops,
                             "compute_ops": counter.compute_ops})
                print(f"{n}² batch {batch} {impl} ({path} path): {counter.ops} aten ops, {counter.compute_ops} not "
                      "views", flush=True)
    write_json(rows, args.out, {"benchmark": "op_counts", "model": MODEL, "device": device})


if __name__ == "__main__":
    main()
