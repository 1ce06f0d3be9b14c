"""``funcdiff demo --quick`` end to end: it trains, samples at two resolutions and reconstructs from sensors."""

import json

import xarray as xr

from funcdiff.cli import main
from funcdiff.guidance import load_observation


def test_demo_quick_writes_netcdf_and_png(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out-dir", str(out), "--no-progress", "--train-steps", "40"]) == 0
    for name in ("samples_16.nc", "samples_32.nc", "posterior.nc", "samples.png", "reconstruction.png"):
        assert (out / name).stat().st_size > 0, name
    fine = xr.open_dataset(out / "samples_32.nc")
    assert fine["a"].shape == (4, 32, 32) and fine.attrs["training_resolution"] == 16
    assert float(fine["x"][1]) == 1 / 32
    posterior = xr.open_dataset(out / "posterior.nc")
    # the layout of `funcdiff solve`: samples, mean, std, truth, error and the sensors
    assert {"a", "a_mean", "a_std", "a_truth", "a_error", "a_interpolated", "sensor_coords",
            "observed_values"} <= set(posterior.data_vars)
    assert posterior["a"].shape == (2, 32, 32) and posterior.attrs["task"] == "synthetic-reconstruct"
    sensors = load_observation(out / "posterior.nc")
    assert sensors.num_sensors == posterior.attrs["num_sensors"] and sensors.channel_names == ("a",)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_steps"] == 40
    # guidance pulls the posterior mean through the (noise-free) sensors
    assert summary["reconstruction_obs_rmse"] < 0.05
    assert "outputs in" in capsys.readouterr().out
    # a second run resumes from the finished checkpoint instead of training again
    assert main(["demo", "--quick", "--out-dir", str(out), "--no-progress", "--train-steps", "40"]) == 0
    assert json.loads((out / "summary.json").read_text())["train_steps"] == 40
