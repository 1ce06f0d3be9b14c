"""The chunk size of the row-layout paths on this device: time of a denoiser call (forward, no grad) and of a
training step (forward + backward) of the `denoiser_speed` model for each chunk size, interleaved, batch 1.

The chunked paths (:func:`funcdiff.models.fno.chunk_bytes`: a block's normalise+FiLM+GELU+MLP+residual at inference,
:class:`~funcdiff.models.fno._GeluMLPRows` in training, GroupNorm's statistics) run over chunks of grid rows whose
widest field is about ``chunk`` bytes. On a CPU core a chunk must stay in cache (``CHUNK_BYTES``, 2 MiB); on a GPU
every chunk costs a few kernel launches, so fewer, larger chunks (``CUDA_CHUNK_BYTES``) should win. This measures
both choices on the device it runs on; ``vs_default`` is a row's time over the time with the device's default.

Rows: {grid, pass, chunk_mib, default (bool), device, threads, seconds, vs_default}

    python benchmarks/chunk_size.py --device cuda --out runs/chunk_size_cuda.json   # a GPU
    python benchmarks/chunk_size.py --quick                                          # a CPU, 64² and 256²
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, print_table, timed, write_json  # noqa: E402
from denoiser_speed import CHANNELS, MODEL, calls  # noqa: E402

from funcdiff.models import build_denoiser  # noqa: E402
from funcdiff.models import fno  # noqa: E402

COLUMNS = ["grid", "pass", "chunk_mib", "default", "seconds", "vs_default"]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--grids", type=int, nargs="+", default=None, help="grid sides (default 128 256 512 1024; "
                                                                      "quick: 64 256)")
    p.add_argument("--chunks-mib", type=float, nargs="+", default=[0.5, 2, 16, 64, 1024],
                   help="chunk sizes in MiB (default 0.5 2 16 64 1024; 1024: one chunk up to 2048² at width 64)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per size (default 10; quick 4)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = args.device
    grids = args.grids or ([64, 256] if args.quick else [128, 256, 512, 1024])
    repeats = args.repeats or (4 if args.quick else 10)
    model = build_denoiser(MODEL).to(device)
    default = fno.chunk_bytes(torch.empty(0, device=device))
    sizes = sorted({int(m * 2**20) for m in args.chunks_mib} | {default})
    rows = []
    for n in grids:
        x = torch.randn(1, CHANNELS, n, n, device=device)
        sigma = torch.full((1,), 0.7, device=device)
        for pass_ in ("forward", "train-step"):
            fn = calls(model, True, pass_, x, sigma, torch.float32)
            times: dict[int, list[float]] = {size: [] for size in sizes}
            for size in sizes:  # warm-up
                _with_chunk(size, fn, device)
            for _ in range(repeats):  # interleaved
                for size in sizes:
                    times[size].append(_with_chunk(size, fn, device))
            median = {size: statistics.median(t) for size, t in times.items()}
            for size in sizes:
                rows.append({"grid": n, "pass": pass_, "chunk_mib": size / 2**20, "default": size == default,
                             "device": device, "threads": torch.get_num_threads(), "seconds": median[size],
                             "vs_default": median[size] / median[default]})
            print(f"{n}² {pass_}: " + ", ".join(f"{s / 2**20:g} MiB {median[s]:.4g} s" for s in sizes), flush=True)
    print_table(rows, COLUMNS)
    out = args.out or Path(__file__).resolve().parent / "results" / (
        "chunk_size_quick.json" if args.quick else "chunk_size.json")
    write_json(rows, out, {"benchmark": "chunk_size", "model": MODEL, "device": device, "default_bytes": default,
                           "threads": torch.get_num_threads(), "quick": args.quick})


def _with_chunk(size: int, fn, device: str) -> float:
    """One timed call of ``fn`` with the device's chunk size set to ``size`` bytes."""
    name = "CHUNK_BYTES" if device == "cpu" else "CUDA_CHUNK_BYTES"
    saved = getattr(fno, name)
    setattr(fno, name, size)
    try:
        return timed(fn, device)
    finally:
        setattr(fno, name, saved)


if __name__ == "__main__":
    main()
