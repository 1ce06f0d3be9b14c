"""Throughput and accuracy of the funcdiff.pde data generators.

For each generator: samples per second of ``Problem.generate`` (GRF draw + solve, float64 solve, default
parameters), and the relative L2 error of one solve against a reference solve of the same initial condition /
coefficient on a 2x finer grid (and, for time-dependent problems, half the time step), brought back to the coarse
grid by spectral truncation (periodic problems) or injection at the shared nodes (Darcy, Poisson, Helmholtz:
node grid). Poisson and Helmholtz also report the error against the exact discrete solution (a random u* with
zero boundary, its source a = Lap_h u* + k^2 u*, solved back): the DST solver is exact up to round-off.

    python benchmarks/pde_solvers.py --quick --out results.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402

from funcdiff.pde import (  # noqa: E402
    get_problem,
    sample_cosine_grf,
    sample_periodic_grf,
    solve_burgers,
    solve_darcy,
    solve_helmholtz,
    solve_navier_stokes,
    threshold_coefficient,
)
from funcdiff.pde.elliptic import laplacian_5point  # noqa: E402
from funcdiff.pde.registry import (  # noqa: E402
    BURGERS_DEFAULTS,
    FNO_NS_SIGMA,
    HELMHOLTZ_DEFAULTS,
    NS_PAIR_DEFAULTS,
    SOURCE_DEFAULTS,
)
from funcdiff.utils import fourier_resample  # noqa: E402


def _throughput(name: str, resolution: int, batch: int, **params) -> float:
    problem = get_problem(name)
    problem.generate(1, resolution, generator=torch.Generator().manual_seed(0), **params)  # warm-up (FFT plans)
    start = time.perf_counter()
    problem.generate(batch, resolution, generator=torch.Generator().manual_seed(1), **params)
    return batch / (time.perf_counter() - start)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).flatten(1).norm(dim=1).div(b.flatten(1).norm(dim=1)).mean())


def ns_error(n: int, t_final: float, samples: int = 2) -> float:
    g = torch.Generator().manual_seed(2)
    w0 = sample_periodic_grf(samples, n, 2, sigma=FNO_NS_SIGMA, generator=g, dtype=torch.float64)
    kw = {"nu": NS_PAIR_DEFAULTS["nu"], "forcing": "fno"}
    coarse = solve_navier_stokes(w0, [t_final], max_dt=NS_PAIR_DEFAULTS["max_dt"], **kw)[:, :, -1]
    fine = solve_navier_stokes(fourier_resample(w0, 2 * n, 2), [t_final], max_dt=NS_PAIR_DEFAULTS["max_dt"] / 2,
                               cfl=0.25, **kw)[:, :, -1]
    return _rel(coarse, fourier_resample(fine, n, 2))


def burgers_error(n: int, samples: int = 2, nu: float = BURGERS_DEFAULTS["nu"]) -> float:
    g = torch.Generator().manual_seed(2)
    u0 = sample_periodic_grf(samples, n, 1, sigma=BURGERS_DEFAULTS["sigma"], generator=g, dtype=torch.float64)
    t_end = BURGERS_DEFAULTS["times"][-1]
    coarse = solve_burgers(u0, [t_end], nu=nu)[:, :, -1]
    fine = solve_burgers(fourier_resample(u0, 2 * n, 1), [t_end], nu=nu, cfl=0.5, max_dt=5e-3)[:, :, -1]
    return _rel(coarse, fourier_resample(fine, n, 1))


def darcy_error(n: int, samples: int = 2) -> float:
    g = torch.Generator().manual_seed(2)
    a_fine = threshold_coefficient(sample_cosine_grf(samples, 2 * n - 1, generator=g, dtype=torch.float64))
    u_fine = solve_darcy(a_fine)
    return _rel(solve_darcy(a_fine[..., ::2, ::2]), u_fine[..., ::2, ::2])


def elliptic_exact_error(n: int, k: float, samples: int = 2) -> float:
    """Relative error of ``solve_helmholtz`` (k = 0: Poisson) against a known discrete solution u*."""
    u = torch.randn(samples, 1, n, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u = torch.nn.functional.pad(u[..., 1:-1, 1:-1], (1, 1, 1, 1))  # u* = 0 on the boundary
    return _rel(solve_helmholtz(laplacian_5point(u) + k ** 2 * u, k), u)


def elliptic_error(n: int, k: float, samples: int = 2) -> float:
    """Relative error of the N-node solve against the (2N-1)-node solve of the same cosine-GRF source."""
    g = torch.Generator().manual_seed(2)
    a_fine = sample_cosine_grf(samples, 2 * n - 1, alpha=SOURCE_DEFAULTS["alpha"], tau=SOURCE_DEFAULTS["tau"],
                               generator=g, dtype=torch.float64)
    return _rel(solve_helmholtz(a_fine[..., ::2, ::2], k), solve_helmholtz(a_fine, k)[..., ::2, ::2])


def run(quick: bool, pdes: list[str] | None = None) -> list[dict]:
    t_ns = NS_PAIR_DEFAULTS["t_final"]
    cases = [
        ("navier_stokes", 64, 8 if quick else 32, {"t_final": t_ns}, lambda: ns_error(64, t_ns)),
        ("navier_stokes", 128, 4 if quick else 16, {"t_final": t_ns}, lambda: ns_error(128, t_ns)),
        ("navier_stokes", 256, 1 if quick else 4, {"t_final": t_ns}, lambda: ns_error(256, t_ns, 1)),
        ("burgers", 1024, 16 if quick else 64, {}, lambda: burgers_error(1024)),
        ("burgers", 1024, 16 if quick else 64, {"nu": 1e-3}, lambda: burgers_error(1024, nu=1e-3)),
        ("darcy", 64, 32 if quick else 128, {}, lambda: darcy_error(64)),
        ("darcy", 128, 8 if quick else 32, {}, lambda: darcy_error(128)),
        *[(pde, res, (64 if quick else 256) * 64 // res, {}, lambda res=res, k=k: elliptic_error(res, k))
          for pde, k in (("poisson", 0.0), ("helmholtz", HELMHOLTZ_DEFAULTS["k"])) for res in (64, 128)],
    ]
    exact = {"poisson": 0.0, "helmholtz": HELMHOLTZ_DEFAULTS["k"]}
    rows = []
    for pde, res, batch, params, error in cases:
        if pdes and pde not in pdes:
            continue
        sps = _throughput(pde, res, batch, **params)
        rows.append({"pde": pde, "resolution": res, "samples_per_second": round(sps, 3),
                     "rel_error_vs_fine": float(f"{error():.3e}"), "batch": batch, "params": params,
                     "threads": torch.get_num_threads()})
        if pde in exact:
            rows[-1]["rel_error_vs_exact_discrete"] = float(f"{elliptic_exact_error(res, exact[pde]):.3e}")
        print(f"{pde:<15} {res:>6} {sps:>12.2f} {rows[-1]['rel_error_vs_fine']:>14.3e} "
              f"{rows[-1].get('rel_error_vs_exact_discrete', float('nan')):>14.3e}  {params}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches (well under 2 min on 2 cores)")
    parser.add_argument("--out", default=None, help="write the JSON rows here")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--pdes", default=None, help="comma-separated subset, e.g. poisson,helmholtz")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'pde':<15} {'res':>6} {'samples/s':>12} {'rel err fine':>14} {'rel err exact':>14}  params")
    rows = run(args.quick, args.pdes.split(",") if args.pdes else None)
    if args.out:
        write_json(rows, Path(args.out), {"benchmark": "pde_solvers", "quick": args.quick})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
