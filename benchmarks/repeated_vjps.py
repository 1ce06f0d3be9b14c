"""Several VJPs through one denoiser call: with and without ``funcdiff.utils.repeated_vjps``, frozen or not.

Usage: python benchmarks/repeated_vjps.py [--quick] [--threads 1] [--backbones fno uno sfno] [--grids 64 128]
       [--vjps 6] [--out FILE.json]

MMPS differentiates each denoiser call once per conjugate-gradient iteration plus once (``cg_iters + 1`` VJPs,
6 at the default 5 iterations), and DPS with a damped PDE term once per term group. Inside ``repeated_vjps`` the
GELUs keep their derivatives (the row layout's fused MLPs from the first backward pass, channels-first GELUs from
the forward pass), so the later passes multiply by them instead of evaluating erf and exp again.

Rows: {"backbone", "grid", "layout", "impl", "batch", "threads", "vjps", "forward_s", "first_vjp_s", "later_vjp_s",
"total_s", "vs_plain"}:
  impl    plain     the forward call under autograd and ``vjps`` VJPs of random cotangents (``retain_graph``)
          repeated  the same, the forward call inside ``repeated_vjps()``
          trainable plain, with the weights requiring grad (a model not frozen, e.g. still being trained): the
                    custom layers compute only the gradients the VJP uses (``funcdiff.utils.input_grads_in_use``),
                    so its vs_plain is the cost left of not freezing the model
  layout  the layout the backbone picks under autograd (``on_rows``): rows or channels-first
  forward_s, first_vjp_s, later_vjp_s  medians over the repeats (later: the median of VJPs 2..``vjps``)
  total_s   the median of forward + all VJPs; vs_plain = total / plain's total (below 1: repeated is faster)
The models are those of ``row_layout_speed.py`` (width 32, 16² modes, 2 channels: the FNO with 4 blocks, the UNO
with 2 levels) and an SFNO of 4 blocks with 16 degrees on an (n/2) x n lat-lon grid; batch 2, weights frozen as in
guidance (gradients for the input only; trainable aside). The impls alternate call by call, so that load from
other jobs on a shared machine hits all alike.

    python benchmarks/repeated_vjps.py --out benchmarks/results/repeated_vjps.json
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, print_table, sync, write_json  # noqa: E402
from row_layout_speed import COMMON, MODELS  # noqa: E402

from funcdiff.models import build_denoiser  # noqa: E402
from funcdiff.utils import repeated_vjps  # noqa: E402

BACKBONES = {"fno": MODELS["fno"], "uno": MODELS["uno"],
             "sfno": {"backbone": "sfno", "n_layers": 4, "n_modes": [16, 16]}}
COLUMNS = ["backbone", "grid", "layout", "impl", "vjps", "forward_s", "first_vjp_s", "later_vjp_s", "total_s",
           "vs_plain"]
BATCH = 2


def grid_shape(backbone: str, n: int) -> tuple[int, int]:
    """The input grid of a row: n x n, or for the SFNO the (n/2) x n lat-lon grid of sfno_speed.py."""
    return (n // 2, n) if backbone == "sfno" else (n, n)


def vjp_times(denoiser, x: torch.Tensor, sigma: torch.Tensor, vjps: int, repeated: bool, device: str) -> list[float]:
    """Seconds of the forward call (grad on, inside ``repeated_vjps`` or not) and of each of ``vjps`` VJPs."""
    gen = torch.Generator(device=device).manual_seed(1)
    times = []
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        sync(device)
        start = time.perf_counter()
        with repeated_vjps(repeated):
            out = denoiser(x_in, sigma)
        sync(device)
        times.append(time.perf_counter() - start)
        for k in range(vjps):
            probe = torch.randn(out.shape, generator=gen, device=device, dtype=out.dtype)
            sync(device)
            start = time.perf_counter()
            torch.autograd.grad(out, x_in, probe, retain_graph=k < vjps - 1)
            sync(device)
            times.append(time.perf_counter() - start)
    return times


IMPLS = ("plain", "repeated", "trainable")


def backbone_rows(name: str, n: int, vjps: int, repeats: int, device: str) -> list[dict]:
    """The rows (``IMPLS``) of one backbone and grid, timed alternately."""
    denoiser = build_denoiser({**COMMON, **BACKBONES[name]}).to(device).requires_grad_(False)
    models = {"plain": denoiser, "repeated": denoiser, "trainable": copy.deepcopy(denoiser).requires_grad_(True)}
    shape = grid_shape(name, n)
    x = torch.randn(BATCH, COMMON["in_channels"], *shape, generator=torch.Generator().manual_seed(0)).to(device)
    sigma = torch.full((BATCH,), 1.0, device=device)
    with torch.enable_grad():
        layout = "rows" if denoiser.backbone.on_rows(shape) else "channels-first"
    runs = {impl: [] for impl in IMPLS}
    for k in range(repeats + 1):
        for impl in IMPLS:
            times = vjp_times(models[impl], x, sigma, vjps, impl == "repeated", device)
            if k:  # the first round warms up (the SHT and DFT tables, the allocator)
                runs[impl].append(times)
    rows = []
    for impl in IMPLS:
        columns = list(zip(*runs[impl]))
        rows.append({"backbone": name, "grid": n, "grid_shape": list(shape), "layout": layout,
                     "impl": impl, "batch": BATCH, "threads": torch.get_num_threads(),
                     "vjps": vjps, "forward_s": statistics.median(columns[0]),
                     "first_vjp_s": statistics.median(columns[1]),
                     "later_vjp_s": statistics.median([t for col in columns[2:] for t in col]),
                     "total_s": statistics.median([sum(run) for run in runs[impl]])})
    for row in rows:
        row["vs_plain"] = row["total_s"] / rows[0]["total_s"]
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=list(BACKBONES))
    p.add_argument("--grids", type=int, nargs="+", default=None, help="grid sides (default 64 128; quick: 64)")
    p.add_argument("--vjps", type=int, default=6, help="VJPs per forward call (default 6: MMPS's default 5 CG "
                                                       "iterations + 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per impl (default 9; quick 3)")
    args = p.parse_args()
    if args.vjps < 2:
        p.error("--vjps must be at least 2 (a single VJP is not repeated)")
    torch.set_num_threads(args.threads)
    grids = args.grids or ([64] if args.quick else [64, 128])
    repeats = args.repeats or (3 if args.quick else 9)
    start, rows = time.perf_counter(), []
    for name in args.backbones:
        for n in grids:
            rows += backbone_rows(name, n, args.vjps, repeats, args.device)
    print_table(rows, COLUMNS)
    models = {name: {**COMMON, **BACKBONES[name]} for name in args.backbones}
    write_json(rows, args.out, {"benchmark": "repeated_vjps", "quick": args.quick, "threads": args.threads,
                                "batch": BATCH, "models": models, "grids": grids,
                                "seconds_total": time.perf_counter() - start})


if __name__ == "__main__":
    main()
