"""Every netCDF file funcdiff writes passes the IOOS compliance checker (cf:1.8) with no high- or medium-priority
failure: samples, posterior, batch parts and merged files, forecasts (unit domain and sphere), scores,
super-resolution output, the synthetic CDS files. Also the forecast layout's unique ``init`` index and the scores'
``forecast_source``. (Sensor files: tests/test_sensor_files.py; the sphere's forecast, scores and posterior from
the CLI: tests/test_era5_end_to_end.py and tests/test_sphere_solve.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from cf_check import cf_report, checker_available
from funcdiff.cli import main
from funcdiff.config import config_from_dict
from funcdiff.data import generate_to_hdf5
from tiny_darcy import tiny_darcy_run

OK, WHY = checker_available()
needs_checker = pytest.mark.skipif(not OK, reason=WHY)
N = 8
SOLVE = ["--task", "darcy-inverse", "--obs-fraction", "0.2", "--num-samples", "2", "--steps", "2", "--seed", "1",
         "--no-progress"]


def assert_cf(path):
    report = cf_report(path)
    assert report.endswith(": 0 CF problem(s)\n"), report


@pytest.fixture(scope="module")
def darcy(tmp_path_factory):
    """A 1-step Darcy model at 8² and a netCDF file of 3 truths."""
    tmp = tmp_path_factory.mktemp("cf_darcy")
    return tmp, tiny_darcy_run(tmp, n=N, fields=6, cases=3, name="darcy-cf", steps=1, batch_size=2,
                               test_fraction=0.34)


@pytest.fixture(scope="module")
def advection(tmp_path_factory):
    """A 1-step rolling advection forecaster at 16 points and its trajectory file."""
    from test_forecast import ADVECTION, _config
    from funcdiff.training import train

    tmp = tmp_path_factory.mktemp("cf_forecast")
    generate_to_hdf5(ADVECTION, tmp / "adv.h5", num_samples=4, resolution=16, seed=0, batch_size=4, progress=False)
    config = _config(tmp)
    config["model"].update(n_modes=[4], hidden_channels=8, n_layers=1, emb_dim=8)
    config["train"].update(steps=1, batch_size=2, warmup_steps=1)
    config["data"]["test_fraction"] = 0.25
    config["forecast"].update(steps_per_frame=1)
    train(config_from_dict(config), progress=False)
    return tmp


def _forecast(tmp, *extra):
    return ["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--lead-steps", "2",
            "--members", "2", "--seed", "2", "--no-progress", "--no-plot", *extra]


@needs_checker
def test_samples_posterior_and_solve_batch_files(darcy, tmp_path):
    tmp, ckpt = darcy
    files = [tmp / "cases.nc", tmp_path / "samples_8.nc", tmp_path / "posterior.nc"]
    assert main(["sample", "--checkpoint", str(ckpt), "--resolution", str(N), "--num-samples", "2", "--steps", "2",
                 "--out", str(files[1]), "--no-progress"]) == 0
    assert main(["solve", "--checkpoint", str(ckpt), "--truth", str(tmp / "cases.nc"), "--index", "1", *SOLVE,
                 "--no-plot", "--out", str(files[2])]) == 0
    assert main(["solve", "--checkpoint", str(ckpt), "--cases", str(tmp / "cases.nc"), "--indices", "0:2",
                 "--out-dir", str(tmp_path / "batch"), *SOLVE]) == 0
    assert main(["merge", str(tmp_path / "batch")]) == 0
    files += [*sorted((tmp_path / "batch" / "parts").glob("case_*.nc")), tmp_path / "batch" / "merged.nc"]
    assert len(files) == 6
    for path in files:
        assert_cf(path)
    with xr.open_dataset(files[-1]) as ds:  # per-case metrics with units; 63-bit case seeds as text
        assert ds["rel_l2_a"].attrs["units"] == "1" and ds["misfit_mean"].attrs["units"] == "1"
        assert ds["case"].dtype == np.int32 and int(ds["case_seed"].values[0]) > 0
        assert "merged 2 solve parts" in ds.attrs["history"] and "funcdiff solve" in ds.attrs["history"]


@needs_checker
def test_forecast_batch_and_scores_files(advection, tmp_path):
    tmp = advection
    single = tmp_path / "forecast.nc"
    assert main(_forecast(tmp, "--index", "1", "--index", "2", "--start-frame", "1", "--out", str(single))) == 0
    assert main(_forecast(tmp, "--init-times", "0.0/0.1/0.1", "--index", "0", "--index", "3",
                          "--out-dir", str(tmp_path / "batch"))) == 0
    assert main(["merge", str(tmp_path / "batch")]) == 0
    merged = tmp_path / "batch" / "merged.nc"
    scores = tmp_path / "scores.nc"
    assert main(["evaluate", "--forecast", str(merged), "--truth", str(tmp / "adv.h5"), "--out", str(scores)]) == 0
    parts = sorted((tmp_path / "batch" / "parts").glob("case_*.nc"))
    assert len(parts) == 4
    for path in (single, parts[0], merged, scores):
        assert_cf(path)

    with xr.open_dataset(single) as ds:  # two starts at the same frame: a unique `init` index
        assert ds["u"].dims[:3] == ("init", "member", "lead_time")
        assert list(ds["init_index"].values) == [1, 2] and list(ds["init_frame"].values) == [1, 1]
        assert ds["init_time"].values[0] == ds["init_time"].values[1]
        assert all(index.is_unique for index in ds.indexes.values())
        assert ds.sel(init=1)["init_index"].item() == 2
    with xr.open_dataset(merged) as ds:
        assert ds.sizes["init"] == 4 and all(index.is_unique for index in ds.indexes.values())
        assert list(ds["init_index"].values) == [0, 0, 3, 3] and list(ds["case"].values) == [0, 1, 2, 3]
    with xr.open_dataset(scores) as ds:
        one = ds["rmse"].sel(forecast_source="persistence")
        assert "forecast_source" not in one.dims and one.shape == (ds.sizes["lead_time"], ds.sizes["channel"])
        assert ds["lead_time"].attrs["units"] and ds["rmse"].attrs["units"] == "1"


@needs_checker
def test_sphere_forecast_file_has_cf_times(tmp_path):
    from funcdiff.io.forecast_file import ForecastLayout, create_forecast_file, write_leads

    layout = ForecastLayout(channels=("z500", "t850"), members=2, lead_steps=2, dt=6.0, spatial=(4, 8), grid="latlon",
                            init_index=(0, 1), init_frame=(0, 0), init_time=(0.0, 0.0),
                            time_units="hours since 2000-01-01", channel_units=("m2 s-2", "K"))
    path = tmp_path / "sphere.nc"
    ds = create_forecast_file(path, layout, {"title": "test"})
    try:
        write_leads(ds, layout.channels, 0, [1, 2], torch.zeros(2, 2, 2, 4, 8))
    finally:
        ds.close()
    assert_cf(path)
    with xr.open_dataset(path) as ds:
        assert ds["init_time"].values[0] == np.datetime64("2000-01-01T00:00")
        lead = ds["lead_time"]  # a CF duration in hours (xarray decodes it to timedelta64 only when asked)
        hours = lead.values / np.timedelta64(1, "h") if lead.dtype.kind == "m" else lead.values
        assert lead.dtype.kind == "m" or lead.attrs["units"] == "hours"
        np.testing.assert_array_equal(hours, [6, 12])
        assert list(ds["init"].values) == [0, 1] and ds.sel(init=1)["init_index"].item() == 1


@needs_checker
def test_super_resolution_file(tmp_path):
    from funcdiff.tasks.super_resolution import write_super_resolution

    path = write_super_resolution(torch.zeros(2, 1, 3, 4), torch.arange(3.0) * 0.5, ("u",), tmp_path / "sr.nc",
                                  {"checkpoint": "x", "factors": [2]})
    assert_cf(path)


@needs_checker
def test_synthetic_cds_file(tmp_path):
    """The ERA5-like CDS netCDF of `funcdiff data shallow-water` (a stand-in for downloads) is CF too."""
    import pandas as pd

    from funcdiff.data.era5 import VARIABLES
    from funcdiff.tasks.era5_synthetic import SHORT_NAMES, write_cds

    dims = ("time", "level", "latitude", "longitude")
    ds = xr.Dataset({n: (dims, np.zeros((3, 1, 5, 8), np.float32), {"units": VARIABLES[n].units})
                     for n in SHORT_NAMES},
                    coords={"time": pd.date_range("2000-01-31T12", periods=3, freq="6h"), "level": [500],
                            "latitude": np.linspace(-90, 90, 5), "longitude": np.arange(8) * 45.0})
    paths = write_cds(ds, tmp_path)
    assert len(paths) == 2  # one file per month
    for path in paths:
        assert_cf(path)
