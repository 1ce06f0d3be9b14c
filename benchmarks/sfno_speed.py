"""One SFNO denoiser call against neuraloperator's own SFNO on the WeatherBench 2 / ERA5 lat-lon grids.

Usage: python benchmarks/sfno_speed.py [--quick] [--threads 1] [--grids 32x64 121x240 ...]
       [--train-grids 32x64 ...] [--out FILE.json]

Rows: {"grid", "grid_w", "lmax", "mmax", "impl", "pass", "batch", "threads", "seconds", "peak_mb", "vs_neuralop"}:
  impl  funcdiff                  the EDM-preconditioned noise-conditioned SFNO denoiser ``D(x; sigma)`` (FiLM,
                                  GroupNorm, MLPs): its blocks on the row layout (``SphericalRowsConv``)
        funcdiff-channels-first   the same weights with neuraloperator's ``SphericalConv`` layers and funcdiff's
                                  quadrature SHT, which are not row-layout layers: the blocks run channels first
                                  (what every SFNO call was before the row layout; outputs equal to round-off)
        neuralop-sfno             ``neuralop.models.SFNO`` of the same width, degrees and layers (its defaults
                                  otherwise: torch-harmonics' SHT, no noise conditioning)
  pass  forward       eval, ``torch.no_grad``
        train-step    train mode, forward + backward of a mean-square loss (no optimiser step)
Width 32, 4 layers, 2 channels, batch 1, (lmax, mmax) = ((H - 1) // 3, (H - 1) // 3) (a third of the grid's
degrees). ``seconds`` is the median over repeats of calls timed interleaved (A, B, C, A, B, C, ...), so that load
from other jobs on a shared machine hits all alike; ``peak_mb`` as in ``benchmarks/denoiser_speed.py``. The
training step is timed on the grids up to 361×720 by default: at 721×1440 the three models' training steps in one
process need more than the 24 GiB of the machine this was written on (each alone: 6.6, 10.0 and 10.9 GiB resident;
``--train-grids 721x1440`` on a larger one).

    python benchmarks/sfno_speed.py --quick --out benchmarks/results/sfno_speed_quick.json
"""

from __future__ import annotations

import copy
import gc
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, print_table, timed, write_json  # noqa: E402
from denoiser_speed import calls, latlon_grid, peak_mb  # noqa: E402

from funcdiff.models import build_denoiser  # noqa: E402

WIDTH, LAYERS, CHANNELS = 32, 4, 2
GRIDS = {"quick": [(32, 64), (121, 240)], "full": [(32, 64), (121, 240), (361, 720), (721, 1440)]}
COLUMNS = ["grid", "grid_w", "lmax", "mmax", "impl", "pass", "batch", "threads", "seconds", "peak_mb",
           "vs_neuralop"]


def models(lmax: int, mmax: int, device: str) -> dict[str, tuple[torch.nn.Module, bool]]:
    """name -> (model, is_denoiser) for the three implementations of the module docstring."""
    from neuralop.layers.spherical_convolution import SphericalConv
    from neuralop.models import SFNO

    from funcdiff.sphere import GridSHT

    ours = build_denoiser({"backbone": "sfno", "in_channels": CHANNELS, "out_channels": CHANNELS,
                           "n_modes": [lmax, mmax], "hidden_channels": WIDTH, "n_layers": LAYERS,
                           "sigma_data": 0.5})
    before = copy.deepcopy(ours)
    for block in before.backbone.blocks:
        layer = SphericalConv(WIDTH, WIDTH, n_modes=tuple(block.spectral.n_modes), factorization=None,
                              implementation="reconstructed")
        layer.sht_handle = GridSHT()
        layer.load_state_dict(block.spectral.state_dict())
        block.spectral = layer
    theirs = SFNO(n_modes=(lmax, 2 * mmax), in_channels=CHANNELS, out_channels=CHANNELS, hidden_channels=WIDTH,
                  n_layers=LAYERS)
    return {"funcdiff": (ours.to(device), True), "funcdiff-channels-first": (before.to(device), True),
            "neuralop-sfno": (theirs.to(device), False)}


def grid_rows(shape: tuple[int, int], pass_: str, repeats: int, device: str) -> list[dict]:
    """The rows of one grid and pass."""
    lmax = mmax = (shape[0] - 1) // 3
    return interleaved_rows(models(lmax, mmax, device), shape, pass_, repeats, device, ("vs_neuralop", "neuralop-sfno"),
                            {"grid": shape[0], "grid_w": shape[1], "lmax": lmax, "mmax": mmax})


def interleaved_rows(impls: dict[str, tuple[torch.nn.Module, bool]], shape: tuple[int, ...], pass_: str,
                     repeats: int, device: str, ratio: tuple[str, str], common: dict) -> list[dict]:
    """Rows ``{**common, "impl", "pass", "batch", "threads", "seconds", "peak_mb", <column>}`` of the models ``impls``
    (name -> (model, is_denoiser)) on one input of shape (1, CHANNELS, *shape), calls timed interleaved;
    ``ratio = (column, reference)``: the column of seconds over those of the implementation ``reference``."""
    x = torch.randn(1, CHANNELS, *shape, device=device)
    sigma = torch.full((1,), 0.7, device=device)
    fns = {name: calls(model, is_denoiser, pass_, x, sigma, torch.float32)
           for name, (model, is_denoiser) in impls.items()}
    peaks = {name: peak_mb(fn, device) for name, fn in fns.items()}  # also the warm-up call
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    seconds = {name: statistics.median(t) for name, t in times.items()}
    common = {**common, "pass": pass_, "batch": 1, "threads": torch.get_num_threads()}
    print("x".join(map(str, shape)) + f" {pass_}: " + ", ".join(f"{k} {v:.4g} s" for k, v in seconds.items()),
          flush=True)
    column, reference = ratio
    return [{**common, "impl": name, "seconds": t, "peak_mb": peaks[name], column: t / seconds[reference]}
            for name, t in seconds.items()]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--grids", type=latlon_grid, nargs="+", default=None,
                   help="lat-lon grids HxW (default 32x64 121x240, full run also 361x720 721x1440)")
    p.add_argument("--train-grids", type=latlon_grid, nargs="*", default=None,
                   help="grids of the train-step rows (default: those of --grids up to 361x720)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per implementation (default by grid)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    grids = args.grids or GRIDS["quick" if args.quick else "full"]
    start, rows = time.perf_counter(), []
    train_grids = args.train_grids if args.train_grids is not None else [g for g in grids if g[0] * g[1] <= 361 * 720]
    for shape in grids:
        repeats = args.repeats or (9 if shape[0] < 200 else 5 if shape[0] < 500 else 3)
        for pass_ in ("forward", "train-step") if shape in train_grids else ("forward",):
            rows += grid_rows(shape, pass_, repeats, args.device)
            gc.collect()  # the models of a grid (and their SHT tables) before the next ones are built
    print_table(rows, COLUMNS)
    write_json(rows, args.out, {"benchmark": "sfno_speed", "quick": args.quick, "threads": args.threads,
                                "width": WIDTH, "layers": LAYERS, "channels": CHANNELS, "grids": grids,
                                "train_grids": train_grids,
                                "seconds_total": time.perf_counter() - start})


if __name__ == "__main__":
    main()
