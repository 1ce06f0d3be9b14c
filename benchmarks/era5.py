"""ERA5-like forecasting benchmark on the sphere: an SFNO diffusion forecaster against persistence and climatology,
WeatherBench 2 scores per lead time, and the cost of a forecast step at three resolutions.

Data: the shallow-water equations on the sphere (``funcdiff data shallow-water``; torch-harmonics' solver, a
perturbed Galewsky jet) at 2.8125° with pole rows, 6-hourly, regridded conservatively to the WeatherBench 2 5.625°
grid (32 × 64) by ``funcdiff.data.era5``; channels z500, u500, v500. The first ``train_days`` are the training
years (cut into 10-day trajectories), the next ``test_days`` are held out in time (5-day trajectories); the
climatology is the mean state of the training period.

Model: ``configs/era5/swe-sfno.yaml`` (autoregressive SFNO, sphere noise, latitude-weighted loss), smaller and
shorter with ``--quick``. Each test trajectory's first frame starts an ensemble forecast (8 members, Heun).

Rows ``{"method", "variable", "lead", "lead_hours", "rmse", "acc", "crps"}`` (``method`` one of ``diffusion``,
``persistence``, ``climatology``; RMSE and CRPS area-weighted with the square root after the mean over initial
times, ACC against the training climatology), plus timing rows ``{"method": "timing", "grid", "what", "seconds",
"peak_rss_mib", "baseline_rss_mib"}`` measured in a fresh process each (peak resident memory during the
measured call, after resetting the kernel's mark; baseline = resident memory just before it): one forecast step of the 8-member ensemble
at 32×64 and 121×240 (the 5.625° model applied to band-limited interpolated states), and one denoiser call at
721×1440 (0.25°, batch 1).

    python benchmarks/era5.py --quick --out benchmarks/results/era5_quick.json
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, print_table, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("z500", "u500", "v500")
SIZES = {
    "quick": {"train_days": 100, "test_days": 25, "train_segment": "10D", "test_segment": "5D", "steps": 600, "lead_steps": 12, "members": 8,
              "model": ["model.hidden_channels=24", "model.n_layers=3", "model.n_modes=[16, 16]",
                        "model.emb_dim=32", "train.batch_size=8", "train.warmup_steps=50", "train.eval_every=200",
                        "train.checkpoint_every=300", "train.log_every=50"]},
    "full": {"train_days": 365, "test_days": 60, "train_segment": "10D", "test_segment": "5D", "steps": 3000, "lead_steps": 20, "members": 8, "model": []},
}


def peak_rss_mib() -> float:
    """Peak resident memory of this process since start or since :func:`reset_peak_rss` (VmHWM), in MiB."""
    status = _proc_status()
    if "VmHWM" in status:
        return status["VmHWM"] / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    return _proc_status().get("VmRSS", float("nan")) / 1024.0


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (Linux: ``echo 5 > /proc/self/clear_refs``), so that a measurement sees
    only what follows and not the peak of imports and model loading."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _proc_status() -> dict[str, float]:
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: float(v.split()[0]) for k, _, v in (ln.partition(":") for ln in lines) if k in ("VmHWM", "VmRSS")}


def make_data(work: Path, size: dict, seed: int) -> tuple[Path, Path]:
    """Shallow-water run -> WB2 zarr -> 5.625° training and test stores (10-day and 5-day trajectories)."""
    import dask
    import pandas as pd

    from funcdiff.data.era5 import read_era5, write_era5_zarr
    from funcdiff.tasks.era5_synthetic import write_shallow_water_era5
    from funcdiff.pde.shallow_water import ShallowWaterRun

    train, test = work / "train.zarr", work / "test.zarr"
    if train.exists() and test.exists():
        return train, test
    days = size["train_days"] + size["test_days"]
    start = time.perf_counter()
    written = write_shallow_water_era5(work / "swe", ShallowWaterRun(nlat=65, seed=seed), start="2000-01-01",
                                       days=days, layout="wb2", overwrite=True, progress=True)
    print(f"shallow water: {days} days in {time.perf_counter() - start:.0f} s")
    split = pd.Timestamp("2000-01-01") + pd.Timedelta(days=size["train_days"])
    state = read_era5(written["wb2"], ",".join(CHANNELS))
    with dask.config.set(scheduler="synchronous"):
        write_era5_zarr(state.sel(time=slice(None, split - pd.Timedelta("6h"))), train, res=5.625, overwrite=True,
                        attrs={"segment": size["train_segment"], "grid": "5.625deg"})
        write_era5_zarr(state.sel(time=slice(split, None)), test, res=5.625, overwrite=True,
                        attrs={"segment": size["test_segment"], "grid": "5.625deg"})
    return train, test


def train_model(work: Path, train_store: Path, size: dict, seed: int) -> Path:
    from funcdiff.config import load_config
    from funcdiff.io.checkpoint import latest_checkpoint
    from funcdiff.training import train

    run = work / "run"
    config = load_config(ROOT / "configs/era5/swe-sfno.yaml", [
        f"data.path={train_store}", f"train.out_dir={run}", f"train.steps={size['steps']}", f"train.seed={seed}",
        "train.device=cpu", *size["model"]])
    if latest_checkpoint(run) is None or int(latest_checkpoint(run).stem.split("_")[-1]) < size["steps"]:
        start = time.perf_counter()
        train(config, resume=latest_checkpoint(run) is not None, progress=True)
        print(f"training: {size['steps']} steps in {time.perf_counter() - start:.0f} s")
    return run


def score_rows(run: Path, train_store: Path, test_store: Path, size: dict, seed: int) -> tuple[list[dict], dict]:
    """Forecast every test trajectory from its first frame; WB2 scores of diffusion, persistence, climatology."""
    from funcdiff.data import load_fields
    from funcdiff.metrics import latitude_weights
    from funcdiff.tasks.evaluate import lead_scores
    from funcdiff.tasks.forecast import Forecast, load_forecaster
    from funcdiff.tasks.forecast_io import read_trajectories

    fc = load_forecaster(run)
    traj, _ = read_trajectories(test_store, CHANNELS)  # (N, C, T, H, W)
    lead_steps = min(size["lead_steps"], traj.shape[2] - 1)
    training = load_fields(train_store, fields=list(CHANNELS))
    climatology = torch.stack([training.fields[c].double().mean((0, 1)) for c in CHANNELS])  # (C, H, W)
    lat = training.coords["latitude"]
    weights = latitude_weights(lat)[:, None]
    start = time.perf_counter()
    members = Forecast(fc, traj[:, :, :1], lead_steps, members=size["members"], seed=seed).to_tensor().double()
    seconds = time.perf_counter() - start
    truth = traj[:, :, 1:1 + lead_steps].double()
    reference = climatology[None, :, None]
    shape = (truth.shape[0], 1, *truth.shape[1:])
    methods = {"diffusion": members, "persistence": traj[:, None, :, :1].double().expand(shape),
               "climatology": reference[:, None].expand(shape)}
    rows = []
    for method, forecast in methods.items():
        scores = lead_scores(forecast, truth, weights, climatology=reference)
        for c, name in enumerate(CHANNELS):
            for lead in range(lead_steps):
                rows.append({"method": method, "variable": name, "lead": lead + 1, "lead_hours": 6.0 * (lead + 1),
                             "rmse": float(scores["rmse"][c, lead]), "acc": float(scores["acc"][c, lead]),
                             "crps": float(scores["crps"][c, lead]), "ssr": float(scores["ssr"][c, lead])})
    info = {"initial_states": int(traj.shape[0]), "lead_steps": lead_steps, "members": size["members"],
            "forecast_seconds": seconds, "nfe_per_frame": fc.forecast.steps_per_frame * 2 - 1}
    return rows, info


def timing_child(run: str, grid: str, members: int) -> dict:
    """In a fresh process: the cost of one forecast step (or one denoiser call at 721x1440)."""
    from funcdiff.sphere import GridSHT
    from funcdiff.tasks.forecast import Forecast, load_forecaster

    torch.set_num_threads(int(os.environ.get("FUNCDIFF_BENCH_THREADS", "1")))
    fc = load_forecaster(run)
    nlat, nlon = (int(n) for n in grid.split("x"))
    g = torch.Generator().manual_seed(0)
    coeffs = torch.tril(torch.complex(torch.randn(fc.channels, 16, 16, generator=g),
                                      torch.randn(fc.channels, 16, 16, generator=g)))
    state = GridSHT().isht(coeffs, s=(nlat, nlon)) * 0.5  # a band-limited state, normalised units
    if nlat >= 700:  # one denoiser call, batch 1
        x = state[None]
        baseline = current_rss_mib()
        reset_peak_rss()
        with torch.no_grad():
            start = time.perf_counter()
            fc.denoiser(x, torch.tensor([1.0]), cond=x)
            seconds = time.perf_counter() - start
        what = "denoiser call (batch 1)"
    else:
        initial = fc.decode(state[None, :, None])[0]  # (C, 1, H, W) physical
        next(Forecast(fc, initial, 1, members=members, seed=1).frames(0))  # warm-up: SHT tables, allocator
        baseline = current_rss_mib()
        reset_peak_rss()
        start = time.perf_counter()
        next(Forecast(fc, initial, 1, members=members, seed=0).frames(0))
        seconds = time.perf_counter() - start
        what = f"forecast step ({members} members, {fc.forecast.steps_per_frame} Heun steps)"
    return {"method": "timing", "grid": grid, "what": what, "seconds": seconds, "peak_rss_mib": peak_rss_mib(),
            "baseline_rss_mib": baseline}


def timing_rows(run: Path, members: int) -> list[dict]:
    rows = []
    for grid in ("32x64", "121x240", "721x1440"):
        proc = subprocess.run([sys.executable, __file__, "--timing-child", grid, "--run", str(run),
                               "--members", str(members)], capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append({"method": "timing", "grid": grid, "what": "failed", "error": proc.stderr.strip()[-300:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=None, help="folder for data and the run (default: a temporary one)")
    p.add_argument("--timing-child", default=None, help=argparse_hidden())
    p.add_argument("--run", default=None, help=argparse_hidden())
    p.add_argument("--members", type=int, default=8, help=argparse_hidden())
    args = p.parse_args()
    if args.timing_child:
        print(json.dumps(timing_child(args.run, args.timing_child, args.members)))
        return
    torch.set_num_threads(int(os.environ.get("FUNCDIFF_BENCH_THREADS", "1")))
    size = SIZES["quick" if args.quick else "full"]
    work = args.work or Path(tempfile.mkdtemp(prefix="funcdiff-era5-"))
    total = time.perf_counter()
    train_store, test_store = make_data(work, size, args.seed)
    run = train_model(work, train_store, size, args.seed)
    rows, info = score_rows(run, train_store, test_store, size, args.seed)
    timings = timing_rows(run, size["members"])
    shown = [r for r in rows if r["lead"] in (1, 4, 8, 12, 20)]
    print_table(shown, ["method", "variable", "lead_hours", "rmse", "acc", "crps", "ssr"])
    print_table(timings, ["grid", "what", "seconds", "peak_rss_mib", "baseline_rss_mib"])
    meta = {"quick": args.quick, "threads": torch.get_num_threads(), "loadavg": os.getloadavg(),
            "seconds_total": time.perf_counter() - total, **info, **{k: v for k, v in size.items() if k != "model"},
            "model_overrides": size["model"], "work": str(work)}
    write_json(rows + timings, args.out, meta)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
