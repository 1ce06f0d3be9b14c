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
Navier-Stokes vorticity trajectory (``navier_stokes_trajectory``, FNO forcing, 32², frames 0.5 apart). Each test
case starts from a held-out trajectory at several start frames. Scores over frames 1..T, in physical units, averaged
over cases and members: MSE (WDNO's metric), relative L2 per frame, shock-location error (periodic distance between
the positions of the steepest descent, Burgers only), energy-spectrum error (rms log10 ratio of the mean spatial
spectra over the shells holding at least 1e-6 of the peak shell's energy in the truth: the solvers' de-aliased
shells hold round-off only). Honest baselines in ``meta.baselines``: the initial state advected by its mean velocity (Burgers: ū is
conserved) and persistence (NS).

    python benchmarks/wavelet.py --quick --out benchmarks/results/wavelet_quick.json

JSON rows ``{"pde", "method", "grid", "nfe", "mse", "rel_l2", "shock_error"}`` plus ``spectrum_error``, ``noise``,
``params``, ``train_seconds``, ``sample_seconds``. Not done (see README): super-resolution rows.
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
from _common import parser, print_table, write_json  # noqa: E402

from funcdiff.config import config_from_dict  # noqa: E402
from funcdiff.metrics import energy_spectrum, spectrum_error  # noqa: E402
from funcdiff.pde import get_problem  # noqa: E402
from funcdiff.tasks.forecast import forecast, load_forecaster  # noqa: E402
from funcdiff.tasks.trajectory import advected_initial_state, shock_error  # noqa: E402
from funcdiff.training.forecast import trajectory_split  # noqa: E402
from funcdiff.training.trainer import Trainer  # noqa: E402
from funcdiff.training.trajectory import count_parameters  # noqa: E402

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
ENERGY_FLOOR = 1e-6  # spectrum error over the shells with at least this fraction of the peak shell's energy
MODEL = {"backbone": "fno", "hidden_channels": 32, "n_layers": 4, "emb_dim": 64, "norm_groups": 8}


def make_data(spec: dict, n_traj: int, seed: int) -> tuple[torch.Tensor, float]:
    """Trajectories (N, 1, T, *S) and the frame spacing of the file (before ``frame_step``)."""
    out = get_problem(spec["problem"]).generate(n_traj, spec["solve_resolution"],
                                                generator=torch.Generator().manual_seed(seed), **spec["params"])
    u = out[spec["channel"]]
    sub = spec["subsample"]
    u = u[(..., *[slice(None, None, sub)] * spec["dim"])]
    return u.unsqueeze(1).float(), float(out["t"][1] - out["t"][0])


def run_config(spec: dict, budget: dict, transform: dict, out_dir: Path, seed: int) -> dict:
    return {"name": f"wavelet-bench-{transform['kind']}",
            "data": {"channels": [spec["channel"]], "dim": spec["dim"], "test_fraction": 0.2, "seed": seed},
            "noise": spec["noise"], "model": {**MODEL, "n_modes": spec["n_modes"]},
            "train": {"steps": budget["steps"], "batch_size": 8, "lr": 1e-3, "warmup_steps": 50, "ema_decay": 0.999,
                      "log_every": 50, "eval_every": 0, "checkpoint_every": 0, "seed": seed, "out_dir": str(out_dir),
                      "device": "cpu"},
            "sample": {"sigma_min": 0.002, "sigma_max": 20.0, "rho": 7.0},
            "forecast": {"kind": "trajectory", "history": 1, "horizon": spec["horizon"], "stride": 4,
                         "frame_step": spec["frame_step"], "steps_per_frame": 1},
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
    """pred (n, M, 1, T, *S), truth (n, 1, T, *S), physical units."""
    truth = truth.unsqueeze(1)
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
    if pde == "burgers_shock":
        times = torch.arange(1, horizon + 1, dtype=torch.float64) * dt
        pred = advected_initial_state(initial[:, :, 0], times)  # (n, 1, T, N)
        name = "advected initial state (mean velocity)"
    else:
        pred = initial.expand_as(truth)
        name = "persistence"
    return {"baseline": name, **scores(pred.unsqueeze(1), truth, spec["dim"], pde == "burgers_shock")}


def run_pde(pde: str, args, work: Path) -> tuple[list[dict], dict]:
    spec = SPECS[pde]
    budget = dict(spec["quick" if args.quick else "full"])
    if args.steps:
        budget["steps"] = args.steps
    traj, file_dt = make_data(spec, budget["n_traj"], args.seed)
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
    for method, transform in methods:
        out_dir = work / f"{pde}-{method}-{transform.get('noise', 'grf')}"
        config = config_from_dict(run_config(spec, budget, transform, out_dir, args.seed))
        start = time.perf_counter()
        trainer = Trainer.from_config(config, fields=traj, progress=False)
        trainer.fit()
        trainer.save_checkpoint()
        train_seconds = time.perf_counter() - start
        fc = load_forecaster(out_dir)
        start = time.perf_counter()
        run = forecast(fc, initial, spec["horizon"], members=budget["members"], seed=args.seed, steps_per_frame=1,
                       batch_size=16)
        pred = run.to_tensor()
        sample_seconds = time.perf_counter() - start
        grid = "x".join(str(n) for n in (spec["horizon"], *traj.shape[3:]))
        noise = "grf (space-time)" if transform["kind"] == "identity" else transform["noise"]
        rows.append({"pde": pde, "method": method, "grid": grid, "nfe": round(run.nfe_per_frame * spec["horizon"]),
                     **scores(pred, truth, spec["dim"], pde == "burgers_shock"), "noise": noise,
                     "params": count_parameters(trainer.model), "train_seconds": round(train_seconds, 1),
                     "sample_seconds": round(sample_seconds, 1), "train_steps": budget["steps"],
                     "test_cases": int(initial.shape[0]), "members": budget["members"]})
        print_table(rows[-1:], list(rows[-1]))
    return rows, baseline(pde, spec, initial, truth, dt)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--pde", action="append", choices=sorted(SPECS), default=None)
    p.add_argument("--method", action="append", choices=["physical", "wavelet"], default=None)
    p.add_argument("--residual", action="store_true", help="diffuse the change from the initial frame")
    p.add_argument("--steps", type=int, default=None, help="override the training steps of the budget")
    p.add_argument("--noise-study", action="store_true", help="also train the wavelet model with mapped GRF noise")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    rows, baselines = [], {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for pde in args.pde or list(SPECS):
            pde_rows, baselines[pde] = run_pde(pde, args, Path(tmp))
            rows += pde_rows
    columns = ["pde", "method", "noise", "grid", "nfe", "params", "mse", "rel_l2", "shock_error", "spectrum_error",
               "train_seconds"]
    print()
    print_table(rows, columns)
    for pde, b in baselines.items():
        print(f"baseline {pde}: {b}")
    write_json(rows, args.out, {"quick": args.quick, "threads": torch.get_num_threads(),
                                "loadavg": os.getloadavg(), "seconds": round(time.perf_counter() - start, 1),
                                "baselines": baselines, "seed": args.seed,
                                "specs": {k: {kk: vv for kk, vv in v.items() if kk not in ("quick", "full")}
                                          for k, v in SPECS.items()}})


if __name__ == "__main__":
    main()
