"""Streamed training data (issue 21): batches read from HDF5 / zarr / netCDF stores equal the in-memory batches bit
for bit with 0, 1 and 2 DataLoader workers; rank shards are disjoint and make up the global batch; a stopped and
resumed streamed run ends with the weights of an uninterrupted one; windows never cross a gap in the time axis;
an unreadable chunk is one line naming the file and the item, exit 2."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from funcdiff.cli import main
from funcdiff.config import config_from_dict
from funcdiff.data import generate_to_hdf5
from funcdiff.data.era5 import write_era5_zarr
from funcdiff.data.pdebench import PDEBenchStore
from funcdiff.data.stores import Era5ZarrStore, HDF5Store, XarrayStore
from funcdiff.data.streaming import StoreItems, open_store, window_index
from funcdiff.data.synthetic import SyntheticProblem
from funcdiff.errors import UserError
from funcdiff.noise import GaussianRandomField
from funcdiff.training import Trainer, build_datasets
from funcdiff.training.batches import LoaderSettings, StreamedSource
from funcdiff.training.distributed import DistInfo

MODEL = {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 1, "emb_dim": 8, "norm_groups": 4}


def _fields(num_samples, resolution, *, generator, device="cpu", dtype=torch.float32):
    grf = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)
    x = grf.sample((num_samples, 2, resolution, resolution), generator=generator, dtype=torch.float64)
    return {"a": (3.0 + x[:, 0]).to(device, dtype), "u": (x[:, 1] * 0.5 - 1.0).to(device, dtype)}


def _moving(num_samples, resolution, *, generator, device="cpu", dtype=torch.float32, frames=10):
    grf = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)
    u0 = grf.sample((num_samples, 1, resolution, resolution), generator=generator, dtype=torch.float64)[:, 0]
    u = torch.stack([torch.roll(u0, t, dims=-1) for t in range(frames)], dim=1)
    return {"u": (u + 2.0).to(device, dtype), "t": torch.arange(frames, dtype=dtype) * 0.25}


FIELDS = SyntheticProblem("pairs", "pairs", ("a", "u"), {}, _fields, "test fields")
MOVING = SyntheticProblem("moving", "trajectory", ("u",), {}, _moving, "test trajectories")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streaming")
    generate_to_hdf5(FIELDS, tmp / "fields.h5", num_samples=24, resolution=8, seed=0, batch_size=24, progress=False)
    generate_to_hdf5(MOVING, tmp / "traj.h5", num_samples=6, resolution=8, seed=0, batch_size=6, progress=False)
    times = pd.date_range("2000-01-01", periods=24, freq="6h")
    _era5_zarr(tmp / "era5.zarr", times, segment="2D")
    gap = times.delete(slice(9, 11))  # 18 h missing between frames 8 and 9 of the axis
    ds = _latlon_state(gap).to_dataset().assign_attrs(state_stats={})  # `funcdiff data era5` refuses gaps: by hand
    ds.chunk({"time": 4}).to_zarr(tmp / "gap.zarr", zarr_format=2, consolidated=True)
    _cds_netcdf(tmp / "cds.nc", times)
    with h5py.File(tmp / "pdebench.h5", "w") as f:  # PDEBench's flat layout: tensor (N, T, *S), t-coordinate
        f["tensor"] = np.random.default_rng(0).normal(size=(6, 10, 8, 8)).astype(np.float32) + 1.0
        f["t-coordinate"] = np.linspace(0.0, 0.9, 10)
    return tmp


def _latlon_state(times, seed=0):
    rng = np.random.default_rng(seed)
    lat, lon = np.linspace(-78.75, 78.75, 8), np.arange(16) * 22.5
    values = rng.normal(size=(len(times), 2, 8, 16)).astype(np.float32) * [[[[50.0]], [[3.0]]]] + [[[[5e4]], [[0.0]]]]
    return xr.DataArray(values.astype(np.float32), dims=("time", "channel", "latitude", "longitude"),
                        coords={"time": times, "channel": ["z500", "u500"], "units": ("channel", ["m2 s-2", "m s-1"]),
                                "latitude": lat, "longitude": lon}, name="state")


def _era5_zarr(path, times, segment):
    write_era5_zarr(_latlon_state(times), path, attrs={"segment": segment} if segment else {})


def _cds_netcdf(path, times):
    state = _latlon_state(times, seed=1)
    ds = xr.Dataset({"t2m": (("valid_time", "latitude", "longitude"), state.values[:, 0] / 200.0, {"units": "K"}),
                     "u10": (("valid_time", "latitude", "longitude"), state.values[:, 1], {"units": "m s-1"})},
                    coords={"valid_time": times, "latitude": state.latitude.values[::-1],
                            "longitude": state.longitude.values})
    ds.to_netcdf(path)


def _config(tmp, path, channels, stream, *, kind="none", dim=2, steps=6, workers=0, out="run", **train):
    forecast = {"kind": kind, "history": 1, "horizon": 2} if kind != "none" else {"kind": "none"}
    return config_from_dict({
        "name": "stream-test", "data": {"source": "file", "path": str(path), "channels": list(channels), "dim": dim,
                                        "test_fraction": 0.25, "stream": stream, "num_samples": None},
        "noise": {"smoothness": 2.0, "length_scale": 0.1}, "model": MODEL, "forecast": forecast,
        "train": {"steps": steps, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "out_dir": str(tmp / out),
                  "log_every": 0, "eval_every": 0, "checkpoint_every": 0, "device": "cpu", "num_workers": workers,
                  **train}})


def _batches(trainer, steps):
    return [trainer.source.batch(k) for k in range(steps)]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_streamed_batches_equal_in_memory_batches(files, workers):
    memory = Trainer.from_config(_config(files, files / "fields.h5", "au", False), progress=False)
    streamed = Trainer.from_config(_config(files, files / "fields.h5", "au", True, workers=workers), progress=False)
    assert isinstance(streamed.source, StreamedSource) and streamed.source.num_items == 18
    assert torch.equal(memory.normalizer.mean.float(), streamed.normalizer.mean.float())
    assert torch.equal(memory.normalizer.std.float(), streamed.normalizer.std.float())
    steps = 2 * memory.source.batches_per_epoch + 1  # across two epoch boundaries
    for a, b in zip(_batches(memory, steps), _batches(streamed, steps)):
        assert torch.equal(a, b)
    for a, b in zip(memory.val_source.chunks(4), streamed.val_source.chunks(4)):
        assert torch.equal(a, b)
    assert streamed.data_source["split"] == memory.data_source["split"]
    streamed.source.close()


@pytest.mark.parametrize("path, workers", [("traj.h5", 2), ("era5.zarr", 1), ("pdebench.h5", 0)])
def test_streamed_windows_equal_in_memory_windows(files, path, workers):
    channels, kind = (["u"], "rolling") if path.endswith(".h5") else (["z500", "u500"], "autoregressive")
    memory = Trainer.from_config(_config(files, files / path, channels, False, kind=kind), progress=False)
    streamed = Trainer.from_config(_config(files, files / path, channels, True, kind=kind, workers=workers),
                                   progress=False)
    assert streamed.source.num_items == memory.source.num_items
    assert streamed.source.item_shape == memory.source.item_shape
    steps = memory.source.batches_per_epoch + 2
    for a, b in zip(_batches(memory, steps), _batches(streamed, steps)):
        assert torch.equal(a, b)
    assert streamed.data_source == memory.data_source  # dt, split, grid / era5 attributes: what checkpoints record
    streamed.source.close()


class _Recording(StoreItems):
    """StoreItems that remember which training items they read."""

    def read(self, indices):
        self.seen = [*getattr(self, "seen", []), *[int(i) for i in indices]]
        return super().read(indices)


def test_rank_shards_are_disjoint_and_make_up_the_global_batch(files):
    train_set, _ = build_datasets(_config(files, files / "fields.h5", "au", True))

    def source(rank, world):
        items = _Recording(train_set.items.store, train_set.items.index)
        return StreamedSource(items, lambda x: x, LoaderSettings(batch_size=4, seed=0),
                              DistInfo(rank=rank, local_rank=rank, world_size=world))

    one, ranks = source(0, 1), [source(0, 2), source(1, 2)]
    for step in range(5):
        parts = [r.indices(step) for r in ranks]
        assert not set(parts[0].tolist()) & set(parts[1].tolist())
        assert torch.equal(torch.cat(parts), one.indices(step))
        assert torch.equal(torch.cat([r.batch(step) for r in ranks]), one.batch(step))
    for r in ranks:  # each rank read its own share only
        assert sorted(r.items.seen) == sorted(i for k in range(5) for i in r.indices(k).tolist())


def test_stopped_and_resumed_streamed_run_matches_an_uninterrupted_one(files, monkeypatch):
    straight = Trainer.from_config(_config(files, files / "traj.h5", ["u"], True, kind="autoregressive", steps=12,
                                           out="straight"), progress=False)
    straight.fit()
    config = _config(files, files / "traj.h5", ["u"], True, kind="autoregressive", steps=12, out="stopped", workers=1)
    first = Trainer.from_config(config, progress=False)
    assert first.source.batches_per_epoch == 8  # 12 steps: into the second epoch
    first.fit(until=5)  # stopped mid-epoch (as SIGUSR1 stops after the step in hand)
    first.save_checkpoint()
    first.source.close()
    assert (files / "stopped" / "normalization.json").is_file()  # the statistics live with the run: not recomputed

    def no_second_pass(*args):
        raise AssertionError("statistics recomputed")

    monkeypatch.setattr("funcdiff.kinds.base.streaming_normalizer", no_second_pass)
    resumed = Trainer.from_config(config, progress=False)
    resumed.resume()
    assert resumed.step == 5 and resumed.epoch_of(resumed.step) == (0, 5)
    resumed.fit()
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    state = torch.load(sorted((files / "stopped" / "checkpoints").glob("*.pt"))[0], weights_only=True)
    assert state["data"] == {"epoch": 0, "batch_in_epoch": 5, "num_items": 32, "batch_size": 4}


def test_windows_never_cross_a_gap_in_the_time_axis(files):
    store = open_store(files / "gap.zarr", ["z500"])
    assert isinstance(store, Era5ZarrStore) and store.shape[:3] == (1, 1, 22)
    index = window_index(store, [0], length=3)
    times = store.coords["time"]
    assert len(index) == 7 + 11  # frames 0-8 hold 7 windows of 3, frames 9-21 hold 11
    for i in range(len(index)):
        frames = times[index.frames(i)]
        assert np.all(np.diff(frames) == np.timedelta64(6, "h"))
    x = StoreItems(store, index).read([7])  # the first window after the gap starts at frame 9
    assert torch.equal(x[0, 0], torch.from_numpy(xr.open_zarr(files / "gap.zarr")["state"].values[9:12, 0]))


def test_netcdf_and_zarr_stores_read_what_xarray_reads(files):
    nc = open_store(files / "cds.nc", ["t2m", "u10"])
    assert isinstance(nc, XarrayStore) and nc.shape == (1, 2, 24, 8, 16)
    ds = xr.open_dataset(files / "cds.nc")
    expected = np.stack([ds["t2m"].values[3:6, ::-1], ds["u10"].values[3:6, ::-1]])  # latitude made ascending
    assert torch.equal(nc.read([0], slice(3, 6))[0], torch.from_numpy(expected))
    assert isinstance(open_store(files / "fields.h5", ["a"]), HDF5Store)
    assert isinstance(open_store(files / "pdebench.h5", ["u"]), PDEBenchStore)


@pytest.mark.parametrize("path, channels", [("cds.nc", ["t2m", "u10"]), ("era5.zarr", ["z500", "u500"]),
                                            ("fields.h5", ["a", "u"])])
def test_streaming_from_each_format_trains(files, path, channels):
    config = _config(files, files / path, channels, True, steps=20, out=f"fmt-{path}", lr=3e-3, eval_every=20)
    trainer = Trainer.from_config(config, progress=False)
    first = trainer.validation_loss()
    records = trainer.fit()
    assert np.isfinite(records[-1]["loss"]) and records[-1]["val_loss"] < first
    assert (files / f"fmt-{path}" / "checkpoints" / "step_00000020.pt").exists()


def _corrupt_first_chunk(store_path):
    chunk = sorted(p for p in (store_path / "state").iterdir() if not p.name.startswith("."))[0]
    chunk.write_bytes(b"not a compressed chunk" * 8)


def test_an_unreadable_chunk_is_one_line_naming_the_file_and_item(files, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad.zarr"
    shutil.copytree(files / "era5.zarr", bad)
    _corrupt_first_chunk(bad)
    out = tmp_path / "run"
    code = main(["train", "--config", str(_write_config(tmp_path, bad)), "--out-dir", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.zarr" in err[0] and "item(s) [" in err[0], err
    assert not list(out.glob("checkpoints/*"))
    store = open_store(bad, ["z500"])  # and from a DataLoader worker: the same message in the main process
    source = StreamedSource(StoreItems(store, window_index(store, [0, 1, 2], 1, squeeze=True)), lambda x: x,
                            LoaderSettings(batch_size=24, seed=0, num_workers=1))
    with pytest.raises(UserError, match=r"bad\.zarr: cannot read item\(s\) \[\d\]: .*decompression"):
        source.batch(0)


def _write_config(tmp, store):
    import yaml

    config = _config(tmp, store, ["z500", "u500"], True).to_dict()
    del config["data"]["resolution"]  # (file data: the grid is the store's)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_sigusr1_to_every_process_of_a_streamed_run_then_resume_is_bit_exact(files, tmp_path):
    """Slurm may signal every process of the job: the DataLoader worker ignores SIGUSR1, the training process
    checkpoints at the step in hand (status 75), and ``--resume`` ends with the weights of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    config = _config(tmp_path, files / "fields.h5", "au", True, steps=60, workers=1, log_every=1,
                     keep_checkpoints=0).to_dict()
    del config["data"]["resolution"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "funcdiff", "train", "--config", str(path), "--no-progress"]
    proc = subprocess.Popen(command, env={**env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    log, deadline = tmp_path / "run" / "log.jsonl", time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGUSR1)  # the training process and its worker
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 75 and "stopped by SIGUSR1" in stderr and "Traceback" not in stderr, stderr[-2000:]
    stopped = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert len(stopped) == 1 and int(stopped[0].stem.split("_")[1]) < 60
    assert main(["train", "--config", str(path), "--no-progress", "--resume"]) == 0
    reference = Trainer.from_config(_config(tmp_path, files / "fields.h5", "au", True, steps=60, out="reference"),
                                    progress=False)
    reference.fit()
    final = torch.load(tmp_path / "run" / "checkpoints" / "step_00000060.pt", weights_only=True)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(final["model"][key], value), key


def test_auto_streams_above_the_size_threshold_and_netcdf_always(files):
    from funcdiff.data import FieldDataset
    from funcdiff.data.streaming import StreamedDataset

    def kind_of(path, channels, **data):
        config = _config(files, files / path, channels, "auto").replace([f"data.{k}={v}" for k, v in data.items()])
        return type(build_datasets(config)[0])

    assert kind_of("fields.h5", "au") is FieldDataset  # 12 kB: in memory
    assert kind_of("fields.h5", "au", stream_above_gb=1e-6) is StreamedDataset
    assert kind_of("cds.nc", ["t2m", "u10"]) is StreamedDataset  # no whole-file reader for CDS netCDF
    with pytest.raises(UserError, match="data.stream: false"):
        build_datasets(_config(files, files / "traj.h5", ["u"], True, kind="trajectory"))
