"""Forward/inverse PDE tasks from 3 % random observations: guided diffusion vs interpolation and FNO regression.

FunDPS protocol on our generated data: per held-out field, observe 3 % of the grid at random nodes (500 of
128², or the same fraction at the resolution run), report the relative L2 error of the target channel per
field averaged over all held-out fields (Darcy inverse also the misclassification rate at a = 7.5).
Rows: each posterior sampler of ``solve(method=...)`` (dps, mmps, enkg, dps-physics, mmps-physics,
enkg-physics; Heun) at 10, 20 and 50 steps, scoring one posterior sample (``estimator=single``, averaged over the
samples drawn) and the mean of several (``estimator=mean``), with the numerical-solver calls and VJPs per sample
beside the NFE; zero-shot resolution (``zero_shot`` rows): the 64²-trained model solves held-out fields
generated at 128² and the *same* fields restricted to 64² (:func:`restrict`), so the ratio of the two errors
compares one model on the same functions; in full mode also PDE-residual guidance rows; ``interpolation`` (forward: interpolate the observed input, run our solver on it) and
``fno-regression`` (a deterministic FNO from masked observations to the target, trained on the same data).

One joint diffusion model per PDE (trained with the package's Trainer on configs/tasks/<pde>-64.yaml, sizes
overridden here) serves both directions. FunDPS reference at 128², 500 Heun steps (999 NFE):
Darcy 2.49 % / 5.18 %, Poisson 1.99 / 20.47, Helmholtz 2.13 / 17.16, Navier–Stokes 3.32 / 8.48 (fwd / inv).

    python benchmarks/inverse_problems.py --quick --out inverse_quick.json   # every PDE at 64² on CPU
    python benchmarks/inverse_problems.py --quick --problems darcy --methods dps mmps --no-fine --out d.json
    python benchmarks/inverse_problems.py --checkpoint darcy=runs/darcy-64 --problems darcy --out darcy.json

Backbones (issue 22): ``--backbones fno uno local_fno`` trains the joint model once per backbone, each for the same
budget of process CPU seconds on one thread (``--budget-s``, default 90 in quick mode; ``time.process_time``, so
the other jobs of a shared machine do not change it), and scores dps at 10 and 20 steps and mmps-physics at 10
(``--methods`` to choose) on the ``--directions`` (default inverse), single sample and mean; rows carry
``backbone``, ``train_steps`` and ``train_cpu_s``:

    python benchmarks/inverse_problems.py --quick --problems darcy poisson --backbones fno uno local_fno \\
        --n-test 4 --out benchmarks/results/backbones_inverse_quick.json

With ``--multigrid``, the first backbone is also trained on two grids at once (64² and 32², the same budget;
:mod:`funcdiff.training.multigrid`), and both it and the 64²-only model solve held-out fields generated at 128² and
the same fields restricted to 64² (dps, 10 steps, forward and inverse): ``zero_shot_ratio`` rows give the error at
128² over the error at 64² per training (``training_grids``), task and estimator.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, print_table, train_for_budget, train_in_memory, write_json  # noqa: E402

from funcdiff.config import load_config  # noqa: E402
from funcdiff.io.checkpoint import load_denoiser  # noqa: E402
from funcdiff.metrics import misclassification_rate, relative_l2  # noqa: E402
from funcdiff.pde import get_problem  # noqa: E402
from funcdiff.sampling import num_denoiser_calls  # noqa: E402
from funcdiff.tasks import TASKS, make_observation, solve  # noqa: E402
from funcdiff.tasks.solve import push_forward, regrid  # noqa: E402
from funcdiff.pde import cosine_grf_expansion, threshold_coefficient  # noqa: E402
from funcdiff.tasks.baselines import fno_regression_predict, interpolation_baseline, train_fno_regression  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "tasks"
PROBLEM_CONFIG = {"darcy": "darcy-64", "poisson": "poisson-64", "helmholtz": "helmholtz-64",
                  "navier_stokes": "navier-stokes-64"}
TASK_PREFIX = {"navier_stokes": "navier-stokes"}
COLUMNS = ["task", "direction", "method", "pde_weight", "estimator", "steps", "nfe", "solver_calls", "vjps",
           "rel_l2", "misclassification", "resolution", "zero_shot", "n_samples", "seconds"]
METHODS = ("dps", "mmps", "enkg", "dps-physics", "mmps-physics", "enkg-physics")
BACKBONE_MODEL = {"fno": [], "local_fno": [], "uno": ["model.n_layers=1"]}  # uno: 1 block per level (2 levels), 5 in all
BUDGET_S = 90.0  # quick mode with --backbones: CPU seconds of training per backbone (x10 in full mode)


def settings(quick: bool) -> dict:
    """Run sizes. ``pde_runs``: (steps, weight) of the PDE-guided rows (active below σ = pde_start_sigma).
    ``max_steps``: cap on the step counts per method, ``direction/method`` or ``problem/method`` (quick mode
    runs 10 and 20 steps — 50 with ``--steps 10 20 50`` — and keeps ``mmps-physics`` at 10 steps for forward
    tasks, where it costs 4× ``dps-physics`` for the same error, and the solver-in-the-loop methods at 10 steps
    for Navier–Stokes, whose differentiable solver is the slowest, so that ``--quick --jobs 2`` stays under 20
    minutes on 2 idle cores).
    ``cg_iters``: CG iterations of ``mmps`` (σ-aware preconditioner) and of ``mmps-physics`` (residual-normalised
    preconditioner: it needs more). ``fine_skip``: (problem or "*", direction, method) left out of the
    zero-shot rows."""
    if quick:
        return dict(problems=["darcy", "poisson", "helmholtz", "navier_stokes"], resolution=64, n_train=300,
                    n_test=2, train_steps=400, fno_steps=200, steps=[10, 20], pde_runs=[], pde_start_sigma=1.0,
                    num_samples=4, hidden=24, layers=3, methods=list(METHODS),
                    cg_iters={"mmps": 2, "mmps-physics": 10}, fine=128, fine_steps=[10],
                    fine_methods=["dps", "mmps", "dps-physics", "mmps-physics"],
                    fine_skip=[["*", "forward", "mmps-physics"], ["darcy", "inverse", "mmps-physics"],
                               ["navier_stokes", "inverse", "dps-physics"], ["navier_stokes", "inverse", "mmps-physics"]],
                    max_steps={"dps-physics": 20, "mmps-physics": 20, "enkg-physics": 20, "forward/mmps-physics": 10,
                               "navier_stokes/dps-physics": 10, "navier_stokes/mmps-physics": 10,
                               "navier_stokes/enkg-physics": 10})
    return dict(problems=["darcy", "poisson", "helmholtz", "navier_stokes"], resolution=64, n_train=1000,
                n_test=100, train_steps=4000, fno_steps=3000, steps=[10, 20, 50, 100, 200],
                pde_runs=[(20, 0.01), (20, 1.0), (20, 100.0), (100, 1.0)], pde_start_sigma=1.0, num_samples=8,
                hidden=32, layers=4, methods=list(METHODS), cg_iters={"mmps": 3, "mmps-physics": 10}, fine=128,
                fine_steps=[20, 50], fine_methods=list(METHODS), fine_skip=[], max_steps={})


def generate(problem: str, num: int, resolution: int, seed: int) -> torch.Tensor:
    """Joint fields (num, 2, N, N) in physical units from the PDE registry."""
    p = get_problem(problem)
    data = p.generate(num, resolution, generator=torch.Generator().manual_seed(seed))
    return torch.stack([data[name] for name in p.fields], dim=1)


def restrict(problem: str, fields: torch.Tensor, resolution: int) -> torch.Tensor:
    """The same functions on a coarser grid, as a discrete pair like the training data: the input channel
    interpolated (multilinear at the grid's nodes; Darcy's coefficient re-thresholded to its two values), the
    output re-solved there by our solver. Shapes: (B, 2, N, N) -> (B, 2, n, n), physical units."""
    task = TASKS[f"{TASK_PREFIX.get(problem, problem)}-forward"]
    a = regrid(fields[:, :1].double(), (resolution, resolution), task.grid)
    if problem == "darcy":
        p = get_problem(problem).defaults
        a = threshold_coefficient(a - 0.5 * (p["a_high"] + p["a_low"]), p["a_high"], p["a_low"])
    with torch.no_grad():
        u = task.forward_solver(a)
    return torch.cat([a, u.double()], dim=1).to(fields.dtype)


def diffusion_config(problem: str, s: dict, out_dir: Path, device: str, extra: tuple = ()):
    """The joint model's run config: configs/tasks/<pde>-64.yaml with this benchmark's sizes and ``extra``."""
    overrides = [f"train.steps={s['train_steps']}", f"train.out_dir={out_dir}", f"train.device={device}",
                 "train.log_every=0", "train.checkpoint_every=0", "train.eval_every=0", "train.warmup_steps=50",
                 f"model.hidden_channels={s['hidden']}", f"model.n_layers={s['layers']}",
                 f"data.resolution={s['resolution']}", "train.ema_decay=0.995", *extra]
    return load_config(CONFIGS / f"{PROBLEM_CONFIG[problem]}.yaml", overrides)


def train_diffusion(problem: str, fields: torch.Tensor, s: dict, out_dir: Path, device: str) -> Path:
    """Train the joint model with the package's Trainer on in-memory fields; returns the checkpoint path."""
    return train_in_memory(diffusion_config(problem, s, out_dir, device), fields)[1]


def run_backbones(problem: str, s: dict, args, work: Path) -> list[dict]:
    """The joint model once per backbone at an equal CPU budget, scored by ``s["methods"]`` (module docstring)."""
    fields = generate(problem, s["n_train"] + s["n_test"], s["resolution"], args.seed)
    train, test = fields[:s["n_train"]], fields[s["n_train"]:]
    budget = args.budget_s or BUDGET_S * (1 if args.quick else 10)
    rows = []
    for backbone in args.backbones:
        config = diffusion_config(problem, s, work / f"{problem}-{backbone}", args.device,
                                  (f"model.backbone={backbone}", *BACKBONE_MODEL[backbone]))
        trainer, trained = train_for_budget(config, budget, train)
        model = load_denoiser(work / f"{problem}-{backbone}", device=args.device)
        for direction in args.directions:
            task = TASKS[f"{TASK_PREFIX.get(problem, problem)}-{direction}"]
            found = method_rows(task, model, test, s, args.seed, args.device, s["methods"], s["steps"])
            if backbone == args.backbones[0]:
                found += oracle_rows(problem, task, test, args.seed)
            for r in found:
                rows.append({"task": problem, "direction": direction, "n_samples": int(test.shape[0]),
                             "resolution": s["resolution"], "solver_calls": 0, "zero_shot": False, **r,
                             "backbone": backbone if r["method"] != "gaussian-oracle" else None,
                             "train_steps": trained["steps"], "train_cpu_s": trained["train_cpu_s"],
                             "budget_cpu_s": budget})
            print_table(rows[-len(found):], ["backbone", *COLUMNS])
    if args.multigrid:
        rows += zero_shot_rows(problem, train, s, args, work, budget)
    return rows


def zero_shot_rows(problem: str, train: torch.Tensor, s: dict, args, work: Path, budget: float) -> list[dict]:
    """The first backbone trained on 64² only and on 64² + 32² (equal CPU budget), each solving held-out fields at
    128² and the same fields restricted to 64² (:func:`restrict`): the ratio of the two errors per estimator."""
    backbone = args.backbones[0]
    fine = generate(problem, s["n_test"], 2 * s["resolution"], args.seed + 7919)
    coarse = restrict(problem, fine, s["resolution"])
    half = generate(problem, train.shape[0], s["resolution"] // 2, args.seed + 1)  # other draws, the same law
    extra = (f"model.backbone={backbone}", *BACKBONE_MODEL[backbone])
    multi = diffusion_config(problem, s, work / f"{problem}-{backbone}-multigrid", args.device, extra)
    trained = train_for_budget(multi, budget, [train, half])[1]
    models = {f"{s['resolution']}": work / f"{problem}-{backbone}",
              f"{s['resolution']}+{s['resolution'] // 2}": work / f"{problem}-{backbone}-multigrid"}
    rows = []
    for grids, path in models.items():
        model = load_denoiser(path, device=args.device)
        for direction in ("forward", "inverse"):
            task = TASKS[f"{TASK_PREFIX.get(problem, problem)}-{direction}"]
            found = {n: method_rows(task, model, fields, s, args.seed, args.device, ["dps"], [10])
                     for n, fields in ((s["resolution"], coarse), (2 * s["resolution"], fine))}
            for at_coarse, at_fine in zip(found[s["resolution"]], found[2 * s["resolution"]]):
                rows.append({"task": problem, "direction": direction, "method": "dps", "steps": 10,
                             "estimator": at_coarse["estimator"], "backbone": backbone, "training_grids": grids,
                             "zero_shot": True,
                             "zero_shot_ratio": at_fine["rel_l2"] / at_coarse["rel_l2"],
                             "rel_l2_64": at_coarse["rel_l2"], "rel_l2_128": at_fine["rel_l2"],
                             "n_samples": int(fine.shape[0]), "budget_cpu_s": budget,
                             "train_steps": trained["steps"] if "+" in grids else None})
    print_table(rows, ["task", "direction", "estimator", "training_grids", "rel_l2_64", "rel_l2_128",
                       "zero_shot_ratio"])
    return rows


def score(task, pred: torch.Tensor, truth: torch.Tensor) -> dict:
    """rel L2 (and misclassification for thresholded targets) of predictions (B, 1, *S) vs truth (1, 1, *S)."""
    truth = truth.expand_as(pred)
    out = {"rel_l2": float(relative_l2(pred, truth).mean())}
    if task.threshold is not None:
        out["misclassification"] = float(misclassification_rate(pred, truth, task.threshold).mean())
    return out


def guided_rows(task, model, test: torch.Tensor, s: dict, seed: int, device: str) -> list[dict]:
    """Rows of our sampler: ``guided``, ``guided+pde`` (PDE-residual guidance) and, for forward tasks with a
    solver, ``guided+solver`` (the same guided samples' input channel pushed through the numerical solver)."""
    rows = []
    runs = [(n, None) for n in s["steps"]]
    if task.residual is not None:
        runs += [(n, float(w)) for n, w in s["pde_runs"]]
    pushforward = task.direction == "forward" and task.forward_solver is not None
    for steps, weight in runs:
        pde = weight is not None
        methods = ["guided+pde" if pde else "guided"] + (["guided+solver"] if pushforward and not pde else [])
        per = {(m, e): [] for m in methods for e in ("mean", "single")}
        for i in range(test.shape[0]):
            truth = test[i:i + 1]
            obs = make_observation(task, truth, fraction=0.03, seed=seed + i)
            post = solve(model, task, obs, num_samples=s["num_samples"], steps=steps, seed=seed + i,
                         resolution=tuple(truth.shape[2:]),  # the data's grid, whatever the model was trained on
                         pde_guidance=pde, pde_weight=weight or 0.0, pde_start_sigma=s["pde_start_sigma"],
                         device=device)
            t = truth[:, list(task.target_index)]
            for method in methods:
                samples = push_forward(task, post.samples, post.channel_names) if method == "guided+solver" \
                    else post.samples
                target = post.channel(samples, task.target)
                per[(method, "mean")].append(score(task, target.mean(0, keepdim=True), t))
                per[(method, "single")].append(score(task, target, t))
        for (method, estimator), scores in per.items():
            row = {"method": method, "estimator": estimator, "steps": steps, "nfe": num_denoiser_calls("heun", steps),
                   "pde_weight": weight}
            rows.append({**row, **_average(scores)})
    return rows


def method_rows(task, model, test: torch.Tensor, s: dict, seed: int, device: str, methods, steps_list
                ) -> list[dict]:
    """Rows of the posterior samplers of ``solve(method=...)`` on the held-out fields ``test`` (at their grid):
    mean of ``num_samples`` and single samples; solver calls and VJPs per posterior sample, wall seconds per field."""
    rows = []
    for method in methods:
        if method.endswith("-physics") and task.physics_solver is None:
            continue
        caps = s.get("max_steps", {})
        cap = caps.get(f"{task.problem}/{method}", caps.get(f"{task.direction}/{method}", caps.get(method)))
        for steps in [n for n in steps_list if cap is None or n <= cap]:
            per = {"mean": [], "single": []}
            calls, vjps, t0 = [], [], time.perf_counter()
            for i in range(test.shape[0]):
                truth = test[i:i + 1]
                obs = make_observation(task, truth, fraction=0.03, seed=seed + i)
                post = solve(model, task, obs, num_samples=s["num_samples"], steps=steps, seed=seed + i,
                             resolution=tuple(truth.shape[2:]), method=method, cg_iters=cg_iters(s, method),
                             device=device)
                target = post.channel(post.samples, task.target)
                t = truth[:, list(task.target_index)]
                per["mean"].append(score(task, target.mean(0, keepdim=True), t))
                per["single"].append(score(task, target, t))
                calls.append(post.settings.get("solver_calls", 0) / s["num_samples"])
                vjps.append(post.settings.get("vjps", 0))
            seconds = (time.perf_counter() - t0) / test.shape[0]
            for estimator, scores in per.items():
                rows.append({"method": method, "estimator": estimator, "steps": steps,
                             "nfe": num_denoiser_calls("heun", steps), "pde_weight": None,
                             "solver_calls": sum(calls) / len(calls), "vjps": sum(vjps) / len(vjps),
                             "resolution": int(test.shape[-1]), "seconds": round(seconds, 1), **_average(scores)})
    return rows


def cg_iters(s: dict, method: str) -> int:
    """CG iterations of ``method`` from the settings (0 for the methods without CG)."""
    return int(s["cg_iters"].get(method, 0))


def _average(scores: list[dict]) -> dict:
    return {k: sum(d[k] for d in scores) / len(scores) for k in scores[0]}


def baseline_rows(task, train: torch.Tensor, test: torch.Tensor, s: dict, seed: int, device: str,
                  normalizer) -> list[dict]:
    rows = []
    n = s["resolution"]
    if task.direction == "forward" and task.forward_solver is not None:
        scores = []
        for i in range(test.shape[0]):
            obs = make_observation(task, test[i:i + 1], fraction=0.03, seed=seed + i)
            scores.append(score(task, interpolation_baseline(task, obs, (n, n)), test[i:i + 1, list(task.target_index)]))
        rows.append({"method": "interpolation", "estimator": "point", "steps": 0, "nfe": 0, **_average(scores)})
    model = train_fno_regression(task, normalizer.encode(train), fraction=0.03, n_modes=(16, 16),
                                 steps=s["fno_steps"], hidden_channels=s["hidden"], n_layers=s["layers"], seed=seed,
                                 device=device)
    observed, target = normalizer.select(task.observed_index), normalizer.select(task.target_index)
    scores = []
    for i in range(test.shape[0]):
        obs = make_observation(task, test[i:i + 1], fraction=0.03, seed=seed + i)
        pred = target.decode(fno_regression_predict(model.cpu(), obs, (n, n), observed.encode))
        scores.append(score(task, pred, test[i:i + 1, list(task.target_index)]))
    rows.append({"method": "fno-regression", "estimator": "point", "steps": 0, "nfe": 1, **_average(scores)})
    return rows


def gaussian_oracle(problem: str, task, obs, resolution: int) -> Optional[torch.Tensor]:
    """The exact posterior mean of the target under the data's own prior, where that is Gaussian and the
    solver linear (Poisson, Helmholtz: the source a is the cosine GRF of the generator): the Bayes estimator,
    a floor for every method's mean-squared error. None for the other problems.

    a = Σ_k λ_k ξ_k φ_k with white ξ (the generator's expansion, :func:`funcdiff.pde.sample_cosine_grf`), y = G ξ
    with G the sensors of a (forward) or of S(a) (inverse); E[ξ | y] = Gᵀ (G Gᵀ + ε I)⁻¹ y (noise-free sensors,
    ε a 1e-10 relative jitter). Shapes: observation values (1, 1, n) -> (1, 1, N, N), physical units."""
    if problem not in ("poisson", "helmholtz"):
        return None
    p = get_problem(problem).defaults
    cos, scale = cosine_grf_expansion(resolution, alpha=p["alpha"], tau=p["tau"], sigma=p["sigma"])
    modes = torch.einsum("ik,jl,kl->klij", cos, cos, scale).reshape(-1, 1, resolution, resolution)
    solver = task.forward_solver
    with torch.no_grad():
        pair = torch.cat([modes, solver(modes)], dim=1)  # (modes, [a, u], N, N): the task's channels
        g = obs.observe(pair)[:, 0].T  # (n, modes)
        gram = g @ g.T
        gram = gram + 1e-10 * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=torch.float64)
        xi = g.T @ torch.linalg.solve(gram, obs.values[0, 0].double())
        a = (xi[:, None] * modes.flatten(1)).sum(0).reshape(1, 1, resolution, resolution)
        return solver(a) if task.direction == "forward" else a


def oracle_rows(problem: str, task, test: torch.Tensor, seed: int) -> list[dict]:
    """The ``gaussian-oracle`` row (:func:`gaussian_oracle`) over the held-out fields, where it exists."""
    scores = []
    for i in range(test.shape[0]):
        obs = make_observation(task, test[i:i + 1], fraction=0.03, seed=seed + i)
        pred = gaussian_oracle(problem, task, obs, int(test.shape[-1]))
        if pred is None:
            return []
        scores.append(score(task, pred.to(test.dtype), test[i:i + 1, list(task.target_index)]))
    return [{"method": "gaussian-oracle", "estimator": "point", "steps": 0, "nfe": 0, **_average(scores)}]


def run_problem(problem: str, s: dict, args, work: Path) -> list[dict]:
    t0 = time.perf_counter()
    fields = generate(problem, s["n_train"] + s["n_test"], s["resolution"], args.seed)
    train, test = fields[:s["n_train"]], fields[s["n_train"]:]
    t1 = time.perf_counter()
    checkpoint = args.checkpoints.get(problem) or train_diffusion(problem, train, s, work / problem, args.device)
    model = load_denoiser(checkpoint, device=args.device)
    print(f"[{problem}] data {t1 - t0:.0f} s, diffusion model {checkpoint} "
          f"({'given' if problem in args.checkpoints else 'trained'} in {time.perf_counter() - t1:.0f} s)", flush=True)
    rows = []
    fine = generate(problem, s["n_test"], s["fine"], args.seed + 7919) if s.get("fine") else None
    coarse = restrict(problem, fine, s["resolution"]) if fine is not None else None
    for direction in ("forward", "inverse"):
        task = TASKS[f"{TASK_PREFIX.get(problem, problem)}-{direction}"]
        t2 = time.perf_counter()
        found = method_rows(task, model, test, s, args.seed, args.device, s["methods"], s["steps"])
        if s["pde_runs"]:
            found += [r for r in guided_rows(task, model, test, {**s, "steps": []}, args.seed, args.device)]
        found += baseline_rows(task, train, test, s, args.seed, args.device, model[1].normalizer)
        found += oracle_rows(problem, task, test, args.seed)
        if fine is not None:  # the 64²-trained model at 128² and on the same fields at 64² (zero-shot resolution)
            skip = s.get("fine_skip", [])
            methods = [m for m in s["fine_methods"] if [problem, direction, m] not in skip
                       and ["*", direction, m] not in skip]
            for fields in (coarse, fine):
                found += [{**r, "zero_shot": True} for r in
                          method_rows(task, model, fields, s, args.seed, args.device, methods, s["fine_steps"])]
        for r in found:
            rows.append({"task": problem, "direction": direction, "n_samples": int(test.shape[0]),
                         "resolution": s["resolution"], "solver_calls": 0, "zero_shot": False, **r})
        print(f"[{problem}-{direction}] evaluated in {time.perf_counter() - t2:.0f} s", flush=True)
        print_table(rows[-len(found):], COLUMNS)  # partial results survive an interrupted run
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Relative L2 vs network evaluations (guided rows), baselines as horizontal lines; one curve per method and
    backbone when the rows compare backbones. Tasks with only zero-shot rows (table only) get no panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from funcdiff.io.plots import save_figure

    shown = [r for r in rows if not r.get("zero_shot")]  # the zero-shot pairs (64² model at 128²): table only
    keys = sorted({(r["task"], r["direction"]) for r in shown})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, (task, direction) in zip(axes[0], keys):
        sub = [r for r in shown if (r["task"], r["direction"]) == (task, direction)]
        curves = sorted({(r["method"], r.get("pde_weight"), r.get("backbone")) for r in sub if r["estimator"] != "point"},
                        key=lambda k: (k[0], k[1] or 0.0, k[2] or ""))
        backbones = sorted({c[2] for c in curves if c[2] is not None})
        markers = {m: "os^vD<>"[k % 7] for k, m in enumerate(sorted({c[0] for c in curves}))}
        for k, (method, weight, backbone) in enumerate(curves):
            name = method if weight is None else f"{method} (w={weight:g})"
            # with backbones: a colour per backbone, a marker per method; otherwise a colour per curve
            color = f"C{backbones.index(backbone) if backbones else k % 10}"
            marker = markers[method] if backbones else "o"
            name = name if backbone is None else f"{name}, {backbone}"
            for est, line in (("mean", "-"), ("single", "--")):
                pts = sorted((r["nfe"], r["rel_l2"]) for r in sub if (r["method"], r.get("pde_weight"),
                             r.get("backbone")) == (method, weight, backbone) and r["estimator"] == est)
                if pts:
                    ax.plot(*zip(*pts), line, marker=marker if est == "mean" else "x", color=color,
                            label=f"{name} ({est})")
        for r in sub:
            if r["estimator"] == "point":
                ax.axhline(r["rel_l2"], ls=":", color="k" if r["method"] == "interpolation" else "r", label=r["method"])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_ylabel("relative L2")
        ax.set_title(f"{task} {direction}", fontsize=9)
        ax.legend(fontsize=6)
    save_figure(fig, path)


def _problem_path(item: str) -> tuple[str, Path]:
    problem, sep, path = item.partition("=")
    if not sep or problem not in PROBLEM_CONFIG:
        raise SystemExit(f"--checkpoint wants PROBLEM=PATH with PROBLEM in {sorted(PROBLEM_CONFIG)}, got {item!r}")
    return problem, Path(path)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="*", default=None, help="subset of darcy poisson helmholtz navier_stokes")
    p.add_argument("--work-dir", type=Path, default=Path("runs/bench_inverse"))
    p.add_argument("--checkpoint", action="append", default=[], metavar="PROBLEM=PATH",
                   help="evaluate this trained joint model instead of training one (repeatable); its training data "
                        "must not contain the held-out fields (generated from --seed after the first n_train)")
    p.add_argument("--n-test", type=int, default=None, help="held-out fields (default: 10 quick, 100 full)")
    p.add_argument("--steps", type=int, nargs="*", default=None, help="solver steps of the guided rows")
    p.add_argument("--num-samples", type=int, default=None, help="posterior samples per field (default 4 / 8)")
    p.add_argument("--no-pde", action="store_true", help="skip the PDE-guided rows")
    p.add_argument("--methods", nargs="*", default=None, choices=METHODS, help="posterior samplers to compare")
    p.add_argument("--no-fine", action="store_true", help="skip the rows of the 64² model solved at 128²")
    p.add_argument("--resolution", type=int, default=None,
                   help="grid of the data and of sampling (default 64; a given checkpoint may be trained at another)")
    p.add_argument("--jobs", type=int, default=1,
                   help="problems run side by side in this many processes (each with torch's current thread count); "
                        "the rows do not depend on it")
    p.add_argument("--backbones", nargs="+", default=None, choices=list(BACKBONE_MODEL),
                   help="compare these backbones at an equal CPU training budget (--budget-s)")
    p.add_argument("--budget-s", type=float, default=None, help="with --backbones: CPU seconds of training each")
    p.add_argument("--directions", nargs="+", default=["inverse"], choices=["forward", "inverse"],
                   help="with --backbones: the tasks scored")
    p.add_argument("--multigrid", action="store_true",
                   help="with --backbones: also the 64²+32² multi-grid model and zero-shot 128² of both")
    args = p.parse_args()
    args.checkpoints = dict(_problem_path(item) for item in args.checkpoint)
    torch.manual_seed(args.seed)
    s = settings(args.quick)
    if args.backbones:
        s.update(methods=["dps", "mmps-physics"], steps=[10, 20], fine=None, max_steps={"mmps-physics": 10})
    if args.problems:
        s["problems"] = args.problems
    s.update({k: v for k, v in (("n_test", args.n_test), ("resolution", args.resolution), ("steps", args.steps),
                                ("num_samples", args.num_samples)) if v is not None})
    if args.no_pde:
        s["pde_runs"] = []
    if args.methods:
        s["methods"] = args.methods
        s["fine_methods"] = [m for m in s["fine_methods"] if m in args.methods]
    if args.no_fine:
        s["fine"] = None
    start, load_start = time.perf_counter(), os.getloadavg()
    if args.jobs > 1:  # one process per problem, each with this process's thread count
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),)) as pool:
            longest_first = sorted(s["problems"], key=lambda q: q != "navier_stokes")
            futures = {q: pool.submit(run_problem, q, s, args, args.work_dir) for q in longest_first}
            parts = [futures[q].result() for q in s["problems"]]
    elif args.backbones:
        parts = [run_backbones(problem, s, args, args.work_dir) for problem in s["problems"]]
    else:
        parts = [run_problem(problem, s, args, args.work_dir) for problem in s["problems"]]
    rows = [r for part in parts for r in part]
    wall = time.perf_counter() - start
    print_table(rows, COLUMNS)
    print(f"wall time {wall / 60:.1f} min with {args.jobs} process(es) of {torch.get_num_threads()} thread(s)")
    if args.backbones:
        s["compute"] = "equal process CPU seconds of training per backbone (time.process_time), one torch thread"
    meta = {"quick": args.quick, "settings": s, "obs_fraction": 0.03, "threads": torch.get_num_threads(),
            "jobs": args.jobs, "wall_seconds": round(wall, 1), "loadavg_start": load_start,
            "loadavg": os.getloadavg(),
            "checkpoints": {k: str(v) for k, v in args.checkpoints.items()},
            "note": f"{s['n_test']} held-out fields per task, {s['train_steps']} training steps"
                    + (" (quick mode: small model and short training)" if args.quick else "")}
    write_json(rows, args.out, meta)
    if args.out is not None:
        plot(rows, args.out.with_suffix(".png"))
        print(f"wrote {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
