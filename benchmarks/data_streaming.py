"""Streamed training data (issue 21): training throughput and peak memory when the data are read from a store on disk
by DataLoader workers (``data.stream: true``) against the same data held in memory (``data.stream: false``).

Stores: ERA5-like lat-lon fields (smooth random fields, a few Fourier modes per channel and frame, 6-hourly), written
by this script in our zarr layout (``funcdiff data era5``'s ``state`` array, chunked one time step per chunk), as CDS
netCDF (one variable per channel, contiguous) and as our HDF5 (one dataset per channel, one sample per chunk).

Rows ``{"source", "workers", "grid", "dataset_gb", "steps", "samples_per_s", "step_time_ratio_vs_memory",
"peak_rss_gb", "worker_rss_gb", "what"}``; each run is a fresh process (``--child``) started by a wrapper process
(``--measure``) that reports ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` after it (``peak_rss_gb``: the
training process; ``worker_rss_gb``: the largest DataLoader worker, reported by the run itself).
``step_time_ratio_vs_memory`` is the in-memory run's samples/s over this run's at the same grid and model (1 =
as fast; below 1 = faster than memory); ``train_cpu_s_per_step`` the CPU seconds of the training process per step
(``time.process_time``; what reading costs the training process itself when the workers have cores of their own,
and a measure that a machine shared with other jobs does not distort as much as wall time). The runs of one grid
are measured side by side in one invocation, with one torch thread in the training process (``OMP_NUM_THREADS=1``).

- ``what: throughput``: a field model (FNO) at 64×64 and 121×240 from zarr (0 and 2 workers), netCDF and HDF5
  (2 workers) and in memory;
- ``what: rss``: the same training on a zarr store and on one 4× larger (sizes in ``dataset_gb``), streamed and in
  memory;
- ``what: era5_025``: the autoregressive SFNO of ``configs/era5/swe-sfno.yaml`` on a 0.25° store (721×1440, 4
  variables), batch 1, a few steps (``steps``), streamed with 2 workers.

    python benchmarks/data_streaming.py --quick --out benchmarks/results/data_streaming_quick.json
    python benchmarks/data_streaming.py --out benchmarks/results/data_streaming.json
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("t2m", "u10", "v10", "msl")
FNO = {"backbone": "fno", "n_modes": [16, 16], "hidden_channels": 32, "n_layers": 4, "emb_dim": 32, "norm_groups": 8}
SFNO = {"backbone": "sfno", "n_modes": [24, 24], "hidden_channels": 32, "n_layers": 4, "emb_dim": 64, "norm_groups": 8}
SIZES = {  # frames of the throughput stores, of the 1x RSS store (4x: four times as many), steps, 0.25° frames/steps
    "quick": {"frames": 64, "rss_frames": 100, "warm": 1, "steps": 5, "rss_steps": 5, "era5_frames": 16,
              "era5_steps": 1, "grids": [(64, 64), (121, 240)], "runs": ["memory", "zarr", "netcdf", "hdf5"]},
    "full": {"frames": 600, "rss_frames": 700, "warm": 3, "steps": 20, "rss_steps": 20, "era5_frames": 24,
             "era5_steps": 2, "grids": [(64, 64), (121, 240)],
             "runs": ["memory", "zarr0", "zarr", "zarr_64mb_chunks", "netcdf", "hdf5"]},
}


# ----------------------------------------------------------------------------------------------- data
def frames(start: int, count: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``count`` frames ``(count, C, H, W)`` float32 from frame ``start`` on: per channel and frame 6 random products
    of cosines in latitude and longitude (deterministic in (seed, frame))."""
    h, w = shape
    lat, lon = np.linspace(-np.pi / 2, np.pi / 2, h), np.linspace(0, 2 * np.pi, w, endpoint=False)
    out = np.empty((count, len(CHANNELS), h, w), dtype=np.float32)
    for i in range(count):
        rng = np.random.default_rng([seed, start + i])
        a, k, m, p, q = (rng.normal(size=(len(CHANNELS), 6)), rng.integers(1, 6, (len(CHANNELS), 6)),
                         rng.integers(0, 8, (len(CHANNELS), 6)), rng.uniform(0, 6.3, (len(CHANNELS), 6)),
                         rng.uniform(0, 6.3, (len(CHANNELS), 6)))
        for c in range(len(CHANNELS)):
            rows = a[c, :, None] * np.cos(k[c, :, None] * lat[None] + p[c, :, None])  # (6, H)
            cols = np.cos(m[c, :, None] * lon[None] + q[c, :, None])  # (6, W)
            out[i, c] = (rows.T @ cols) * (c + 1) + 10.0 * c
    return out


def _coords(n: int, shape: tuple[int, int]):
    import pandas as pd

    times = pd.date_range("2000-01-01", periods=n, freq="6h")
    return times, np.linspace(-90, 90, shape[0]), np.arange(shape[1]) * (360.0 / shape[1])


def write_zarr(path: Path, n: int, shape: tuple[int, int], segment: str | None = None, block: int = 32,
               time_chunk: int = 1) -> None:
    """Our ERA5 store layout (``state`` (time, channel, latitude, longitude)), ``time_chunk`` time steps per chunk
    (``funcdiff data era5`` writes chunks of about 64 MB)."""
    import xarray as xr

    times, lat, lon = _coords(n, shape)
    template = xr.DataArray(np.zeros((n, len(CHANNELS), *shape), np.float32), dims=("time", "channel", "latitude",
                                                                                    "longitude"),
                            coords={"time": times, "channel": list(CHANNELS), "units": ("channel", ["1"] * 4),
                                    "latitude": lat, "longitude": lon}, name="state").chunk({"time": time_chunk})
    attrs = {"state_stats": {}, **({"segment": segment} if segment else {})}
    template.to_dataset().assign_attrs(attrs).to_zarr(path, compute=False, zarr_format=2, consolidated=True, mode="w")
    block = max(block // time_chunk, 1) * time_chunk
    for start in range(0, n, block):
        count = min(block, n - start)
        part = xr.DataArray(frames(start, count, shape), dims=("time", "channel", "latitude", "longitude"),
                            name="state").chunk({"time": time_chunk}).to_dataset()
        part.to_zarr(path, region={"time": slice(start, start + count)}, zarr_format=2)


def write_netcdf(path: Path, n: int, shape: tuple[int, int]) -> None:
    """CDS-style netCDF: one variable per channel ``(valid_time, latitude, longitude)``."""
    import xarray as xr

    times, lat, lon = _coords(n, shape)
    x = frames(0, n, shape)
    ds = xr.Dataset({c: (("valid_time", "latitude", "longitude"), x[:, i], {"units": "1"}) for i, c in enumerate(CHANNELS)},
                    coords={"valid_time": times, "latitude": lat, "longitude": lon})
    ds.to_netcdf(path)


def write_hdf5(path: Path, n: int, shape: tuple[int, int]) -> None:
    """Our HDF5 layout (``funcdiff data generate``): one dataset per field ``(N, H, W)``, one sample per chunk."""
    import h5py

    from funcdiff.data.hdf5 import FORMAT_NAME

    x = frames(0, n, shape)
    with h5py.File(path, "w") as f:
        for i, c in enumerate(CHANNELS):
            f.create_dataset(c, data=x[:, i], chunks=(1, *shape))
        f.attrs.update({"funcdiff_format": FORMAT_NAME, "complete": True, "num_written": n, "num_samples": n,
                        "fields": json.dumps(list(CHANNELS))})


# ----------------------------------------------------------------------------------------------- one run
def run_config(spec: dict) -> dict:
    kind = spec.get("kind", "none")
    forecast = {"kind": kind, "history": 1, "horizon": 1} if kind != "none" else {"kind": "none"}
    noise = {"domain": "sphere", "smoothness": 2.0, "length_scale": 0.1, "max_degree": 48} if kind != "none" else \
        {"smoothness": 2.0, "length_scale": 0.1}
    return {"name": "stream-bench", "model": spec["model"], "forecast": forecast, "noise": noise,
            "data": {"source": "file", "path": spec["path"], "channels": list(CHANNELS), "dim": 2,
                     "test_fraction": 0.05, "num_samples": None, "stream": spec["stream"]},
            "train": {"steps": spec["warm"] + spec["steps"], "batch_size": spec["batch"], "lr": 1e-3,
                      "warmup_steps": 2, "log_every": 0, "eval_every": 0, "checkpoint_every": 0, "device": "cpu",
                      "out_dir": spec["out_dir"], "num_workers": spec["workers"], "prefetch_factor": 4,
                      "latitude_weighted": kind != "none"}}


def child(spec: dict) -> dict:
    """Train ``spec`` in this process: ``warm`` steps, then ``steps`` timed ones; report times and memory."""
    import torch

    from funcdiff.config import config_from_dict
    from funcdiff.training import Trainer

    torch.set_num_threads(1)
    start = time.perf_counter()
    trainer = Trainer.from_config(config_from_dict(run_config(spec)), progress=False)
    trainer.fit(until=spec["warm"])
    setup = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    trainer.source.close()
    del trainer
    return {"seconds": seconds, "setup_s": setup, "samples_per_s": spec["steps"] * spec["batch"] / seconds,
            "train_cpu_s_per_step": cpu / spec["steps"],
            "worker_rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
            "self_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def measure(spec: dict) -> dict:
    """Run :func:`child` in a fresh process (through a wrapper whose RUSAGE_CHILDREN is that run's peak)."""
    out = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec)], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def wrapper(spec_json: str) -> None:
    out = subprocess.run([sys.executable, __file__, "--child", spec_json], capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(out.returncode)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(json.dumps(result))


# ----------------------------------------------------------------------------------------------- the table
def _row(source, workers, grid, path_gb, spec, result, what, memory_rate=None):
    rate = result["samples_per_s"]
    return {"what": what, "source": source, "workers": workers, "grid": f"{grid[0]}x{grid[1]}",
            "dataset_gb": round(path_gb, 3), "steps": spec["steps"], "samples_per_s": round(rate, 2),
            "step_time_ratio_vs_memory": round(memory_rate / rate, 3) if memory_rate else None,
            "train_cpu_s_per_step": round(result["train_cpu_s_per_step"], 3),
            "peak_rss_gb": round(result["peak_rss_gb"], 3), "worker_rss_gb": round(result["worker_rss_gb"], 3),
            "setup_s": round(result["setup_s"], 1)}


def throughput_rows(tmp: Path, size: dict) -> list[dict]:
    rows = []
    for grid in size["grids"]:
        n = size["frames"]
        paths = {"zarr": tmp / f"t{grid[0]}.zarr", "netcdf": tmp / f"t{grid[0]}.nc", "hdf5": tmp / f"t{grid[0]}.h5"}
        write_zarr(paths["zarr"], n, grid)
        if "zarr_64mb_chunks" in size["runs"]:
            slab = len(CHANNELS) * grid[0] * grid[1] * 4
            paths["zarr_64mb"] = tmp / f"t{grid[0]}-64mb.zarr"
            write_zarr(paths["zarr_64mb"], n, grid, time_chunk=max(1, min(n, (1 << 26) // slab)))
        write_netcdf(paths["netcdf"], n, grid)
        write_hdf5(paths["hdf5"], n, grid)
        gb = n * len(CHANNELS) * grid[0] * grid[1] * 4 / 1e9
        base = {"model": FNO, "batch": 8, "warm": size["warm"], "steps": size["steps"], "out_dir": str(tmp / "run")}
        runs = {"memory": ("memory", "zarr", False, 0), "zarr0": ("zarr", "zarr", True, 0),
                "zarr": ("zarr", "zarr", True, 2), "zarr_64mb_chunks": ("zarr_64mb_chunks", "zarr_64mb", True, 2),
                "netcdf": ("netcdf", "netcdf", True, 2), "hdf5": ("hdf5", "hdf5", True, 2)}
        memory_rate = None
        for source, fmt, stream, workers in (runs[name] for name in size["runs"]):
            spec = {**base, "path": str(paths[fmt]), "stream": stream, "workers": workers}
            result = measure(spec)
            memory_rate = memory_rate or result["samples_per_s"]
            rows.append(_row(source, workers, grid, gb, spec, result, "throughput", memory_rate))
            print(rows[-1], flush=True)
    return rows


def rss_rows(tmp: Path, size: dict) -> list[dict]:
    rows, grid = [], (121, 240)
    for factor in (1, 4):
        n = size["rss_frames"] * factor
        path = tmp / f"rss{factor}.zarr"
        write_zarr(path, n, grid)
        gb = n * len(CHANNELS) * grid[0] * grid[1] * 4 / 1e9
        for stream, workers in ((True, 2), (False, 0)):
            spec = {"model": FNO, "batch": 8, "warm": size["warm"], "steps": size["rss_steps"], "path": str(path),
                    "stream": stream, "workers": workers, "out_dir": str(tmp / f"rss-run{factor}{stream}")}
            result = measure(spec)
            rows.append(_row("zarr" if stream else "memory", workers, grid, gb, spec, result, f"rss_{factor}x"))
            print(rows[-1], flush=True)
        shutil.rmtree(path)
    return rows


def era5_rows(tmp: Path, size: dict) -> list[dict]:
    grid, n = (721, 1440), size["era5_frames"]
    path = tmp / "era5_025.zarr"
    write_zarr(path, n, grid, segment="2D", block=4)
    gb = n * len(CHANNELS) * grid[0] * grid[1] * 4 / 1e9
    spec = {"model": SFNO, "batch": 1, "warm": 1, "steps": size["era5_steps"], "path": str(path), "stream": True,
            "workers": 2, "kind": "autoregressive", "out_dir": str(tmp / "era5-run")}
    result = measure(spec)
    row = _row("zarr", 2, grid, gb, spec, result, "era5_025")
    row["seconds_per_step"] = round(result["seconds"] / spec["steps"], 2)
    print(row, flush=True)
    shutil.rmtree(path)
    return [row]


def main() -> None:
    from _common import parser, print_table, write_json

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tmp", type=Path, default=None, help="folder for the stores (default: a temporary one)")
    p.add_argument("--parts", default="", help="comma-separated: throughput, rss, era5 (default: all; with --quick "
                   "throughput and rss: one SFNO step at 0.25° takes minutes on a CPU)")
    args = p.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    tmp = Path(tempfile.mkdtemp(prefix="stream-bench-", dir=args.tmp))
    parts = args.parts.split(",") if args.parts else (["throughput", "rss"] if args.quick else
                                                       ["throughput", "rss", "era5"])
    rows = []
    try:
        rows += throughput_rows(tmp, size) if "throughput" in parts else []
        rows += rss_rows(tmp, size) if "rss" in parts else []
        rows += era5_rows(tmp, size) if "era5" in parts else []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows, ["what", "source", "workers", "grid", "dataset_gb", "steps", "samples_per_s",
                       "step_time_ratio_vs_memory", "train_cpu_s_per_step", "peak_rss_gb", "worker_rss_gb", "setup_s"])
    write_json(rows, args.out, {"threads": 1, "quick": args.quick, "channels": list(CHANNELS), "fno": FNO,
                                "sfno": SFNO, "sizes": size})


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    elif len(sys.argv) == 3 and sys.argv[1] == "--measure":
        wrapper(sys.argv[2])
    else:
        main()
