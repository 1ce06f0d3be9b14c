"""Batch inference: Darcy inverse cases through `funcdiff solve --cases` on 1 and K processes (``--what solve``),
and batch forecasts from an ERA5-like store read lazily, with forecasts written to netCDF or zarr
(``--what forecast-io``).

``--what solve`` (default). A small joint Darcy (a, u) model is trained here with the package's Trainer; the cases
are held-out Darcy pairs (another seed) in a netCDF case file. Each configuration is the real command line: K
processes launched at once with RANK/WORLD_SIZE (as torchrun or srun would), each with one torch thread; the wall
time runs from the launch to the last exit (process start-up included, as a user sees it), then `funcdiff merge`.
``identical``: the merged file equals the 1-process one (xarray ``identical``: every value and attribute). The
machine may be shared: the load average at the start of each row is recorded; a speed-up needs K idle cores.

Rows: {"procs", "cases", "seconds", "cases_per_second", "identical", "loadavg"}

``--what forecast-io``. An ERA5-like store (3 channels on a 120 x 240 grid, 6-hourly, 10-day segments, random
values) at 1x and 4x the number of time steps, written by the package's ERA5 writer (its default time chunks of
about 64 MB) and rechunked to one time step per chunk; a tiny SFNO forecaster (2 training steps: the cost of
reading, not the forecast's skill, is measured) forecasts the same number of cases from each store with
`funcdiff forecast --indices ... --out-dir` in a child process, reading each case lazily (``reader: lazy``) or the
whole store first, as funcdiff did before (``reader: whole``). ``bytes_per_case_kb``: values the case read
(float32); ``chunks_per_case``: store chunks those reads touch (each is read and decompressed whole);
``peak_rss_mb``: the child's peak resident memory (``VmHWM``). Then the same forecast frames are streamed lead by lead to netCDF
and to zarr (best of 3): ``write_s`` and its ratio to netCDF.

Rows: {"section": "read", "reader", "store_scale", "store_mb", "time_chunk", "chunk_mb", "cases",
"bytes_per_case_kb", "chunks_per_case", "peak_rss_mb", "seconds"} and {"section": "write", "format", "mb",
"write_s", "ratio_vs_netcdf"}

    python benchmarks/batch.py --quick --out benchmarks/results/batch_quick.json    # 64 cases at 32², 1 and 2 procs
    python benchmarks/batch.py --what forecast-io --quick --out benchmarks/results/batch_forecast_io_quick.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, parser, print_table, train_in_memory, write_json  # noqa: E402

from funcdiff.config import config_from_dict  # noqa: E402
from funcdiff.io.netcdf import fields_to_dataset, write_netcdf  # noqa: E402
from funcdiff.pde import get_problem  # noqa: E402
from funcdiff.tasks.batch import merge_parts, same_result  # noqa: E402

COLUMNS = ["procs", "cases", "seconds", "cases_per_second", "identical", "loadavg"]


def darcy(num: int, n: int, seed: int) -> torch.Tensor:
    d = get_problem("darcy").generate(num, n, generator=torch.Generator().manual_seed(seed))
    return torch.stack([d["a"], d["u"]], dim=1)


def train_model(n: int, steps: int, out: Path) -> Path:
    config = config_from_dict({
        "name": "darcy-batch-bench",
        "data": {"source": "synthetic", "channels": ["a", "u"], "resolution": n, "num_samples": 400,
                 "test_fraction": 0.05},
        "noise": {"smoothness": 2.0, "length_scale": 0.1},
        "model": {"backbone": "fno", "n_modes": [8, 8], "hidden_channels": 16, "n_layers": 2, "emb_dim": 16,
                  "norm_groups": 4},
        "train": {"steps": steps, "batch_size": 16, "lr": 2e-3, "warmup_steps": 20, "ema_decay": 0.99,
                  "log_every": 0, "eval_every": 0, "checkpoint_every": 0, "out_dir": str(out), "device": "cpu"},
    })
    return train_in_memory(config, darcy(400, n, seed=0))[1]


def run_batch(procs: int, command: list[str], out_dir: Path) -> float:
    """Launch ``procs`` ranks of ``command`` at once; wall seconds until the last exits (all must succeed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(key, None)
    start = time.perf_counter()
    ranks = [subprocess.Popen([sys.executable, "-m", "funcdiff", *command, "--out-dir", str(out_dir)],
                              env={**env, "RANK": str(r), "WORLD_SIZE": str(procs)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(procs)]
    outputs = [p.communicate() for p in ranks]
    seconds = time.perf_counter() - start
    for p, (_, err) in zip(ranks, outputs):
        if p.returncode != 0:
            raise SystemExit(f"a rank failed (status {p.returncode}):\n{err[-3000:]}")
    return seconds


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, nargs="*", default=None, help="process counts (default 1 2; full: 1 2 4)")
    p.add_argument("--what", choices=("solve", "forecast-io"), default="solve",
                   help="solve: solve --cases throughput; forecast-io: lazy case reads, peak RSS, zarr vs netCDF")
    args = p.parse_args()
    if args.what == "forecast-io":
        return run_forecast_io(args)
    n, cases, train_steps = (32, 64, 300) if args.quick else (64, 256, 1000)
    procs = args.procs or ([1, 2] if args.quick else [1, 2, 4])
    settings = {"resolution": n, "num_samples": 4, "steps": 20, "obs_fraction": 0.03, "train_steps": train_steps}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        checkpoint = train_model(n, train_steps, tmp / "run")
        print(f"trained the {n}² Darcy model ({train_steps} steps) in {time.perf_counter() - t0:.0f} s", flush=True)
        write_netcdf(fields_to_dataset(darcy(cases, n, seed=args.seed + 100), ("a", "u"), grid="node"),
                     tmp / "cases.nc")
        command = ["solve", "--checkpoint", str(checkpoint), "--task", "darcy-inverse", "--cases",
                   str(tmp / "cases.nc"), "--obs-fraction", str(settings["obs_fraction"]), "--num-samples",
                   str(settings["num_samples"]), "--steps", str(settings["steps"]), "--seed", str(args.seed),
                   "--no-progress", "--threads", "1"]
        reference = None
        for k in procs:
            load = os.getloadavg()[0]
            seconds = run_batch(k, command, tmp / f"procs{k}")
            merged = merge_parts(tmp / f"procs{k}")
            reference = reference or merged
            rows.append({"procs": k, "cases": cases, "seconds": seconds, "cases_per_second": cases / seconds,
                         "identical": same_result(merged, reference), "loadavg": round(load, 2)})
            print_table(rows[-1:], COLUMNS)
            if k == procs[0]:
                import xarray as xr

                with xr.open_dataset(merged) as ds:
                    settings["mean_rel_l2_a"] = float(ds["rel_l2_a"].mean())
                    settings["mean_misclassification_a"] = float(ds["misclassification_a"].mean())
    print()
    print_table(rows, COLUMNS)
    print(f"posterior-mean relative L2 of a over the {cases} cases: {settings['mean_rel_l2_a']:.3f} "
          f"(misclassification {settings['mean_misclassification_a']:.3f})")
    write_json(rows, args.out, {"benchmark": "batch", "quick": args.quick, "settings": settings,
                                "threads_per_process": 1, "cpu_count": os.cpu_count(),
                                "note": "wall time includes process start-up; the machine is shared with other jobs"})


# ------------------------------------------------------------------------------------------ --what forecast-io
READ_COLUMNS = ["reader", "store_scale", "store_mb", "time_chunk", "chunk_mb", "cases", "bytes_per_case_kb",
                "chunks_per_case", "peak_rss_mb", "seconds"]
WRITE_COLUMNS = ["format", "mb", "write_s", "ratio_vs_netcdf"]
CHANNELS, UNITS = ["z500", "u500", "v500"], ["m2 s-2", "m s-1", "m s-1"]
GRID = (120, 240)  # 1.5 degrees, no poles

# The child process: `funcdiff forecast ...` with every ArrayStore read recorded; "whole" reads the store first, as
# funcdiff <= 0.1 did (the whole-file reader served through a MemoryStore).
CHILD = """
import json, sys
import numpy as np
from funcdiff.data.stores import ArrayStore
from funcdiff.tasks import case_store
from funcdiff.tasks.forecast_io import read_trajectories
mode, log, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
reads, original = [], ArrayStore.read
def recording(self, items, frames=None):
    out = original(self, items, frames)
    reads.append([np.asarray(items).ravel().tolist(), [frames.start, frames.stop, frames.step], out.numel() * 4])
    return out
ArrayStore.read = recording
if mode == "whole":
    def whole(path, channels):
        traj, times = read_trajectories(path, channels)
        return case_store.MemoryStore(path, traj, channels), times
    case_store.open_trajectories = whole
from funcdiff.cli import main
status = main(argv)
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
open(log, "w").write(json.dumps({"reads": reads, "vmhwm_kb": int(hwm[0]) if hwm else None}))
sys.exit(status)
"""


def era5_store(path: Path, steps: int, seed: int, time_chunk: int | None = None) -> Path:
    """An ERA5-like store of ``steps`` 6-hourly times (random values about ERA5's scales), written by
    :func:`funcdiff.data.era5.write_era5_zarr` (its own chunks), or rechunked to ``time_chunk`` steps."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    from funcdiff.data.era5 import write_era5_zarr
    from funcdiff.sphere import grid_latitudes, grid_longitudes

    values = da.random.default_rng(seed).normal(size=(steps, 3, *GRID), chunks=(40, 3, *GRID)).astype("float32")
    values = values * da.from_array([[[600.0]], [[10.0]], [[10.0]]]) + da.from_array([[[5.5e4]], [[0.0]], [[0.0]]])
    state = xr.DataArray(values, dims=("time", "channel", "latitude", "longitude"), name="state",
                         coords={"time": pd.date_range("2000-01-01", periods=steps, freq="6h"), "channel": CHANNELS,
                                 "units": ("channel", UNITS), "latitude": grid_latitudes(*GRID),
                                 "longitude": grid_longitudes(GRID[1])})
    write_era5_zarr(state, path, attrs={"segment": "10D"})
    if time_chunk is None:
        return path
    ds = xr.open_zarr(path)
    out = path.with_name(path.stem + f"_chunk{time_chunk}.zarr")
    for var in ds.variables.values():
        var.encoding = {}
    ds.chunk({"time": time_chunk}).to_zarr(out, mode="w", zarr_format=2, consolidated=True)
    return out


def train_sfno(store: Path, out: Path) -> Path:
    """A tiny SFNO forecaster trained 2 steps on ``store`` (only what reading costs is measured)."""
    from funcdiff.config import config_from_dict
    from funcdiff.training import train

    config = config_from_dict({
        "name": "batch-io-sfno", "data": {"source": "file", "path": str(store), "channels": CHANNELS, "dim": 2,
                                          "test_fraction": 0.5},
        "noise": {"domain": "sphere", "smoothness": 2.0, "length_scale": 0.1},
        "model": {"backbone": "sfno", "n_modes": [8, 8], "hidden_channels": 8, "n_layers": 1, "emb_dim": 8,
                  "norm_groups": 4},
        "train": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "log_every": 0, "eval_every": 0,
                  "checkpoint_every": 0, "out_dir": str(out), "device": "cpu", "latitude_weighted": True},
        "forecast": {"kind": "autoregressive", "history": 1, "horizon": 1, "steps_per_frame": 1}})
    train(config, progress=False)
    return out


def chunk_info(store: Path) -> tuple[int, float]:
    """(time steps per chunk, MB per chunk) of a store's ``state``."""
    import zarr

    array = zarr.open_group(store, mode="r")["state"]
    return array.chunks[0], 4 * float(np.prod(array.chunks)) / 1e6


def forecast_child(mode: str, store: Path, checkpoint: Path, cases: str, out_dir: Path, log: Path) -> tuple[float, float]:
    """Run the batch forecast in a child; (seconds, peak RSS in MB of that child)."""
    argv = ["forecast", "--checkpoint", str(checkpoint), "--initial", str(store), "--indices", cases,
            "--lead-steps", "2", "--members", "2", "--seed", "0", "--no-progress", "--threads", "1",
            "--out-dir", str(out_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(key, None)
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(log), *argv], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = child.communicate()
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"the forecast child failed ({child.returncode}):\n{err.decode()[-3000:]}")
    # the child's own high-water mark (VmHWM: ru_maxrss of a child also counts the parent's pages before exec)
    return seconds, json.loads(log.read_text())["vmhwm_kb"] / 1024


def read_rows(tmp: Path, scales: dict[int, Path], checkpoint: Path, n_cases: int) -> list[dict]:
    import xarray as xr

    rows = []
    for scale, store in scales.items():
        segments = xr.open_zarr(store).sizes["time"] // 40
        stride = max(1, segments // n_cases)
        cases = f"0:{stride * n_cases}:{stride}"
        steps_per_chunk, chunk_mb = chunk_info(store)
        store_mb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6
        for mode in ("lazy", "whole"):
            log = tmp / f"reads_{store.name}_{mode}.json"
            seconds, rss = forecast_child(mode, store, checkpoint, cases, tmp / f"out_{store.name}_{mode}", log)
            reads = json.loads(log.read_text())["reads"]
            touched = {(item * 40 + t) // steps_per_chunk for items, (a, b, c), _ in reads for item in items
                       for t in range(a, b, c or 1)}
            per_case = sum(r[2] for r in reads) / n_cases if mode == "lazy" else store_mb * 1e6 / n_cases
            rows.append({"reader": mode, "store_scale": scale, "store_mb": round(store_mb, 1),
                         "time_chunk": steps_per_chunk, "chunk_mb": round(chunk_mb, 1), "cases": n_cases,
                         "bytes_per_case_kb": round(per_case / 1e3, 1),
                         "chunks_per_case": round(len(touched) / n_cases, 2) if mode == "lazy" else None,
                         "peak_rss_mb": round(rss, 1), "seconds": round(seconds, 2)})
            print_table(rows[-1:], READ_COLUMNS)
    return rows


def write_rows(tmp: Path, inits: int, members: int, leads: int, seed: int) -> list[dict]:
    """Stream the same frames lead by lead to netCDF and to zarr; best of 3 per format."""
    from funcdiff.io.forecast_file import ForecastLayout, create_forecast_file, write_leads
    from funcdiff.io.forecast_zarr import create_forecast_zarr, finish_forecast_zarr, remove_store

    layout = ForecastLayout(channels=tuple(CHANNELS), members=members, lead_steps=leads, dt=6.0, spatial=GRID,
                            grid="latlon", init_index=tuple(range(inits)), init_frame=(0,) * inits,
                            init_time=tuple(240.0 * i for i in range(inits)), time_units="hours since 2000-01-01",
                            channel_units=tuple(UNITS))
    frames = torch.randn(members, 3, 1, *GRID, generator=torch.Generator().manual_seed(seed))
    mb = 4 * inits * leads * frames.numel() / 1e6

    def write(path: Path, zarr: bool) -> None:
        remove_store(path)
        out = (create_forecast_zarr if zarr else create_forecast_file)(path, layout, {"title": "benchmark"})
        for init in range(inits):
            for lead in range(1, leads + 1):
                (out.write_leads(layout.channels, init, [lead], frames) if zarr else
                 write_leads(out, layout.channels, init, [lead], frames))
        out.close()
        if zarr:
            finish_forecast_zarr(path)

    times = {name: best_time(lambda: write(tmp / f"w.{name}", name == "zarr"), repeats=3) for name in ("nc", "zarr")}
    return [{"section": "write", "format": "netCDF" if name == "nc" else "zarr", "mb": round(mb, 1),
             "write_s": round(t, 3), "ratio_vs_netcdf": round(t / times["nc"], 3)} for name, t in times.items()]


def run_forecast_io(args) -> None:
    import dask

    dask.config.set(scheduler="synchronous")  # one core: the stores are written without a thread pool
    base, n_cases = (240, 6) if args.quick else (400, 8)
    inits, members, leads = (4, 4, 8) if args.quick else (8, 8, 20)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        small = era5_store(tmp / "train.zarr", 80, args.seed + 1)
        checkpoint = train_sfno(small, tmp / "run")
        stores = {scale: era5_store(tmp / f"store{scale}x.zarr", base * scale, args.seed) for scale in (1, 4)}
        chunked = {scale: era5_store(tmp / f"c{scale}x.zarr", base * scale, args.seed, time_chunk=1)
                   for scale in (1, 4)}
        print(f"stores and model ready in {time.perf_counter() - t0:.0f} s", flush=True)
        rows = [{"section": "read", **r} for r in read_rows(tmp, stores, checkpoint, n_cases)
                + read_rows(tmp, chunked, checkpoint, n_cases)]
        rows += write_rows(tmp, inits, members, leads, args.seed)
    print()
    print_table([r for r in rows if r["section"] == "read"], READ_COLUMNS)
    print_table([r for r in rows if r["section"] == "write"], WRITE_COLUMNS)
    write_json(rows, args.out, {"benchmark": "batch_forecast_io", "quick": args.quick, "grid": list(GRID),
                                "channels": CHANNELS, "segment_steps": 40, "cpu_count": os.cpu_count(),
                                "write": {"inits": inits, "members": members, "leads": leads},
                                "note": "peak_rss_mb is the forecast child's VmHWM; the machine is shared"})


if __name__ == "__main__":
    main()
