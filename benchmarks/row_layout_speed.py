"""One denoiser call on the row layout against the same weights channels first: FNO, UNO and local FNO, 64² to 512².

Usage: python benchmarks/row_layout_speed.py [--quick] [--threads 1] [--backbones fno uno local_fno] [--grids 64 ...]
       [--out FILE.json]

Rows: {"backbone", "grid", "impl", "pass", "batch", "threads", "seconds", "peak_mb", "vs_channels_first", "chosen"}:
  impl  rows            the EDM-preconditioned noise-conditioned denoiser with its blocks on the row layout
                        (B, n_1, .., C, n_d) of ``funcdiff.models.spectral.to_rows``: the skip accumulated into the
                        spectral layer's output, GroupNorm+FiLM as one affine pass, the channel MLP over chunks of
                        rows (the UNO's resampling along the grid's axes there; the local FNO's local kernels
                        channels first between two transposes)
        channels-first  the same model and weights run channels first (every UNO and local FNO call before they took
                        the row layout; outputs equal to round-off, tests/test_backbones.py)
  pass  forward       eval, ``torch.no_grad``
        train-step    train mode, forward + backward of a mean-square loss (no optimiser step)
  chosen              whether the backbone's ``on_rows`` picks this layout for this grid and pass
Width 32, 16² modes, 2 channels, batch 1: the FNO with 4 blocks (the model of ``denoiser_speed.py``), the UNO with 2
levels and one block per level each way (widths 32, 64, 128), the local FNO with 4 blocks of spectral, differential
and integral kernels. The calls are timed interleaved (median over repeats), so that load from other jobs on a
shared machine hits both alike. (neuraloperator's own FNO is compared in ``denoiser_speed.py``; its ``UNO`` and
``LocalNO`` take no noise conditioning, and the UNO's levels are fixed grids, not factors of the input grid.)

    python benchmarks/row_layout_speed.py --quick --out benchmarks/results/row_layout_speed_quick.json
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, print_table, write_json  # noqa: E402
from sfno_speed import CHANNELS, interleaved_rows  # noqa: E402

from funcdiff.models import build_denoiser  # noqa: E402

COMMON = {"in_channels": CHANNELS, "out_channels": CHANNELS, "n_modes": [16, 16], "hidden_channels": 32,
          "sigma_data": 0.5}
MODELS = {"fno": {"backbone": "fno", "n_layers": 4},
          "uno": {"backbone": "uno", "levels": 2, "n_layers": 1},
          "local_fno": {"backbone": "local_fno", "n_layers": 4, "local_kernels": ["differential", "integral"]}}
COLUMNS = ["backbone", "grid", "impl", "pass", "batch", "threads", "seconds", "peak_mb", "vs_channels_first", "chosen"]


class Layout(torch.nn.Module):
    """A denoiser run on one layout: its backbone's ``on_rows`` answers ``rows`` for the duration of each call."""

    def __init__(self, denoiser: torch.nn.Module, rows: bool) -> None:
        super().__init__()
        self.denoiser, self.rows = denoiser, rows

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        backbone = self.denoiser.backbone
        backbone.on_rows = lambda shape=None: self.rows  # an instance attribute shadows the method
        try:
            return self.denoiser(x, sigma)
        finally:
            del backbone.on_rows


def chosen(denoiser: torch.nn.Module, n: int, pass_: str) -> bool:
    """Whether the backbone runs an (n, n) input on the row layout in ``pass_`` (autograd on for a train step)."""
    with torch.set_grad_enabled(pass_ == "train-step"):
        return denoiser.backbone.on_rows((n, n))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--backbones", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--grids", type=int, nargs="+", default=None, help="grid sides (default 64..512; quick: ..256)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per implementation (default by grid)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    grids = args.grids or ([64, 128, 256] if args.quick else [64, 128, 256, 512])
    start, rows = time.perf_counter(), []
    for name in args.backbones:
        denoiser = build_denoiser({**COMMON, **MODELS[name]}).to(args.device)
        impls = {"rows": (Layout(denoiser, True), True), "channels-first": (Layout(denoiser, False), True)}
        for n in grids:
            repeats = args.repeats or {64: 21, 128: 11, 256: 7}.get(n, 5)
            for pass_ in ("forward", "train-step"):
                new = interleaved_rows(impls, (n, n), pass_, repeats, args.device, ("vs_channels_first", "channels-first"),
                                       {"backbone": name, "grid": n})
                rows += [{**row, "chosen": (row["impl"] == "rows") == chosen(denoiser, n, pass_)} for row in new]
                gc.collect()
    print_table(rows, COLUMNS)
    write_json(rows, args.out, {"benchmark": "row_layout_speed", "quick": args.quick, "threads": args.threads,
                                "models": {name: {**COMMON, **MODELS[name]} for name in args.backbones},
                                "grids": grids, "seconds_total": time.perf_counter() - start})


if __name__ == "__main__":
    main()
