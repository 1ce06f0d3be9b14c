"""Station reconstruction on the sphere (``funcdiff solve --task reconstruct``): guided posterior against the
unguided prior and the climatology, by training length and station density.

Data: the shallow-water equations on the sphere (``funcdiff.tasks.era5_synthetic``, 33 × 64 with pole rows, spun up
one day, 6-hourly), regridded to the WeatherBench 2 5.625° grid (32 × 64); channels z500 and u500. The first
``train_days`` are the training frames (every frame a sample); the frames of the following day are held out in
time. The climatology is the mean of the training frames.

Model: the tiny SFNO of ``tests/test_sphere_solve.py`` (8 modes, 8 channels, 2 layers, sphere noise,
latitude-weighted loss), trained for each of ``train_steps``. Each held-out frame is observed at a ``fraction`` of
the grid's point count as stations drawn uniformly in area (off the grid), with noise 20 m² s⁻² (z500) and
0.5 m s⁻¹ (u500); the reconstruction is ``funcdiff.tasks.solve(..., "reconstruct")`` (dps, 4 samples, 12 Heun
steps, σ_max = 20); the unguided prior is the same call with guidance strength 0.

Rows ``{"train_steps", "fraction", "variable", "method", "rmse", "rmse_stations"}``: ``method`` one of
``guided_mean``, ``guided_single``, ``unguided_single``, ``climatology``; RMSE area-weighted (WB2 weights) over the
grid, square root after the mean over held-out frames; ``rmse_stations`` the same at the stations (unweighted,
against the noisy station values).

    python benchmarks/sphere_solve.py --quick --out benchmarks/results/sphere_solve_quick.json
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, print_table, write_json  # noqa: E402

CHANNELS = ("z500", "u500")
NOISE = (20.0, 0.5)
SIZES = {"quick": {"train_days": 4, "train_steps": (200, 600), "fractions": (0.02, 0.05)},
         "full": {"train_days": 20, "train_steps": (600, 2000), "fractions": (0.01, 0.02, 0.05)}}


def make_data(work: Path, train_days: int, seed: int) -> tuple[Path, Path]:
    import dask
    import numpy as np

    from funcdiff.data.era5 import read_era5, write_era5_zarr
    from funcdiff.tasks.era5_synthetic import write_shallow_water_era5
    from funcdiff.pde.shallow_water import ShallowWaterRun

    day = np.datetime64("2000-01-01T00", "h") + np.timedelta64(24 * train_days, "h")  # first held-out frame
    periods = {"train": ("2000-01-01T00", str(day - np.timedelta64(6, "h"))),
               "heldout": (str(day), str(day + np.timedelta64(18, "h")))}
    with dask.config.set(scheduler="synchronous"):
        written = write_shallow_water_era5(work / "swe", ShallowWaterRun(nlat=33, spinup_days=1, seed=seed),
                                           start="2000-01-01", days=train_days + 1, layout="wb2", overwrite=True)
        stores = []
        for name, (a, b) in periods.items():
            state = read_era5(written["wb2"], ",".join(CHANNELS), start=a, end=b)
            write_era5_zarr(state, work / f"{name}.zarr", res=5.625, attrs={"segment": "1D"}, overwrite=True)
            stores.append(work / f"{name}.zarr")
    return stores[0], stores[1]


def train_model(work: Path, store: Path, steps: int, seed: int) -> Path:
    from funcdiff.config import config_from_dict
    from funcdiff.training import train

    out = work / f"run_{steps}"
    config = config_from_dict({
        "data": {"source": "file", "path": str(store), "channels": list(CHANNELS)},
        "noise": {"domain": "sphere", "smoothness": 2.0, "length_scale": 0.1},
        "model": {"backbone": "sfno", "n_modes": [8, 8], "hidden_channels": 8, "n_layers": 2, "emb_dim": 16,
                  "norm_groups": 4},
        "train": {"steps": steps, "batch_size": 4, "warmup_steps": 4, "lr": 3e-3, "out_dir": str(out),
                  "checkpoint_every": steps, "eval_every": steps, "log_every": 0, "latitude_weighted": True,
                  "device": "cpu", "seed": seed}})
    train(config, progress=False)
    return out


def score(run: Path, train_store: Path, heldout: Path, fraction: float, seed: int) -> list[dict]:
    from funcdiff.guidance import SparseObservation, random_sensors
    from funcdiff.metrics import latitude_weights, rmse
    from funcdiff.sphere import grid_latitudes
    from funcdiff.tasks import solve
    from funcdiff.tasks.solve import load_model, read_truth_file

    model = load_model(run)
    frames = read_truth_file(heldout, CHANNELS).double()
    climatology = read_truth_file(train_store, CHANNELS).double().mean(0, keepdim=True)
    weights = latitude_weights(grid_latitudes(*frames.shape[-2:]))[:, None]
    sq = {}  # (method, channel) -> [grid mse, station mse] summed over frames
    for i in range(frames.shape[0]):
        truth = frames[i:i + 1]
        g = torch.Generator().manual_seed(seed * 1000 + i)
        stations = random_sensors(fraction, truth.shape[-2:], grid="latlon", on_grid=False, generator=g)
        obs = SparseObservation(stations, channels=(0, 1), noise_std=NOISE, grid="latlon", channel_names=CHANNELS)
        y = obs.observe(truth) + torch.tensor(NOISE, dtype=torch.float64)[:, None] * torch.randn(
            1, 2, len(stations), generator=g, dtype=torch.float64)
        obs = obs.with_values(y)
        kw = dict(num_samples=4, steps=12, sigma_max=20.0, seed=seed + i)
        guided = solve(model, "reconstruct", obs, **kw).samples.double()
        free = solve(model, "reconstruct", obs, guidance_strength=0.0, **kw).samples.double()
        estimates = {"guided_mean": guided.mean(0, keepdim=True), "guided_single": guided,
                     "unguided_single": free, "climatology": climatology}
        for method, est in estimates.items():
            for c, name in enumerate(CHANNELS):
                grid = float(rmse(est[:, c], truth[:, c].expand_as(est[:, c]), weights).pow(2).mean())
                stat = float((y[:, c] - obs.observe(est)[:, c]).pow(2).mean())
                acc = sq.setdefault((method, name), [0.0, 0.0])
                acc[0] += grid / frames.shape[0]
                acc[1] += stat / frames.shape[0]
    return [{"fraction": fraction, "variable": name, "method": method, "rmse": v[0] ** 0.5,
             "rmse_stations": v[1] ** 0.5, "frames": frames.shape[0], "stations": round(fraction * 32 * 64)}
            for (method, name), v in sq.items()]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=None, help="folder for data and runs (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("FUNCDIFF_BENCH_THREADS", "1")))
    size = SIZES["quick" if args.quick else "full"]
    work = args.work or Path(tempfile.mkdtemp(prefix="funcdiff-sphere-solve-"))
    total = time.perf_counter()
    train_store, heldout = make_data(work, size["train_days"], args.seed)
    rows = []
    for steps in size["train_steps"]:
        start = time.perf_counter()
        run = train_model(work, train_store, steps, args.seed)
        seconds = time.perf_counter() - start
        for fraction in size["fractions"]:
            rows += [{"train_steps": steps, "train_seconds": seconds, **r}
                     for r in score(run, train_store, heldout, fraction, args.seed)]
    rows.sort(key=lambda r: (r["variable"], r["train_steps"], r["fraction"]))
    print_table(rows, ["variable", "train_steps", "fraction", "stations", "method", "rmse", "rmse_stations"])
    meta = {"quick": args.quick, "threads": torch.get_num_threads(), "loadavg": os.getloadavg(),
            "seconds_total": time.perf_counter() - total, "grid": [32, 64], "channels": list(CHANNELS),
            "station_noise": dict(zip(CHANNELS, NOISE)), "samples": 4, "steps": 12, "solver": "heun",
            "sigma_max": 20.0, **{k: list(v) if isinstance(v, tuple) else v for k, v in size.items()},
            "work": str(work)}
    write_json(rows, args.out, meta)


if __name__ == "__main__":
    main()
