"""One UNO denoiser call on the row layout against the same weights channels first, 64² to 512².

Usage: python benchmarks/uno_speed.py [--quick] [--threads 1] [--grids 64 128 ...] [--out FILE.json]

Rows: {"grid", "levels", "impl", "pass", "batch", "threads", "seconds", "peak_mb", "vs_channels_first"}:
  impl  funcdiff                  the EDM-preconditioned noise-conditioned UNO denoiser (spectral blocks, no local
                                  kernels): the U's levels on the FNO's row layout (resampling along the grid's
                                  axes there, the fused GroupNorm+FiLM and MLP paths of the Fourier blocks)
        funcdiff-channels-first   the same model and weights run channels first (``on_rows`` false: every UNO call
                                  before the row layout; outputs equal to round-off, tests/test_backbones.py)
  pass  forward       eval, ``torch.no_grad``
        train-step    train mode, forward + backward of a mean-square loss (no optimiser step)
Width 32 (64, 128 on the coarser levels), 16² modes, 2 levels, one block per level each way, 2 channels, batch 1.
The calls are timed interleaved (median over repeats), so that load from other jobs on a shared machine hits both
alike. neuraloperator's ``UNO`` is not compared: its blocks take no noise conditioning and its levels are fixed
grids, not factors of the input grid, so no configuration computes the same operator.

    python benchmarks/uno_speed.py --quick --out benchmarks/results/uno_speed_quick.json
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
from funcdiff.models.uno import NoiseConditionedUNO  # noqa: E402

MODEL = {"backbone": "uno", "in_channels": CHANNELS, "out_channels": CHANNELS, "n_modes": [16, 16],
         "hidden_channels": 32, "levels": 2, "n_layers": 1, "sigma_data": 0.5}
COLUMNS = ["grid", "levels", "impl", "pass", "batch", "threads", "seconds", "peak_mb", "vs_channels_first"]


class ChannelsFirst(torch.nn.Module):
    """A UNO denoiser run channels first: its backbone's ``on_rows`` answers False for the duration of each call."""

    def __init__(self, denoiser: torch.nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        backbone = self.denoiser.backbone
        backbone.on_rows = lambda: False  # an instance attribute shadows the method
        try:
            return self.denoiser(x, sigma)
        finally:
            del backbone.on_rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--grids", type=int, nargs="+", default=None, help="grid sides (default 64..512; quick: ..256)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per implementation (default by grid)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    grids = args.grids or ([64, 128, 256] if args.quick else [64, 128, 256, 512])
    denoiser = build_denoiser(MODEL).to(args.device)
    assert isinstance(denoiser.backbone, NoiseConditionedUNO) and denoiser.backbone.on_rows()
    impls = {"funcdiff": (denoiser, True), "funcdiff-channels-first": (ChannelsFirst(denoiser), True)}
    start, rows = time.perf_counter(), []
    for n in grids:
        repeats = args.repeats or {64: 21, 128: 11, 256: 7}.get(n, 5)
        for pass_ in ("forward", "train-step"):
            rows += interleaved_rows(impls, (n, n), pass_, repeats, args.device,
                                     ("vs_channels_first", "funcdiff-channels-first"),
                                     {"grid": n, "levels": MODEL["levels"]})
            gc.collect()
    print_table(rows, COLUMNS)
    write_json(rows, args.out, {"benchmark": "uno_speed", "quick": args.quick, "threads": args.threads,
                                "model": MODEL, "grids": grids, "seconds_total": time.perf_counter() - start})


if __name__ == "__main__":
    main()
