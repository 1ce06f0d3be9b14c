"""GRF sampling time: FFT sampler (funcdiff.noise) vs a dense-Cholesky sampler of the same covariance.

The FunDPS reference code draws its noise through a dense Cholesky factor of the grid covariance: O(N²)
memory and O(N³) set-up in grid points N. Our FFT sampler is O(N log N) with no set-up beyond the spectrum.
Rows: {"resolution", "method", "stage", "seconds"}; Cholesky rows appear where the dense matrix fits.

    python benchmarks/noise.py --quick --out benchmarks/results/noise.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, parser, print_table, write_json  # noqa: E402

from funcdiff.noise import GaussianRandomField  # noqa: E402

BATCH = 8


def dense_covariance(grf: GaussianRandomField, n: int) -> torch.Tensor:
    """(n², n²) covariance matrix of the GRF on an n×n periodic grid, from its spectrum (float64)."""
    lam = grf.spectrum((n, n), dtype=torch.float64)
    kernel = torch.fft.ifftn(lam * n * n).real  # c(r) for every offset r on the grid
    idx = torch.arange(n)
    di = (idx[:, None] - idx[None, :]) % n  # (n, n) offsets along one axis
    return kernel[di[:, None, :, None], di[None, :, None, :]].reshape(n * n, n * n)


def time_cholesky(grf: GaussianRandomField, n: int, generator: torch.Generator) -> tuple[float, float, float]:
    """Set-up (build + factorise) time, sampling time for a batch, and the sample's pointwise variance."""
    start = time.perf_counter()
    cov = dense_covariance(grf, n)
    factor = torch.linalg.cholesky(cov + 1e-10 * torch.eye(n * n, dtype=cov.dtype))
    setup = time.perf_counter() - start
    draw = lambda: (factor @ torch.randn(n * n, BATCH, dtype=cov.dtype, generator=generator)).T.reshape(BATCH, 1, n, n)
    return setup, best_time(draw), float(draw().var())


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    resolutions = [64, 128, 256, 512] if args.quick else [64, 128, 256, 512, 1024]
    cholesky_max = 64 if args.quick else 128  # 128²: a 2 GiB matrix and ~1.5e12 flops to factorise
    grf = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.05)
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for n in resolutions:
        grf.spectrum((n, n))  # the cached spectrum is set-up, paid once per grid
        seconds = best_time(lambda: grf.sample((BATCH, 1, n, n), generator=generator, device=args.device),
                            device=args.device)
        rows.append({"resolution": n, "method": "fft", "stage": "sample", "seconds": seconds})
        if n <= cholesky_max and args.device == "cpu":
            setup, sample_s, var = time_cholesky(grf, n, generator)
            rows += [{"resolution": n, "method": "dense-cholesky", "stage": "setup", "seconds": setup},
                     {"resolution": n, "method": "dense-cholesky", "stage": "sample", "seconds": sample_s}]
            print(f"  check at {n}²: Cholesky pointwise variance {var:.3f} (FFT sampler: 1.000 by construction)")
        else:
            gib = (n * n) ** 2 * 8 / 2**30
            rows.append({"resolution": n, "method": "dense-cholesky", "stage": "skipped",
                         "seconds": None, "note": f"matrix alone {gib:.0f} GiB, factorisation ~{(n*n)**3/3:.1e} flops"})
    print_table(rows, ["resolution", "method", "stage", "seconds", "note"])
    for n in resolutions:
        fft = next(r["seconds"] for r in rows if r["resolution"] == n and r["method"] == "fft")
        chol = [r["seconds"] for r in rows if r["resolution"] == n and r["method"] == "dense-cholesky" and r["seconds"]]
        if chol:
            print(f"{n}²: dense Cholesky set-up + sample is {sum(chol) / fft:.0f}× the FFT sample time")
    write_json(rows, args.out, {"benchmark": "noise", "batch": BATCH, "quick": args.quick})


if __name__ == "__main__":
    main()
