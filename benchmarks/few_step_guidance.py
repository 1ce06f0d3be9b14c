"""Few-step guided sampling: what the trust region and the noise schedule's top level do at 5–20 Heun steps.

Ablation on the Darcy tasks of ``benchmarks/inverse_problems.py`` (3 % sensors, 64², held-out fields): every
combination of ``sigma_max`` ∈ {80 (EDM's image default), 20 (our default for unit-std data)} and the guidance
trust region on/off, at several step counts. Reports the relative L2 of the posterior mean and of one sample,
and the std of the samples relative to the data (a blow-up shows as a ratio ≫ 1).

    python benchmarks/few_step_guidance.py --quick --out few_step.json               # trains the quick model
    python benchmarks/few_step_guidance.py --checkpoint runs/darcy-64 --out few_step.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, print_table, write_json  # noqa: E402
from inverse_problems import generate, settings, train_diffusion  # noqa: E402

from funcdiff.io.checkpoint import load_denoiser  # noqa: E402
from funcdiff.metrics import relative_l2  # noqa: E402
from funcdiff.sampling import num_denoiser_calls  # noqa: E402
from funcdiff.tasks import TASKS, make_observation, solve  # noqa: E402

COLUMNS = ["task", "sigma_max", "trust_region", "steps", "nfe", "rel_l2", "rel_l2_single", "std_ratio", "n_samples"]


def evaluate(model, task, test: torch.Tensor, steps: int, sigma_max: float, trust: bool, num_samples: int,
             seed: int, device: str) -> dict:
    """Average over held-out fields (B, 2, N, N) of the target's errors and the samples' std ratio."""
    mean_err, single_err, ratio = [], [], []
    target = list(task.target_index)
    for i in range(test.shape[0]):
        truth = test[i:i + 1]
        obs = make_observation(task, truth, fraction=0.03, seed=seed + i)
        post = solve(model, task, obs, num_samples=num_samples, steps=steps, seed=seed + i, sigma_max=sigma_max,
                     trust_region=1.0 if trust else None, device=device)
        pred, t = post.samples[:, target], truth[:, target]
        mean_err.append(float(relative_l2(pred.mean(0, keepdim=True), t)))
        single_err.append(float(relative_l2(pred, t.expand_as(pred)).mean()))
        ratio.append(float(pred.std() / test[:, target].std()))
    avg = lambda v: sum(v) / len(v)  # noqa: E731
    return {"rel_l2": avg(mean_err), "rel_l2_single": avg(single_err), "std_ratio": avg(ratio)}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="a trained joint Darcy model (default: train one)")
    p.add_argument("--work-dir", type=Path, default=Path("runs/bench_few_step"))
    args = p.parse_args()
    s = settings(args.quick)
    n_test = 6 if args.quick else 50
    steps = [5, 7, 10, 20] if args.quick else [5, 7, 10, 20, 50]
    fields = generate("darcy", s["n_train"] + n_test, s["resolution"], args.seed)
    train, test = fields[:s["n_train"]], fields[s["n_train"]:]
    checkpoint = args.checkpoint or train_diffusion("darcy", train, s, args.work_dir / "darcy", args.device)
    model = load_denoiser(checkpoint, device=args.device)
    rows = []
    for direction in ("forward", "inverse"):
        task = TASKS[f"darcy-{direction}"]
        for sigma_max in (80.0, 20.0):
            for trust in (False, True):
                for n in steps:
                    t0 = time.perf_counter()
                    found = evaluate(model, task, test, n, sigma_max, trust, s["num_samples"], args.seed, args.device)
                    rows.append({"task": task.name, "sigma_max": sigma_max, "trust_region": trust, "steps": n,
                                 "nfe": num_denoiser_calls("heun", n), **found, "n_samples": n_test,
                                 "seconds": time.perf_counter() - t0})
                    print_table(rows[-1:], COLUMNS)
    print_table(rows, COLUMNS)
    write_json(rows, args.out, {"quick": args.quick, "checkpoint": str(checkpoint), "obs_fraction": 0.03})


if __name__ == "__main__":
    main()
