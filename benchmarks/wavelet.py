"""Wavelet-domain vs physical-space diffusion of whole trajectories (WDNO, Hu, Wang et al., ICLR 2025).

Both methods are ``forecast.kind: trajectory`` models: one diffusion of the ``horizon`` frames after an initial
frame, conditioned on that frame, with the same FNO backbone settings (n_modes, width, depth), the same training
steps, batch, learning rate and seed, and the same sampler (Heun, ``steps_per_frame × horizon`` steps, so the same
NFE); they differ only in ``transform:``

* ``physical``: identity -- the FNO sees the (T, *S) space-time grid, GRF noise on the space-time torus;
* ``wavelet``: db4, multi-level over (time, *space), coefficients as channels on the coarse grid, per-subband
  normalisation fitted on the training split, white noise on the normalised coefficients (``transform.noise``
  default); ``--noise-study`` adds the same model with the ``noise:`` GRF mapped through the transform (``grf``).

Data (our solvers, held-out trajectories by ``training.forecast.trajectory_split``): Burgers with shocks
(``burgers_shock``, nu = 1e-3, solved at 1024 points and subsampled to 128, frames 0.02 apart) and a 2-D
Navier-Stokes vorticity trajectory (``navier_stokes_trajectory``, FNO forcing, 32², frames 0.5 apart), and forced
Burgers with shocks (``burgers_shock_forced``: the same setting plus a random time-independent forcing f(x) of 3
Fourier modes, rms 0.3, one per trajectory; both models are conditioned on f as well as on the initial frame,
``forecast.forcing: [f]``, with the budget of the unforced rows; ``--pde burgers_shock_forced`` runs only these). Each test
case starts from a held-out trajectory at several start frames. Scores over frames 1..T, in physical units, averaged
over cases and members: MSE (WDNO's metric), relative L2 per frame, shock-location error (periodic distance between
the positions of the steepest descent, Burgers only), energy-spectrum error (rms log10 ratio of the mean spatial
spectra over the shells holding at least 1e-6 of the peak shell's energy in the truth: the solvers' de-aliased
shells hold round-off only). Honest baselines in ``meta.baselines``: the initial state advected by its mean velocity (Burgers: ū is
conserved) and persistence (NS).

    python benchmarks/wavelet.py --quick --out benchmarks/results/wavelet_quick.json
    python benchmarks/wavelet.py --quick --pde burgers_shock_forced --out benchmarks/results/wavelet_quick_forced.json

JSON rows ``{"pde", "method", "grid", "nfe", "mse", "rel_l2", "shock_error"}`` plus ``spectrum_error``, ``noise``,
``params``, ``train_seconds``, ``sample_seconds``.

Super-resolution (``--super-resolution``, or ``--super-resolution-only`` to skip the rows above): Burgers with shocks
solved at 1024 points; the input is a coarse trajectory block (8 frames 0.04 apart on 64 points, from t = 0.32 where
the shocks have formed), the truth the same block at 2x (16 frames 0.02 apart, 128 points) and 4x (32 frames,
256 points), taken from the same solve. Rows (same FNO, steps, batch, lr, seed for both models; Heun, 16 steps per
level):

* ``wavelet-super-resolution``: ``forecast.kind: super_resolution`` (coif1, one level over (time, x)) trained on
  the pairs of the *coarse* data itself (64 -> 32 points, 0.04 -> 0.08 apart) and applied zero-shot beyond its
  training grid: once for 2x, twice for 4x;
* ``fine-trained``: the same model trained on pairs at the 2x target grid (128 -> 64 points): at its training grid
  for 2x, then once more (one level beyond its grid) for 4x;
* ``interpolation``: spectral in x (periodic, band-limited) and linear in time, and linear in both (``linear``).

Each diffusion row is scored as single samples (``estimate: sample``, averaged over members) and as the ensemble
mean of the members (``estimate: mean of M``).

Backbones (issue 22): ``--backbone fno --backbone uno --backbone local_fno`` repeats every model row once per
backbone (rows carry ``backbone``), each trained for the same budget of process CPU seconds on one thread
(``--budget-s``, default 60 in quick mode; ``time.process_time``, so the other jobs of a shared machine do not
change it) instead of a number of steps; the super-resolution rows are then the zero-shot
``wavelet-super-resolution`` model (details state) only:

    python benchmarks/wavelet.py --quick --pde burgers_shock --super-resolution --backbone fno --backbone uno \
        --backbone local_fno --out benchmarks/results/backbones_wavelet_quick.json
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, print_table, train_for_budget, train_in_memory, write_json  # noqa: E402

from funcdiff.config import config_from_dict  # noqa: E402
from funcdiff.metrics import energy_spectrum, spectrum_error  # noqa: E402
from funcdiff.pde import get_problem  # noqa: E402
from funcdiff.tasks.forecast import forecast, load_forecaster  # noqa: E402
from funcdiff.tasks.trajectory import advected_initial_state, shock_error  # noqa: E402
from funcdiff.training.forecast import trajectory_split  # noqa: E402
from funcdiff.training.trajectory import count_parameters  # noqa: E402
from funcdiff.tasks.super_resolution import interpolate, load_super_resolver, super_resolve  # noqa: E402

SPECS = {
    "burgers_shock": {
        "problem": "burgers_shock", "solve_resolution": 1024, "subsample": 8, "dim": 1, "channel": "u",
        "params": {"dt": 0.01, "num_frames": 129}, "frame_step": 2, "horizon": 16, "levels": 2,
        "axes": ["time", "x"], "noise": {"smoothness": 2.0, "length_scale": 0.05}, "n_modes": [3, 16],
        "starts": [0, 32, 64],
        "quick": {"n_traj": 40, "steps": 600, "members": 4},
        "full": {"n_traj": 128, "steps": 4000, "members": 8},
    },
    "navier_stokes": {
        "problem": "navier_stokes_trajectory", "solve_resolution": 32, "subsample": 1, "dim": 2, "channel": "u",
        "params": {"dt": 0.5, "num_frames": 25}, "frame_step": 1, "horizon": 8, "levels": 1,
        "axes": ["time", "x", "y"], "noise": {"smoothness": 2.0, "length_scale": 0.1}, "n_modes": [3, 12, 12],
        "starts": [0, 8, 16],
        "quick": {"n_traj": 40, "steps": 300, "members": 4},
        "full": {"n_traj": 128, "steps": 3000, "members": 8},
    },
}
# Forced Burgers (burgers_shock_forced: the same GRF, nu and frames plus a random 3-mode forcing f(x), rms 0.3): the
# same budget and models as burgers_shock; f is a second data channel, conditioning only (forecast.forcing).
SPECS["burgers_shock_forced"] = {**SPECS["burgers_shock"], "problem": "burgers_shock_forced", "channels": ["u", "f"],
                                 "forcing": ["f"]}
ENERGY_FLOOR = 1e-6  # spectrum error over the shells with at least this fraction of the peak shell's energy
MODEL = {"backbone": "fno", "hidden_channels": 32, "n_layers": 4, "emb_dim": 64, "norm_groups": 8}
BACKBONE_MODEL = {"fno": {}, "local_fno": {}, "uno": {"n_layers": 1}}  # uno: 1 block per level (2 levels), 5 in all
BUDGET_S = 60.0  # quick mode with --backbone: CPU seconds of training per model (x10 in full mode)


def with_backbone(raw: dict, backbone: str | None) -> dict:
    """A run config dict with ``model.backbone`` (and its depth) set, unchanged for None."""
    if backbone is None:
        return raw
    return {**raw, "model": {**raw["model"], "backbone": backbone, **BACKBONE_MODEL[backbone]}}


def train_model(config, fields: torch.Tensor, args) -> tuple[object, dict]:
    """Train for the configured steps, or with ``--backbone`` for an equal CPU budget; (trainer, budget info)."""
    if args.backbone:
        budget = args.budget_s or BUDGET_S * (1 if args.quick else 10)
        trainer, info = train_for_budget(config, budget, fields)
        return trainer, {**info, "budget_cpu_s": budget}
    trainer, _, seconds = train_in_memory(config, fields)
    return trainer, {"train_seconds": round(seconds, 1), "train_steps": config.train.steps}


def make_data(spec: dict, n_traj: int, seed: int) -> tuple[torch.Tensor, float]:
    """Trajectories (N, C, T, *S) (C = 1, or u and the forcing f) and the frame spacing of the file (before
    ``frame_step``)."""
    out = get_problem(spec["problem"]).generate(n_traj, spec["solve_resolution"],
                                                generator=torch.Generator().manual_seed(seed), **spec["params"])
    u = torch.stack([out[c] for c in _channels(spec)], dim=1)
    sub = spec["subsample"]
    u = u[(..., *[slice(None, None, sub)] * spec["dim"])]
    return u.float(), float(out["t"][1] - out["t"][0])


def _channels(spec: dict) -> list[str]:
    """The data channels of a spec: the diffused one, then any forcing (conditioning only)."""
    return spec.get("channels", [spec["channel"]])


def _shocks(pde: str) -> bool:
    return pde.startswith("burgers")


def run_config(spec: dict, budget: dict, transform: dict, out_dir: Path, seed: int) -> dict:
    return {"name": f"wavelet-bench-{transform['kind']}",
            "data": {"channels": _channels(spec), "dim": spec["dim"], "test_fraction": 0.2, "seed": seed},
            "noise": spec["noise"], "model": {**MODEL, "n_modes": spec["n_modes"]},
            "train": {"steps": budget["steps"], "batch_size": 8, "lr": 1e-3, "warmup_steps": 50, "ema_decay": 0.999,
                      "log_every": 50, "eval_every": 0, "checkpoint_every": 0, "seed": seed, "out_dir": str(out_dir),
                      "device": "cpu"},
            "sample": {"sigma_min": 0.002, "sigma_max": 20.0, "rho": 7.0},
            "forecast": {"kind": "trajectory", "history": 1, "horizon": spec["horizon"], "stride": 4,
                         "frame_step": spec["frame_step"], "steps_per_frame": 1, "forcing": spec.get("forcing", [])},
            "transform": transform}


def test_cases(spec: dict, traj: torch.Tensor, test_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial frames (n, 1, 1, *S) and truths (n, 1, T, *S) of every held-out trajectory at every start frame."""
    step, horizon = spec["frame_step"], spec["horizon"]
    inits, truths = [], []
    for i in test_idx.tolist():
        for s in spec["starts"]:
            window = traj[i, :, s:s + step * horizon + 1:step]
            inits.append(window[:, :1])
            truths.append(window[:, 1:])
    return torch.stack(inits), torch.stack(truths)


def scores(pred: torch.Tensor, truth: torch.Tensor, dim: int, shocks: bool) -> dict:
    """pred (n, M, C, T, *S), truth (n, C, T, *S), physical units; channel 0 is scored (a forcing channel, which
    the models copy from the initial frame, is not)."""
    pred, truth = pred[:, :, :1], truth[:, None, :1]
    err = pred - truth
    space = tuple(range(pred.ndim - dim, pred.ndim))
    rel = err.pow(2).sum(space).sqrt() / truth.pow(2).sum(space).sqrt()
    _, spec_pred = energy_spectrum(pred, dim)
    _, spec_true = energy_spectrum(truth.expand_as(pred), dim)
    lead = tuple(range(spec_pred.ndim - 1))
    mean_pred, mean_true = spec_pred.mean(lead), spec_true.mean(lead)
    held = mean_true >= ENERGY_FLOOR * mean_true.max()  # the shells the data hold energy in (not de-aliased ones)
    held[0] = True  # spectrum_error skips shell 0 itself
    out = {"mse": float(err.pow(2).mean()), "rel_l2": float(rel.mean()),
           "spectrum_error": float(spectrum_error(mean_pred[held], mean_true[held])),
           "shock_error": float(shock_error(pred, truth)) if shocks else None}
    return out


def baseline(pde: str, spec: dict, initial: torch.Tensor, truth: torch.Tensor, dt: float) -> dict:
    """Advected initial state (Burgers) or persistence (NS), scored like a one-member forecast."""
    horizon = spec["horizon"]
    if _shocks(pde):  # the forcing has zero mean, so the mean velocity is conserved with it too
        times = torch.arange(1, horizon + 1, dtype=torch.float64) * dt
        pred = advected_initial_state(initial[:, :1, 0], times)  # (n, 1, T, N)
        name = "advected initial state (mean velocity)"
    else:
        pred = initial.expand_as(truth)
        name = "persistence"
    return {"baseline": name, **scores(pred.unsqueeze(1), truth[:, :1], spec["dim"], _shocks(pde))}


def run_pde(pde: str, args, work: Path) -> tuple[list[dict], dict]:
    spec = SPECS[pde]
    budget = dict(spec["quick" if args.quick else "full"])
    if args.steps:
        budget["steps"] = args.steps
    traj, file_dt = make_data(spec, budget["n_traj"], args.seed)
    if args.ignore_forcing and spec.get("forcing"):  # ablation: the same data, models that never see the forcing
        spec = {**spec, "channels": _channels(spec)[:1], "forcing": []}
        traj = traj[:, :1]
    dt = file_dt * spec["frame_step"]
    methods = [("physical", {"kind": "identity", "residual": args.residual}),
               ("wavelet", {"kind": "wavelet", "wavelet": "db4", "levels": spec["levels"], "axes": spec["axes"],
                            "noise": "white", "residual": args.residual})]
    if args.noise_study:
        methods.append(("wavelet", {**methods[1][1], "noise": "grf"}))
    if args.method:
        methods = [m for m in methods if m[0] in args.method]
    rows = []
    base_cfg = config_from_dict(run_config(spec, budget, methods[0][1], work, args.seed))
    _, test_idx = trajectory_split(traj.shape[0], base_cfg)
    initial, truth = test_cases(spec, traj, test_idx)
    for backbone, (method, transform) in [(b, m) for b in args.backbone or [None] for m in methods]:
        out_dir = work / f"{pde}-{method}-{transform.get('noise', 'grf')}-{backbone}"
        config = config_from_dict(with_backbone(run_config(spec, budget, transform, out_dir, args.seed), backbone))
        trainer, trained = train_model(config, traj, args)
        fc = load_forecaster(out_dir)
        start = time.perf_counter()
        run = forecast(fc, initial, spec["horizon"], members=budget["members"], seed=args.seed, steps_per_frame=1,
                       batch_size=16)
        pred = run.to_tensor()
        sample_seconds = time.perf_counter() - start
        grid = "x".join(str(n) for n in (spec["horizon"], *traj.shape[3:]))
        noise = "grf (space-time)" if transform["kind"] == "identity" else transform["noise"]
        rows.append({"pde": pde, "method": method, "grid": grid, "nfe": round(run.nfe_per_frame * spec["horizon"]),
                     **scores(pred, truth, spec["dim"], _shocks(pde)), "noise": noise,
                     "params": count_parameters(trainer.model), **trained, "backbone": backbone or "fno",
                     "sample_seconds": round(sample_seconds, 1),
                     "test_cases": int(initial.shape[0]), "members": budget["members"],
                     "conditioning": "+".join(["initial frame", *spec.get("forcing", [])])})
        print_table(rows[-1:], list(rows[-1]))
    return rows, baseline(pde, spec, initial, truth, dt)


SR_SPEC = {"solve_resolution": 1024, "dt": 0.01, "num_frames": 97, "coarse_points": 64, "coarse_frame_step": 4,
           "block": 8, "test_starts": [32, 64], "n_modes": [3, 16], "sr_steps": 16,
           "quick": {"n_traj": 32, "n_test": 8, "steps": 2000, "members": 4},
           "full": {"n_traj": 96, "n_test": 16, "steps": 8000, "members": 8}}


def sr_config(points: int, budget: dict, out_dir: Path, seed: int, residual: bool = False) -> dict:
    """A super-resolution run on trajectories of ``points`` points (pairs points -> points/2 in x and time)."""
    return {"name": f"wavelet-bench-superres-{points}",
            "data": {"channels": ["u"], "dim": 1, "test_fraction": 0.2, "seed": seed},
            "noise": {"smoothness": 0.0}, "model": {**MODEL, "n_modes": SR_SPEC["n_modes"]},
            "train": {"steps": budget["steps"], "batch_size": 8, "lr": 1e-3, "warmup_steps": 50, "ema_decay": 0.999,
                      "log_every": 50, "eval_every": 0, "checkpoint_every": 0, "seed": seed, "out_dir": str(out_dir),
                      "device": "cpu"},
            "sample": {"sigma_min": 0.002, "sigma_max": 20.0, "rho": 7.0},
            "forecast": {"kind": "super_resolution", "history": 1, "horizon": SR_SPEC["block"], "stride": 2},
            "transform": {"kind": "wavelet", "wavelet": "coif1", "levels": 1, "axes": ["time", "x"],
                          "residual": residual}}


def run_super_resolution(args, work: Path) -> tuple[list[dict], dict]:
    """The super-resolution rows (module docstring)."""
    spec = SR_SPEC
    budget = dict(spec["quick" if args.quick else "full"])
    if args.steps:
        budget["steps"] = args.steps
    out = get_problem("burgers_shock").generate(budget["n_traj"] + budget["n_test"], spec["solve_resolution"],
                                                generator=torch.Generator().manual_seed(args.seed + 7),
                                                dt=spec["dt"], num_frames=spec["num_frames"])
    u = out["u"].unsqueeze(1).float()  # (N, 1, T, 1024), frames 0.01 apart
    train, test = u[:budget["n_traj"]], u[budget["n_traj"]:]
    step, sub, block = spec["coarse_frame_step"], spec["solve_resolution"] // spec["coarse_points"], spec["block"]

    def blocks(factor: int) -> torch.Tensor:  # test blocks at `factor` times the coarse grid: (n, 1, block·f, S·f)
        f_step, f_sub = step // factor, sub // factor
        return torch.cat([test[:, :, s:s + step * block:f_step, ::f_sub] for s in spec["test_starts"]])

    coarse, truths = blocks(1), {2: blocks(2), 4: blocks(4)}
    rows = []
    for f in (2, 4):
        for method in ("spectral", "linear"):
            pred = interpolate(coarse, f, time_axis=True, method=method)
            rows.append({"pde": "burgers_shock", "method": "interpolation", "estimate": method,
                         "grid": "x".join(map(str, truths[f].shape[2:])), "factor": f, "nfe": 0,
                         **_sr_scores(pred.unsqueeze(1), truths[f])})
    # training data at 1x / 2x the coarse grid; the state: details (+ approximation correction) or the residual
    models = [(m, level, residual) for residual in (False, True)
              for m, level in (("wavelet-super-resolution", 1), ("fine-trained", 2))
              if (not args.sr_method or m in args.sr_method)
              and (not args.sr_state or ("residual" if residual else "details") in args.sr_state)]
    if args.backbone:
        models = [(b, "wavelet-super-resolution", 1, False) for b in args.backbone]
    else:
        models = [(None, *m) for m in models]
    for backbone, method, level, residual in models:
        data = train[:, :, ::step // level, ::sub // level]
        out_dir = work / f"superres-{method}-{residual}-{backbone}"
        config = config_from_dict(with_backbone(sr_config(data.shape[-1], budget, out_dir, args.seed, residual),
                                                backbone))
        trainer, trained = train_model(config, data, args)
        sr = load_super_resolver(out_dir)
        for f in (2, 4):
            start = time.perf_counter()
            members = torch.stack([super_resolve(sr, coarse, f, steps=spec["sr_steps"], seed=args.seed + m)
                                   for m in range(budget["members"])], dim=1)
            sample_seconds = time.perf_counter() - start
            common = {"pde": "burgers_shock", "method": method, "grid": "x".join(map(str, truths[f].shape[2:])),
                      "state": "residual from interpolation" if residual else "details + approx. correction",
                      "factor": f, "nfe": (2 * spec["sr_steps"] - 1) * (f.bit_length() - 1),
                      "train_grid": "x".join(str(n) for n in data.shape[2:]), "params": count_parameters(trainer.model),
                      **trained, "backbone": backbone or "fno", "sample_seconds": round(sample_seconds, 1),
                      "members": budget["members"]}
            rows.append({**common, "estimate": "sample", **_sr_scores(members, truths[f])})
            rows.append({**common, "estimate": f"mean of {budget['members']}",
                         **_sr_scores(members.mean(1, keepdim=True), truths[f])})
            print_table(rows[-2:], ["method", "backbone", "state", "estimate", "grid", "nfe", "mse", "rel_l2",
                                    "shock_error"])
    meta = {"test_cases": int(coarse.shape[0]), "coarse_grid": "x".join(map(str, coarse.shape[2:])),
            "train_trajectories": budget["n_traj"]}
    return rows, meta


def _sr_scores(pred: torch.Tensor, truth: torch.Tensor) -> dict:
    """pred (n, M, 1, T, S), truth (n, 1, T, S): MSE, relative L2 per frame, shock error, physical units."""
    return {k: v for k, v in scores(pred, truth, 1, True).items() if k != "spectrum_error"}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--pde", action="append", choices=sorted(SPECS), default=None)
    p.add_argument("--method", action="append", choices=["physical", "wavelet"], default=None)
    p.add_argument("--residual", action="store_true", help="diffuse the change from the initial frame")
    p.add_argument("--steps", type=int, default=None, help="override the training steps of the budget")
    p.add_argument("--ignore-forcing", action="store_true",
                   help="ablation: forced PDEs without the forcing as conditioning (models see the initial frame only)")
    p.add_argument("--noise-study", action="store_true", help="also train the wavelet model with mapped GRF noise")
    p.add_argument("--super-resolution", action="store_true", help="also the super-resolution rows (2x, 4x)")
    p.add_argument("--super-resolution-only", action="store_true", help="only the super-resolution rows")
    p.add_argument("--sr-method", action="append", choices=["wavelet-super-resolution", "fine-trained"],
                   default=None, help="super-resolution models to train (default both)")
    p.add_argument("--sr-state", action="append", choices=["details", "residual"], default=None,
                   help="super-resolution states to train (default both)")
    p.add_argument("--backbone", action="append", choices=list(BACKBONE_MODEL), default=None,
                   help="repeat the models once per backbone, each for an equal CPU budget (--budget-s)")
    p.add_argument("--budget-s", type=float, default=None, help="with --backbone: CPU seconds of training per model")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    rows, baselines, sr_meta = [], {}, None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for pde in [] if args.super_resolution_only else args.pde or list(SPECS):
            pde_rows, baselines[pde] = run_pde(pde, args, Path(tmp))
            rows += pde_rows
        if args.super_resolution or args.super_resolution_only:
            sr_rows, sr_meta = run_super_resolution(args, Path(tmp))
            print()
            print_table(sr_rows, ["pde", "method", "backbone", "state", "estimate", "grid", "factor", "nfe", "mse",
                                  "rel_l2", "shock_error", "train_seconds", "train_cpu_s"])
            rows += sr_rows
    columns = ["pde", "method", "backbone", "noise", "grid", "nfe", "params", "mse", "rel_l2", "shock_error",
               "spectrum_error", "train_seconds", "steps", "train_cpu_s"]
    if not args.super_resolution_only:
        print()
        print_table([r for r in rows if "factor" not in r], columns)
    for pde, b in baselines.items():
        print(f"baseline {pde}: {b}")
    compute = ("equal process CPU seconds of training per model (time.process_time), one torch thread"
               if args.backbone else "equal training steps")
    write_json(rows, args.out, {"quick": args.quick, "threads": torch.get_num_threads(), "compute": compute,
                                "loadavg": os.getloadavg(), "seconds": round(time.perf_counter() - start, 1),
                                "baselines": baselines, "seed": args.seed, "super_resolution": sr_meta,
                                "super_resolution_spec": {k: v for k, v in SR_SPEC.items()
                                                          if k not in ("quick", "full")},
                                "specs": {k: {kk: vv for kk, vv in v.items() if kk not in ("quick", "full")}
                                          for k, v in SPECS.items()}})


if __name__ == "__main__":
    main()
