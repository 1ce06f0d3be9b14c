"""Forecasts written to zarr (``--out forecast.zarr``): the netCDF file's variables, coordinates and attributes,
WeatherBench 2's names on the sphere, one chunk per initial state and lead, kill-and-resume, and ``evaluate``
scoring the store exactly as the netCDF file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

pytest.importorskip("zarr")

from funcdiff.cli import main  # noqa: E402
from funcdiff.io.forecast_file import ForecastLayout, create_forecast_file, write_leads  # noqa: E402
from funcdiff.io.forecast_zarr import create_forecast_zarr, finish_forecast_zarr, open_forecast_dataset  # noqa: E402
from funcdiff.tasks import forecast_io  # noqa: E402
from funcdiff.tasks.batch import merge_parts  # noqa: E402


def _loaded(path, wb2_names: bool = False):
    """The dataset in the netCDF layout (or as stored, ``wb2_names``), loaded, without the ``history`` line (it
    records when each file was written)."""
    if wb2_names:
        ds = xr.open_dataset(path, engine="zarr", chunks=None).load()
    else:
        with open_forecast_dataset(path) as opened:
            ds = opened.load()
    ds.attrs.pop("history", None)
    return ds


@pytest.mark.parametrize("grid", ["latlon", "periodic"])
def test_store_round_trips_with_the_values_and_attributes_of_the_netcdf_file(tmp_path, grid):
    sphere = grid == "latlon"
    channels, spatial = (("z500", "t850"), (4, 8)) if sphere else (("u",), (6,))
    layout = ForecastLayout(channels=channels, members=2, lead_steps=3, dt=6.0, spatial=spatial, grid=grid,
                            init_index=(0, 1), init_frame=(4, 4), init_time=(24.0, 48.0) if sphere else (0.4, 0.4),
                            time_units="hours since 2000-01-01" if sphere else "model time units",
                            channel_units=("m2 s-2", "K")[:len(channels)])
    values = torch.randn(2, 2, len(channels), 3, *spatial, generator=torch.Generator().manual_seed(0))
    attrs = {"title": "test", "seed": 3, "config": {"members": 2}, "kind": "rolling"}
    nc = create_forecast_file(tmp_path / "f.nc", layout, attrs)
    store = create_forecast_zarr(tmp_path / "f.zarr", layout, attrs)
    for init in range(2):
        write_leads(nc, channels, init, [1, 2], values[init, :, :, :2])
        store.write_leads(channels, init, [1, 2], values[init, :, :, :2])
        write_leads(nc, channels, init, [3], values[init, :, :, 2:])
        store.write_leads(channels, init, [3], values[init, :, :, 2:])
    nc.close()
    finish_forecast_zarr(tmp_path / "f.zarr")
    a, b = _loaded(tmp_path / "f.nc"), _loaded(tmp_path / "f.zarr")
    assert a.identical(b)  # every value, coordinate and attribute
    np.testing.assert_array_equal(b[channels[0]].values, values[:, :, 0].numpy())
    raw = _loaded(tmp_path / "f.zarr", wb2_names=True)
    import zarr

    chunks = zarr.open_group(tmp_path / "f.zarr", mode="r")[channels[0]].chunks
    assert chunks == (1, 2, 1, *spatial)  # one initial state x one lead (all members, the whole grid) per chunk
    if sphere:  # WeatherBench 2's names: time (init), number, prediction_timedelta, latitude, longitude
        assert raw["z500"].dims == ("time", "number", "prediction_timedelta", "latitude", "longitude")
        assert set(raw.data_vars) == {"z500", "t850", "completed_leads"}  # the rest are coordinates
        assert list(raw["time"].values) == [np.datetime64("2000-01-02"), np.datetime64("2000-01-03")]
        assert raw["prediction_timedelta"].attrs["standard_name"] == "forecast_period"
    else:
        assert raw["u"].dims == ("init", "member", "lead_time", "x")


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory):
    from test_forecast import tiny_forecaster

    tmp = tmp_path_factory.mktemp("zarr_forecast")
    tiny_forecaster(tmp, test_fraction=0.34)
    return tmp


def _forecast(tmp, out, *extra):
    return main(["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--index", "1",
                 "--index", "4", "--start-frame", "2", "--lead-steps", "4", "--members", "2", "--seed", "3",
                 "--out", str(out), "--no-progress", "--no-plot", *extra])


def test_cli_writes_zarr_that_evaluate_scores_as_the_netcdf_file(forecaster, tmp_path):
    tmp = forecaster
    assert _forecast(tmp, tmp_path / "f.nc") == 0 and _forecast(tmp, tmp_path / "f.zarr") == 0
    a, b = _loaded(tmp_path / "f.nc"), _loaded(tmp_path / "f.zarr")
    assert a.identical(b)
    assert not (tmp_path / "f.zarr.partial").exists() and not (tmp_path / "f.zarr.state.pt").exists()
    assert _forecast(tmp, tmp_path / "f.zarr") == 0  # complete: a rerun is a no-op
    for name in ("f.nc", "f.zarr"):
        assert main(["evaluate", "--forecast", str(tmp_path / name), "--truth", str(tmp / "adv.h5"), "--out",
                     str(tmp_path / f"{name}.scores.nc"), "--json", str(tmp_path / f"{name}.json")]) == 0
    assert _loaded(tmp_path / "f.nc.scores.nc").identical(_loaded(tmp_path / "f.zarr.scores.nc"))
    rows = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("f.nc", "f.zarr")]
    assert rows[0] == rows[1]


class _Killed(BaseException):
    """A process killed mid-write (SIGKILL): nothing in funcdiff handles it."""


@pytest.mark.parametrize("die_in", ["_write_leads", "_save_state"])
def test_killed_zarr_forecast_resumes_bit_identical(forecaster, tmp_path, monkeypatch, die_in):
    """Killed after two rollout steps (in the store's write, or between it and the state file): the rerun of the
    same command continues and ends with exactly the uninterrupted store."""
    tmp = forecaster
    assert _forecast(tmp, tmp_path / "whole.zarr") == 0
    original, calls = getattr(forecast_io, die_in), {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(forecast_io, die_in, dying)
    killed = tmp_path / "killed.zarr"
    with pytest.raises(_Killed):
        _forecast(tmp, killed)
    assert (tmp_path / "killed.zarr.partial").is_dir() and not killed.exists()
    monkeypatch.setattr(forecast_io, die_in, original)
    assert _forecast(tmp, killed) == 0
    assert _loaded(tmp_path / "whole.zarr").identical(_loaded(killed))


def test_a_batch_merges_to_zarr_as_to_netcdf(forecaster, tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    tmp = forecaster
    assert main(["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--lead-steps", "2",
                 "--members", "2", "--seed", "2", "--out-dir", str(tmp_path / "batch"), "--no-progress",
                 "--init-times", "0.4/0.6/0.2", "--index", "1"]) == 0
    nc = merge_parts(tmp_path / "batch")
    assert main(["merge", str(tmp_path / "batch"), "--out", str(tmp_path / "merged.zarr")]) == 0
    assert _loaded(nc).identical(_loaded(tmp_path / "merged.zarr"))
