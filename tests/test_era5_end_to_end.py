"""End to end on ERA5-like shallow-water data: generate -> data era5 (regrid, segments) -> train a tiny SFNO
forecaster with sphere noise and a latitude-weighted loss -> forecast 4 steps x 4 members -> evaluate; the CF
files reopen with xarray and the scores follow WeatherBench 2 conventions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("torch_harmonics", reason="the SFNO backbone and the generator need the sphere extra")
dask = pytest.importorskip("dask")
pytest.importorskip("zarr")
xr = pytest.importorskip("xarray")

from funcdiff.cli import main  # noqa: E402
from funcdiff.metrics import lat_weighted_rmse  # noqa: E402

TINY = ["model.n_modes=[8, 8]", "model.hidden_channels=8", "model.n_layers=1", "model.emb_dim=16",
        "model.norm_groups=4", "train.steps=12", "train.batch_size=4", "train.warmup_steps=2",
        "train.log_every=6", "train.eval_every=12", "train.checkpoint_every=12", "forecast.steps_per_frame=2"]


@pytest.fixture(autouse=True)
def synchronous_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


def test_read_train_forecast_evaluate(tmp_path, capsys):
    swe, train, test = tmp_path / "swe", tmp_path / "train.zarr", tmp_path / "test.zarr"
    assert main(["data", "shallow-water", "--out", str(swe), "--nlat", "33", "--days", "6", "--spinup-days", "1",
                 "--layout", "wb2", "--start", "2000-01-01", "--no-progress"]) == 0
    common = ["data", "era5", "--source", str(swe / "wb2.zarr"), "--variables", "z500,u500,v500", "--grid", "5.625deg"]
    assert main([*common, "--end", "2000-01-04T18", "--segment", "1D", "--out", str(train)]) == 0  # training days
    assert main([*common, "--start", "2000-01-05", "--segment", "2D", "--out", str(test)]) == 0  # held out in time

    run = tmp_path / "run"
    assert main(["train", "--config", "configs/era5/swe-sfno.yaml", "--out-dir", str(run), "--no-progress",
                 "--set", f"data.path={train}", *[x for o in TINY for x in ("--set", o)]]) == 0
    forecast_path = tmp_path / "forecast.nc"
    assert main(["forecast", "--checkpoint", str(run), "--initial", str(test), "--index", "0", "--lead-steps", "4",
                 "--members", "4", "--seed", "1", "--out", str(forecast_path), "--no-progress"]) == 0
    assert forecast_path.with_suffix(".png").exists()

    with xr.open_dataset(forecast_path) as ds:  # CF: decoded times, lat/lon with units, variables with ERA5 units
        assert ds["z500"].dims == ("init", "member", "lead_time", "latitude", "longitude")
        assert ds["z500"].shape == (1, 4, 4, 32, 64) and ds["z500"].attrs["units"] == "m2 s-2"
        assert ds["init_time"].values[0] == np.datetime64("2000-01-05T00:00")
        lead = ds["lead_time"]  # CF duration in hours (xarray decodes it to timedelta64 only when asked)
        hours = lead.values / np.timedelta64(1, "h") if lead.dtype.kind == "m" else lead.values
        assert lead.dtype.kind == "m" or lead.attrs["units"] == "hours"
        np.testing.assert_array_equal(hours, [6, 12, 18, 24])
        assert ds["latitude"].attrs["units"] == "degrees_north" and ds["latitude"].values[0] == -87.1875
        assert np.isfinite(ds["z500"].values).all()

    # stations: 5 % of the grid points observed at leads 2 and 4 and assimilated by guidance during the rollout
    guided_path = tmp_path / "guided.nc"
    assert main(["forecast", "--checkpoint", str(run), "--initial", str(test), "--index", "0", "--lead-steps", "4",
                 "--members", "4", "--seed", "1", "--sensor-fraction", "0.05", "--sensor-every", "2", "--no-plot",
                 "--out", str(guided_path), "--no-progress"]) == 0
    from funcdiff.guidance.timed import load_timed_observation

    sensors = load_timed_observation(guided_path.with_suffix(".sensors.nc"))
    with xr.open_dataset(forecast_path) as free, xr.open_dataset(guided_path) as guided:
        assert sensors.times.tolist() == [12.0, 24.0]  # hours
        for k, lead in enumerate((2, 4)):
            operator = sensors.at(k)
            misfits = []
            for ds in (free, guided):
                frame = torch.from_numpy(np.stack([ds[c].values[0, :, lead - 1] for c in ("z500", "u500", "v500")], 1))
                misfits.append(float(operator.residual(frame.double()).pow(2).mean()))
            assert misfits[1] < misfits[0], (lead, misfits)  # guided members are closer to the stations

    scores_path, json_path = tmp_path / "scores.nc", tmp_path / "scores.json"
    assert main(["evaluate", "--forecast", str(forecast_path), "--truth", str(test), "--climatology", str(train),
                 "--out", str(scores_path), "--json", str(json_path)]) == 0
    with xr.open_dataset(scores_path) as scores:
        truth = xr.open_zarr(test)["state"].values  # (T, C, H, W)
        lat = xr.open_zarr(test)["latitude"].values
        # persistence at lead 1: the lat-weighted RMSE of frame 0 against frame 1, by hand
        expected = lat_weighted_rmse(torch.from_numpy(truth[None, 0]).double(),
                                     torch.from_numpy(truth[None, 1]).double(), lat)
        got = scores["rmse"].sel({"forecast_source": "persistence"}).isel(lead_time=0).values
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5)
        assert np.isfinite(scores["acc"].sel({"forecast_source": ["forecast", "persistence"]}).values).all()
        assert np.isnan(scores["acc"].sel({"forecast_source": "climatology"}).values).all()  # 0/0, as in WB2
        assert np.isfinite(scores["crps"].values).all()
    from cf_check import cf_errors, checker_available

    if checker_available()[0]:  # the sphere's forecast (CF times) and scores pass the CF-1.8 checker
        for path in (forecast_path, scores_path):
            assert cf_errors(path) == [], path
    rows = json.loads(json_path.read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert {r["method"] for r in rows} == {"forecast", "persistence", "climatology"} and "acc" in rows[0]
    assert pd.Timedelta(hours=float(rows[0]["lead_time"])) == pd.Timedelta("6h")
