"""Batch cases read lazily (funcdiff.tasks.case_store): each case reads only its frames or its sample, with the
values, times and results of the whole-file readers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from funcdiff.cli import main
from funcdiff.config import config_from_dict
from funcdiff.data.stores import ArrayStore
from funcdiff.tasks import case_store
from funcdiff.tasks.batch import merge_parts, same_result
from funcdiff.tasks.forecast_io import initial_from_trajectories, read_trajectories
from funcdiff.tasks.solve import read_truth_file
from tiny_darcy import tiny_darcy_run


@pytest.fixture
def reads(monkeypatch):
    """Every ArrayStore.read as (items, frames, bytes returned)."""
    log: list[tuple[list[int], slice | None, int]] = []
    original = ArrayStore.read

    def recording(self, items, frames=None):
        out = original(self, items, frames)
        log.append((list(np.asarray(items).reshape(-1)), frames, out.numel() * 4))
        return out

    monkeypatch.setattr(ArrayStore, "read", recording)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return log


def _whole_file(monkeypatch, name, reader):
    """Make the CLI read the whole file as before (``reader``), served through a MemoryStore."""
    def whole(path, channels):
        data = reader(path, channels)
        if isinstance(data, tuple):
            return case_store.MemoryStore(path, data[0], channels), data[1]
        return case_store.MemoryStore(path, data, channels)

    monkeypatch.setattr(case_store, name, whole)


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory):
    from test_forecast import tiny_forecaster

    tmp = tmp_path_factory.mktemp("lazy_forecast")
    tiny_forecaster(tmp)
    return tmp


def test_forecast_batch_reads_only_each_cases_frames(forecaster, tmp_path, reads, monkeypatch):
    """Twin-sensor forecasts from 2 trajectories x 2 start times: every read is one trajectory's history frame
    or its 3 truth frames (never the file: 6 trajectories x 24 frames); the merged result equals the whole-file
    run's."""
    tmp = forecaster
    cmd = ["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--lead-steps", "3",
           "--members", "2", "--seed", "2", "--no-progress", "--init-times", "0.4/0.6/0.2", "--index", "1",
           "--index", "4", "--sensor-fraction", "0.25", "--sensor-every", "1"]
    assert main([*cmd, "--out-dir", str(tmp_path / "lazy")]) == 0
    frame_bytes = 16 * 4
    assert sorted((r[0][0], r[1].start, r[1].stop, r[2]) for r in reads) == sorted(
        [(i, f, f + 1, frame_bytes) for i in (1, 4) for f in (4, 6)] +  # history: the start frame
        [(i, f + 1, f + 4, 3 * frame_bytes) for i in (1, 4) for f in (4, 6)])  # truth: the 3 leads
    assert sum(r[2] for r in reads) == 16 * frame_bytes < 6 * 24 * frame_bytes / 8
    _whole_file(monkeypatch, "open_trajectories", read_trajectories)
    assert main([*cmd, "--out-dir", str(tmp_path / "whole")]) == 0
    assert same_result(merge_parts(tmp_path / "lazy"), merge_parts(tmp_path / "whole"))


def test_solve_cases_read_one_sample_per_case(tmp_path, reads, monkeypatch):
    ckpt = tiny_darcy_run(tmp_path, n=12, fields=8, cases=6)
    cmd = ["solve", "--checkpoint", str(ckpt), "--cases", str(tmp_path / "cases.nc"), "--indices", "1:6:2",
           "--task", "darcy-inverse", "--obs-fraction", "0.1", "--num-samples", "2", "--steps", "2", "--seed", "4",
           "--no-progress"]
    assert main([*cmd, "--out-dir", str(tmp_path / "lazy")]) == 0
    assert [(r[0], r[1], r[2]) for r in reads] == [([i], None, 2 * 12 * 12 * 4) for i in (1, 3, 5)]
    _whole_file(monkeypatch, "open_samples", read_truth_file)
    assert main([*cmd, "--out-dir", str(tmp_path / "whole")]) == 0
    assert same_result(merge_parts(tmp_path / "lazy"), merge_parts(tmp_path / "whole"))


def _era5_store(path, grid=(4, 8)):
    pytest.importorskip("zarr")
    dask = pytest.importorskip("dask")
    from funcdiff.data.era5 import write_era5_zarr
    from funcdiff.sphere import grid_latitudes, grid_longitudes

    times = pd.date_range("2000-01-01", periods=14, freq="6h")  # 3 whole 1-day segments and 2 times left over
    values = np.random.default_rng(0).normal(size=(14, 3, *grid)).astype(np.float32) * 100 + 5000
    state = xr.DataArray(values, dims=("time", "channel", "latitude", "longitude"), name="state",
                         coords={"time": times, "channel": ["z500", "t850", "u500"],
                                 "units": ("channel", ["m2 s-2", "K", "m s-1"]),
                                 "latitude": grid_latitudes(*grid), "longitude": grid_longitudes(grid[1])})
    with dask.config.set(scheduler="synchronous"):  # tiny data: no thread pool
        write_era5_zarr(state.chunk({"time": 5}), path, attrs={"segment": "1D"})
    return path


@pytest.mark.parametrize("source", ["era5", "hdf5"])
def test_lazy_reads_equal_the_whole_file_readers(forecaster, tmp_path, source):
    path = _era5_store(tmp_path / "era5.zarr") if source == "era5" else forecaster / "adv.h5"
    channels = ("t850", "z500") if source == "era5" else ("u",)
    traj, times = read_trajectories(path, channels)
    store, lazy_times = case_store.open_trajectories(path, channels)
    assert store.shape == tuple(traj.shape) and store._handle is None  # metadata only so far: nothing open
    assert lazy_times.dtype == times.dtype and torch.equal(lazy_times, times)
    for index, start, history, step, leads in ((0, 1, 2, 1, None), (2, 3, 2, 1, 2), (1, 2, 1, 2, 0)):
        whole = initial_from_trajectories(traj, times, path, index, start, history, step)
        lazy = case_store.case_frames(store, times, path, index, start, history, step, truth_leads=leads)
        assert torch.equal(lazy[0], whole[0]) and lazy[2:] == whole[2:]
        assert torch.equal(lazy[1], whole[1][:, :leads] if leads is not None else whole[1])
    samples = case_store.open_samples(path, channels) if source == "era5" else None
    if samples is not None:  # every frame of every whole segment is a sample
        fields = read_truth_file(path, channels)
        assert samples.shape == tuple(fields.shape) == (12, 2, 4, 8)
        assert torch.equal(samples.read([7, 2]), fields[[7, 2]])


def test_era5_store_batch_forecasts_by_date_read_one_frame_per_case(tmp_path, reads):
    """On an ERA5 store (one series cut into 1-day segments) --init-times takes dates across the segments and
    --indices one case per segment; each case reads its one history frame."""
    pytest.importorskip("torch_harmonics", reason="the SFNO backbone needs the sphere extra")
    from funcdiff.training import train

    store = _era5_store(tmp_path / "era5.zarr", grid=(8, 16))
    train(config_from_dict({
        "name": "tiny-sfno", "data": {"source": "file", "path": str(store), "channels": ["z500", "t850"], "dim": 2,
                                      "test_fraction": 0.34},
        "noise": {"domain": "sphere", "smoothness": 2.0, "length_scale": 0.2},
        "model": {"backbone": "sfno", "n_modes": [4, 4], "hidden_channels": 8, "n_layers": 1, "emb_dim": 8,
                  "norm_groups": 4},
        "train": {"steps": 1, "batch_size": 2, "warmup_steps": 1, "log_every": 0, "eval_every": 0,
                  "checkpoint_every": 0, "out_dir": str(tmp_path / "run"), "device": "cpu"},
        "forecast": {"kind": "autoregressive", "history": 1, "horizon": 1, "steps_per_frame": 1}}), progress=False)
    cmd = ["forecast", "--checkpoint", str(tmp_path / "run"), "--initial", str(store), "--lead-steps", "1",
           "--members", "2", "--seed", "0", "--no-progress"]
    assert main([*cmd, "--init-times", "2000-01-01T12/2000-01-02T12/12h", "--out-dir", str(tmp_path / "dates")]) == 0
    assert sorted((r[0][0], r[1].start) for r in reads) == [(0, 2), (1, 0), (1, 2)]
    with xr.open_dataset(merge_parts(tmp_path / "dates")) as ds:
        assert list(ds["init_time"].values) == list(pd.to_datetime(["2000-01-01T12:00", "2000-01-02T00:00", "2000-01-02T12:00"]))
    assert main([*cmd, "--indices", "0:3", "--out-dir", str(tmp_path / "segments")]) == 0
    with xr.open_dataset(merge_parts(tmp_path / "segments")) as ds:
        assert list(ds["init_time"].values) == list(pd.to_datetime(["2000-01-01", "2000-01-02", "2000-01-03"]))
