"""User path of whole-trajectory models: the shipped configs/wavelet/*.yaml train through `funcdiff train` (tiny
overrides) and `funcdiff forecast` writes every frame of one diffusion to netCDF with time coordinates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from funcdiff import cli
from funcdiff.config import load_config
from funcdiff.data import generate_to_hdf5
from funcdiff.pde import get_problem

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "wavelet"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert config.forecast.kind in ("trajectory", "super_resolution") and config.forecast.history == 1
    if config.transform.kind == "wavelet":
        assert config.transform.axes[0] == "time" and len(config.transform.axes) == 1 + config.data.dim


def test_train_and_forecast_a_burgers_shock_trajectory_from_the_shipped_config(tmp_path, capsys):
    data = generate_to_hdf5(get_problem("burgers_shock"), tmp_path / "shock.h5", num_samples=6, resolution=64,
                            batch_size=6, params={"num_frames": 21}, progress=False)
    run = tmp_path / "run"
    small = ["train.steps=2", "train.batch_size=2", "model.n_modes=[1, 4]", "model.hidden_channels=8",
             "model.n_layers=1", "model.emb_dim=16", "model.norm_groups=4", "forecast.horizon=8",
             "forecast.stride=4", "transform.levels=2", f"data.path={data}", "data.test_fraction=0.2"]
    argv = ["train", "--config", str(CONFIGS / "burgers-shock-wavelet.yaml"), "--out-dir", str(run), "--seed", "1",
            "--device", "cpu", "--no-progress"]
    for item in small:
        argv += ["--set", item]
    assert cli.main(argv) == 0
    out = tmp_path / "trajectory.nc"
    assert cli.main(["forecast", "--checkpoint", str(run), "--initial", str(data), "--start-frame", "0",
                     "--lead-steps", "8", "--members", "2", "--seed", "0", "--out", str(out), "--no-progress",
                     "--no-plot"]) == 0
    with xr.open_dataset(out) as ds:
        assert ds["u"].dims == ("init", "member", "lead_time", "x")
        assert ds.sizes["lead_time"] == 8 and ds.sizes["x"] == 64
        np.testing.assert_allclose(ds["lead_time"].values, 0.02 * np.arange(1, 9), rtol=1e-6)  # frame_step 2
        assert json.loads(ds.attrs["config"])["forecast"]["kind"] == "trajectory"
        assert bool(np.isfinite(ds["u"].values).all())
    # `funcdiff sample` cannot draw a trajectory without its initial frame: one line, status 2
    assert cli.main(["sample", "--checkpoint", str(run), "--resolution", "64", "--num-samples", "1",
                     "--out", str(tmp_path / "s.nc"), "--no-progress"]) == 2
    assert "funcdiff forecast" in capsys.readouterr().err

    # a grid the transform cannot take: one clear line, exit status 2, no file
    bad = generate_to_hdf5(get_problem("burgers_shock"), tmp_path / "bad.h5", num_samples=6, resolution=62,
                           batch_size=6, params={"num_frames": 21}, progress=False)
    assert cli.main(["forecast", "--checkpoint", str(run), "--initial", str(bad), "--start-frame", "0",
                     "--lead-steps", "8", "--members", "1", "--out", str(tmp_path / "bad.nc"), "--no-progress"]) == 2
    assert "divisible by 4" in capsys.readouterr().err
    assert not (tmp_path / "bad.nc").exists()
