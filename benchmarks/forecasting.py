"""Probabilistic forecasting benchmark: autoregressive and rolling diffusion against a deterministic FNO,
persistence and climatology, with and without sparse sensors, on Kolmogorov flow (64²) and Burgers (1024 points).

Everything is trained and scored in one run, side by side, on held-out trajectories of our own solvers:

* ``autoregressive`` / ``rolling``: the diffusion forecasters of ``configs/forecast/<pde>-<kind>.yaml``;
* ``fno-deterministic``: the same backbone trained with the MSE loss (``forecast.kind: deterministic``), one member
  (its CRPS is its mean absolute error);
* ``persistence``: the initial frame; ``climatology``: the mean field of the training trajectories;
* ``sensors = 0.01``: 1 % of the grid observed every 4 frames (noise std 1 % of the data's), assimilated during the
  rollout by guidance (diffusion forecasters only: a deterministic model has no way to use them).

Scores per lead (``funcdiff.tasks.evaluate.lead_scores``): ensemble-mean RMSE, fair CRPS, spread-skill ratio with
the finite-ensemble correction, spectrum error. A long rollout (500 frames, no truth needed) checks stability:
finite values and the energy spectrum within a factor 2 of the data's (``max_spectrum_ratio``).

    python benchmarks/forecasting.py --quick --out benchmarks/results/forecasting_quick.json

Writes JSON rows ``{"pde", "method", "lead", "nfe_per_frame", "members", "sensors", "rmse", "crps", "ssr",
"spectrum_error"}`` and stability rows ``{"pde", "method", "frames", "finite", "max_spectrum_ratio"}``.

Backbones (issue 22): ``--backbones fno uno local_fno`` trains the rolling forecaster once per backbone at **equal
training compute**, a budget of process CPU seconds on one thread (``--budget-s``; ``time.process_time``, so other
jobs on a shared machine do not change it): the steps of each backbone are its budget divided by its measured
seconds per step. It scores CRPS, SSR and RMSE per lead (no sensors) and the per-shell spectrum ratio of the
forecast to the data over leads 41-60 (the training trajectories' frames at the same times), and writes rows
``{"pde", "backbone", "lead", ...}``, ``{"pde", "backbone", "shell", "ratio", "energy_rel"}`` and one summary row
per backbone (``steps``, ``train_cpu_s``, ``worst_shell_ratio`` over the shells holding >= 1e-6 of the peak energy,
``ssr`` range at leads >= 5):

    python benchmarks/forecasting.py --quick --backbones fno uno local_fno --out benchmarks/results/backbones_forecasting_quick.json
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads sleep instead of spinning
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, parser, print_table, train_for_budget, write_json  # noqa: E402

from funcdiff.config import load_config  # noqa: E402
from funcdiff.data import generate_to_hdf5, load_fields  # noqa: E402
from funcdiff.guidance.timed import make_timed_observation  # noqa: E402
from funcdiff.io.checkpoint import latest_checkpoint  # noqa: E402
from funcdiff.metrics import energy_spectrum, max_spectrum_ratio  # noqa: E402
from funcdiff.pde import get_problem  # noqa: E402
from funcdiff.tasks.evaluate import lead_scores  # noqa: E402
from funcdiff.tasks.forecast import Forecast, load_forecaster  # noqa: E402
from funcdiff.tasks.forecast_io import initial_from_file  # noqa: E402
from funcdiff.training import train  # noqa: E402
from funcdiff.training.forecast import trajectory_split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("autoregressive", "rolling", "deterministic")
METHOD = {"autoregressive": "autoregressive", "rolling": "rolling", "deterministic": "fno-deterministic"}
SPECS = {
    "kolmogorov": {"problem": "kolmogorov", "resolution": 64, "channel": "w",
                   "quick": {"n_traj": 24, "params": {"num_frames": 160}, "steps": 600,
                             "model": ["model.hidden_channels=16", "model.n_modes=[12,12]", "model.emb_dim=32"]},
                   "full": {"n_traj": 64, "params": {"num_frames": 400}, "steps": 4000, "model": []}},
    "burgers": {"problem": "burgers", "resolution": 1024, "channel": "u",
                "quick": {"n_traj": 24, "params": {"dt": 0.01, "num_frames": 160, "spin_up": 0.1}, "steps": 1500,
                          "model": ["model.hidden_channels=16", "model.n_modes=[32]", "model.emb_dim=32"]},
                "full": {"n_traj": 64, "params": {"dt": 0.01, "num_frames": 400, "spin_up": 0.1}, "steps": 4000,
                         "model": []}},
}
REPORT_LEADS = (1, 5, 10, 25, 50, 100)
BACKBONE_MODEL = {"fno": [], "local_fno": [], "uno": ["model.n_layers=1"]}  # uno: 1 block per level (2 levels), 5 in all
BUDGET_S = {"kolmogorov": 150.0, "burgers": 90.0}  # quick mode, CPU seconds of training per backbone
SPECTRUM_LEADS = (41, 60)


def make_data(pde: str, spec: dict, size: dict, workdir: Path, seed: int) -> Path:
    path = workdir / f"{pde}.h5"
    generate_to_hdf5(get_problem(spec["problem"]), path, num_samples=size["n_traj"], resolution=spec["resolution"],
                     seed=seed, batch_size=size["n_traj"], params=size["params"], progress=False)
    return path


def train_method(pde: str, kind: str, data: Path, size: dict, workdir: Path, seed: int):
    out = workdir / f"{pde}-{kind}"
    overrides = [f"data.path={data}", f"train.out_dir={out}", f"train.steps={size['steps']}", f"train.seed={seed}",
                 "train.batch_size=8", "train.warmup_steps=50", "train.lr=2e-3", "train.eval_every=0",
                 f"train.checkpoint_every={size['steps']}", "train.device=cpu", *size["model"]]
    config = load_config(ROOT / "configs" / "forecast" / f"{pde}-{kind}.yaml", overrides)
    start = time.perf_counter()
    if latest_checkpoint(out) is None or "step_%08d" % size["steps"] not in str(latest_checkpoint(out)):
        train(config, resume=True, progress=False)
    return config, time.perf_counter() - start


def shell_rows(pde: str, backbone: str, forecast: torch.Tensor, reference: torch.Tensor, dims: int) -> list[dict]:
    """Per-shell ratio of the forecast's mean spectrum (leads 41-60, all members) to the data's (the same frames of
    the training trajectories). Shapes: forecast (N, M, C, L, *S), reference (N', L', *S)."""
    lo, hi = SPECTRUM_LEADS
    spec = energy_spectrum(forecast[:, :, :, lo - 1:hi], dims)[1]
    spec = spec.reshape(-1, spec.shape[-1]).mean(0)
    data = energy_spectrum(reference, dims)[1]
    data = data.reshape(-1, data.shape[-1]).mean(0)
    peak = float(data[1:].max())
    return [{"pde": pde, "backbone": backbone, "shell": k, "ratio": float(spec[k] / data[k]),
             "energy_rel": float(data[k]) / peak} for k in range(1, data.shape[0])]


def run_backbones(pde: str, args, workdir: Path) -> tuple[list[dict], dict]:
    """The rolling forecaster with each of ``args.backbones``, trained for the same CPU budget (module docstring)."""
    spec, size = SPECS[pde], SPECS[pde]["quick" if args.quick else "full"]
    data = make_data(pde, spec, size, workdir, args.seed)
    budget = args.budget_s or BUDGET_S[pde] * (1 if args.quick else 10)
    lead_steps = SPECTRUM_LEADS[1]
    rows, timing = [], {"budget_cpu_s": budget}
    for backbone in args.backbones:
        out = workdir / f"{pde}-rolling-{backbone}"
        overrides = [f"data.path={data}", f"train.out_dir={out}", f"train.seed={args.seed}", "train.batch_size=8",
                     "train.warmup_steps=50", "train.lr=2e-3", "train.eval_every=0", "train.log_every=0",
                     "train.device=cpu", *size["model"], f"model.backbone={backbone}", *BACKBONE_MODEL[backbone]]
        config = load_config(ROOT / "configs" / "forecast" / f"{pde}-rolling.yaml", overrides)
        trained = train_for_budget(config, budget)[1]
        history = config.forecast.history
        test_idx = trajectory_split(size["n_traj"], config)[1].tolist()
        inits = [initial_from_file(data, (spec["channel"],), i, history - 1, history) for i in test_idx[:args.inits]]
        initial, truth = torch.stack([s[0] for s in inits]), torch.stack([s[1][:, :lead_steps] for s in inits])
        fc = load_forecaster(out)
        start = time.process_time()
        ensemble = Forecast(fc, initial, lead_steps, members=args.members, seed=args.seed)
        run = ensemble.to_tensor()
        forecast_cpu = time.process_time() - start
        scores = lead_scores(run, truth)
        lead_rows = scored_rows(pde, "rolling", scores, ensemble.nfe_per_frame, args.members, 0.0)
        rows += [{**r, "backbone": backbone} for r in lead_rows]
        traj = load_fields(data, fields=[spec["channel"]]).fields[spec["channel"]]
        train_traj = traj[[i for i in range(traj.shape[0]) if i not in set(test_idx)]]
        lo, hi = SPECTRUM_LEADS
        reference = train_traj[:, history - 1 + lo:history + hi]  # (N', L', *S): the loader has no channel axis
        shells = shell_rows(pde, backbone, run, reference, traj.ndim - 2)
        rows += shells
        kept = [r["ratio"] for r in shells if r["energy_rel"] >= 1e-6]
        worst = max(kept, key=lambda r: abs(torch.tensor(r).log().item()))
        ssr = [r["ssr"] for r in lead_rows if r["lead"] >= 5]
        rows.append({"pde": pde, "backbone": backbone, "summary": True, **trained, "forecast_cpu_s": forecast_cpu,
                     "worst_shell_ratio": worst, "shells_within_2x": all(0.5 <= r <= 2.0 for r in kept),
                     "ssr_min": min(ssr), "ssr_max": max(ssr), "ssr_in_0.8_1.2": all(0.8 <= v <= 1.2 for v in ssr),
                     "crps_lead_10": lead_rows[9]["crps"], "crps_lead_50": lead_rows[49]["crps"]})
    return rows, timing


def scored_rows(pde: str, method: str, scores: dict, nfe: float, members: int, sensors: float) -> list[dict]:
    rows = []
    for lead in range(1, scores["crps"].shape[1] + 1):
        rows.append({"pde": pde, "method": method, "lead": lead, "nfe_per_frame": nfe, "members": members,
                     "sensors": sensors, "rmse": float(scores["rmse"][0, lead - 1]),
                     "crps": float(scores["crps"][0, lead - 1]), "ssr": float(scores["ssr"][0, lead - 1]),
                     "spectrum_error": float(scores["spectrum_error"][0, lead - 1])})
    return rows


def reference_rows(pde: str, initial: torch.Tensor, truth: torch.Tensor, climatology: torch.Tensor) -> list[dict]:
    """Persistence (the initial frame) and climatology (the training mean field) as one-member forecasts."""
    lead_steps = truth.shape[2]
    rows = []
    for method, field in (("persistence", initial[:, :, -1:]), ("climatology", climatology[None, :, None])):
        members = field.expand(truth.shape[0], -1, lead_steps, *truth.shape[3:]).unsqueeze(1)
        rows += scored_rows(pde, method, lead_scores(members, truth), 0.0, 1, 0.0)
    return rows


def sensors_of(initial: torch.Tensor, truth: torch.Tensor, fraction: float, dt: float, std: float, seed: int):
    """``fraction`` of the grid observed every 4 leads in ``truth`` (C, L, *S), noise std 1 % of the data's."""
    frames = torch.cat([initial[:, -1:], truth], dim=1)
    return make_timed_observation(frames, range(4, truth.shape[1] + 1, 4), dt, fraction=fraction,
                                  noise_std=0.01 * std, seed=seed)


def stability(fc, initial: torch.Tensor, frames: int, data_spectrum: torch.Tensor, seed: int) -> dict:
    """A long rollout of two members: finite? spectrum of the last 20 frames vs the data's: the worst ratio over the
    shells k ≥ 1 that hold energy in the data, E_data(k) ≥ 1e-8 max E_data (the solvers dealias with the 2/3 rule and
    viscous Burgers decays to ~1e-30 at high k, where any rounding-level noise would dominate a ratio)."""
    members = 1 if fc.forecast.kind == "deterministic" else 2
    run = Forecast(fc, initial[:1], frames, members=members, seed=seed)
    last, finite = [], True
    for lead, frame in run.frames(0):
        finite = finite and bool(torch.isfinite(frame).all())
        if lead > frames - 20:
            last.append(frame)
    _, spec = energy_spectrum(torch.stack(last), initial.ndim - 3)
    spec = spec.reshape(-1, spec.shape[-1]).mean(0)
    kept = data_spectrum >= 1e-8 * data_spectrum[1:].max()
    kept[0] = True  # max_spectrum_ratio skips the mean (k = 0)
    ratio = float(max_spectrum_ratio(spec[kept], data_spectrum[kept])) if finite else float("inf")
    return {"frames": frames, "finite": finite, "max_spectrum_ratio": ratio}


def run_pde(pde: str, args, workdir: Path) -> tuple[list[dict], list[dict], dict]:
    spec, size = SPECS[pde], SPECS[pde]["quick" if args.quick else "full"]
    t0 = time.perf_counter()
    data = make_data(pde, spec, size, workdir, args.seed)
    timing = {"data_s": time.perf_counter() - t0}
    configs = {}
    for kind in KINDS:
        configs[kind], timing[f"train_{kind}_s"] = train_method(pde, kind, data, size, workdir, args.seed)
    history = configs["rolling"].forecast.history
    test_idx = trajectory_split(size["n_traj"], configs["rolling"])[1].tolist()  # the trainer's held-out set
    inits = [initial_from_file(data, (spec["channel"],), i, history - 1, history) for i in test_idx[:args.inits]]
    lead_steps = min(args.lead_steps, min(s[1].shape[1] for s in inits))
    initial = torch.stack([s[0] for s in inits])
    truth = torch.stack([s[1][:, :lead_steps] for s in inits])
    traj = load_fields(data, fields=[spec["channel"]]).fields[spec["channel"]]
    train_traj = traj[[i for i in range(traj.shape[0]) if i not in set(test_idx)]]
    climatology = train_traj.mean(dim=(0, 1))[None]
    data_spectrum = energy_spectrum(train_traj[:, -20:], traj.ndim - 2)[1]
    data_spectrum = data_spectrum.reshape(-1, data_spectrum.shape[-1]).mean(0)
    rows = reference_rows(pde, initial, truth, climatology)
    stable = []
    for kind in KINDS:
        fc = load_forecaster(workdir / f"{pde}-{kind}")
        members = 1 if kind == "deterministic" else args.members
        for fraction in (0.0, 0.01) if kind != "deterministic" else (0.0,):
            t = time.perf_counter()
            runs = []
            for i in range(initial.shape[0]) if fraction else [None]:  # sensors: each initial state its own
                part = slice(None) if i is None else slice(i, i + 1)
                obs = None if i is None else sensors_of(initial[i], truth[i], fraction, fc.dt, float(traj.std()),
                                                        args.seed + i)
                run = Forecast(fc, initial[part], lead_steps, members=members, seed=args.seed, observations=obs)
                runs.append(run.to_tensor())
            scores = lead_scores(torch.cat(runs), truth)
            rows += scored_rows(pde, METHOD[kind], scores, run.nfe_per_frame, members, fraction)
            timing[f"forecast_{kind}_{fraction}_s"] = time.perf_counter() - t
        t = time.perf_counter()
        stable.append({"pde": pde, "method": METHOD[kind], **stability(fc, initial, args.long_frames, data_spectrum,
                                                                        args.seed)})
        timing[f"stability_{kind}_s"] = time.perf_counter() - t
    return rows, stable, timing


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--pdes", nargs="+", default=list(SPECS), choices=list(SPECS))
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--inits", type=int, default=2, help="held-out initial states scored")
    p.add_argument("--lead-steps", type=int, default=100)
    p.add_argument("--long-frames", type=int, default=500, help="frames of the stability rollout")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a shared 2-core machine)")
    p.add_argument("--workdir", type=Path, default=Path("runs/benchmark-forecasting"))
    p.add_argument("--backbones", nargs="+", choices=list(BACKBONE_MODEL), default=None,
                   help="compare these backbones (rolling forecaster, equal CPU budget) instead of the kinds")
    p.add_argument("--budget-s", type=float, default=None, help="CPU seconds of training per backbone")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.backbones:
        main_backbones(args)
        return
    rows, stable, timings = [], [], {}
    start = time.perf_counter()
    for pde in args.pdes:
        r, s, t = run_pde(pde, args, args.workdir)
        rows, stable, timings[pde] = rows + r, stable + s, t
    shown = [r for r in rows if r["lead"] in REPORT_LEADS]
    print(f"machine: {machine()}; threads: {args.threads}; wall time {time.perf_counter() - start:.0f} s")
    print_table(shown, ["pde", "method", "sensors", "lead", "nfe_per_frame", "members", "rmse", "crps", "ssr",
                        "spectrum_error"])
    print()
    print_table(stable, ["pde", "method", "frames", "finite", "max_spectrum_ratio"])
    write_json(rows + stable, args.out, {"threads": args.threads, "timings_s": timings,
                                         "settings": {k: str(v) for k, v in vars(args).items()}})


def main_backbones(args) -> None:
    rows, timings = [], {}
    start = time.perf_counter()
    for pde in args.pdes:
        r, timings[pde] = run_backbones(pde, args, args.workdir)
        rows += r
    print(f"machine: {machine()}; threads: {args.threads}; equal training compute: "
          f"{ {p: t['budget_cpu_s'] for p, t in timings.items()} } CPU s per backbone (time.process_time, one thread); "
          f"wall time {time.perf_counter() - start:.0f} s")
    print_table([r for r in rows if r.get("lead") in REPORT_LEADS],
                ["pde", "backbone", "lead", "rmse", "crps", "ssr", "spectrum_error"])
    print()
    print_table([r for r in rows if r.get("summary")],
                ["pde", "backbone", "steps", "train_cpu_s", "worst_shell_ratio", "shells_within_2x", "ssr_min",
                 "ssr_max", "crps_lead_10", "crps_lead_50"])
    write_json(rows, args.out, {"threads": args.threads, "timings_s": timings, "compute": "equal process CPU "
                                "seconds of training per backbone (time.process_time), one torch thread",
                                "settings": {k: str(v) for k, v in vars(args).items()}})


if __name__ == "__main__":
    main()
