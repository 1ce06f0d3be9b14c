"""Sampler overhead: wall time of an N-step sample vs N_fe × the bare denoiser time, at 64² and 128².

overhead_fraction = (t_sample - t_bare) / t_sample, where t_bare is the time of the same NFE forward passes
of the same EDM-preconditioned FNO on the same batch, called back to back with nothing around them (the two
are timed interleaved, best of three each, so load on a shared machine hits both alike). The sampler's own work (schedule, noise for
the initial state, the solver arithmetic) should stay under 5 %.
Rows: {"resolution", "solver", "steps", "nfe", "seconds", "overhead_fraction"}.

    python benchmarks/sampler_overhead.py --quick --out benchmarks/results/sampler_overhead.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, parser, print_table, write_json  # noqa: E402

from funcdiff.models import build_denoiser  # noqa: E402
from funcdiff.noise import GaussianRandomField  # noqa: E402
from funcdiff.sampling import num_denoiser_calls, sample  # noqa: E402

SIGMA_MAX_MEASURED = 80.0  # the sampler default when results/*.json were measured (now 20: funcdiff.schedules)

MODEL = {"backbone": "fno", "in_channels": 1, "out_channels": 1, "n_modes": [16, 16], "hidden_channels": 32,
         "n_layers": 4, "sigma_data": 0.5}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    torch.manual_seed(args.seed)
    denoiser = build_denoiser(MODEL).to(args.device).eval()
    noise = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.05)
    batch, steps = (4, 8) if args.quick else (8, 32)
    rows = []
    for n in (64, 128):
        for solver in ("euler", "heun", "stochastic"):
            nfe = num_denoiser_calls(solver, steps)
            x = torch.randn(batch, 1, n, n, device=args.device)
            levels = torch.linspace(80.0, 0.01, nfe).tolist()

            def bare() -> None:  # the same NFE denoiser calls the solver makes, with nothing around them
                with torch.no_grad():
                    for level in levels:
                        denoiser(x, torch.full((batch,), level, device=args.device))

            def run() -> None:
                sample(denoiser, (batch, 1, n, n), noise, steps=steps, solver=solver, seed=args.seed,
                       device=args.device, sigma_max=SIGMA_MAX_MEASURED)

            # interleave the two so that load changes on a shared machine hit both alike; keep the best of each
            t_bare, t_sample = zip(*[(best_time(bare, 1, args.device), best_time(run, 1, args.device))
                                     for _ in range(3)])
            t_bare, t_sample = min(t_bare), min(t_sample)
            rows.append({"resolution": n, "solver": solver, "steps": steps, "nfe": nfe, "seconds": t_sample,
                         "denoiser_seconds": t_bare / nfe, "overhead_fraction": (t_sample - t_bare) / t_sample})
    print_table(rows, ["resolution", "solver", "steps", "nfe", "seconds", "denoiser_seconds", "overhead_fraction"])
    write_json(rows, args.out, {"benchmark": "sampler_overhead", "batch": batch, "model": MODEL, "quick": args.quick})


if __name__ == "__main__":
    main()
