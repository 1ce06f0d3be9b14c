"""``funcdiff solve --task reconstruct`` on the sphere: a tiny SFNO trained on ERA5-like shallow-water frames
reconstructs a held-out frame (a later day of the same simulation) from stations at (latitude, longitude), given
as a station file or drawn from the truth store; CF output on the lat-lon grid; one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

pytest.importorskip("torch_harmonics", reason="the SFNO backbone and the generator need the sphere extra")
dask = pytest.importorskip("dask")
pytest.importorskip("zarr")

from funcdiff.cli import main  # noqa: E402
from funcdiff.config import config_from_dict  # noqa: E402
from funcdiff.data.era5 import read_era5, write_era5_zarr  # noqa: E402
from funcdiff.tasks.era5_synthetic import write_shallow_water_era5  # noqa: E402
from funcdiff.guidance import SparseObservation, random_sensors  # noqa: E402
from funcdiff.metrics import latitude_weights, rmse  # noqa: E402
from funcdiff.pde.shallow_water import ShallowWaterRun  # noqa: E402
from funcdiff.sphere import grid_latitudes  # noqa: E402
from funcdiff.tasks import load_truth, solve  # noqa: E402
from funcdiff.tasks.solve import read_truth_file  # noqa: E402
from funcdiff.training import Trainer, train  # noqa: E402

from test_era5_reconstruction import tiny_sfno_config  # noqa: E402

CHANNELS = ("z500", "u500")
NOISE = {"z500": 20.0, "u500": 0.5}  # station measurement noise, ERA5 units (m² s⁻², m s⁻¹)
SOLVE = ["--num-samples", "4", "--steps", "12", "--sigma-max", "20", "--no-progress"]


@pytest.fixture(scope="module")
def sphere(tmp_path_factory):
    """Frames of days 1-4 (16 frames, training) and of day 5 (4 frames, held out) of one shallow-water run at
    32 x 64 (5.625°); an SFNO trained 200 steps (about 5 s) on the first; a station file of 5 % of the grid (off
    the grid) observing held-out frame 2 with noise; a tiny torus FNO."""
    root = tmp_path_factory.mktemp("sphere_solve")
    with dask.config.set(scheduler="synchronous"):
        written = write_shallow_water_era5(root / "swe", ShallowWaterRun(nlat=33, spinup_days=1), days=5,
                                           layout="wb2")
        for name, (start, end) in {"frames": ("2000-01-01T00", "2000-01-04T18"),
                                   "heldout": ("2000-01-05T00", "2000-01-05T18")}.items():
            state = read_era5(written["wb2"], ",".join(CHANNELS), start=start, end=end)
            write_era5_zarr(state, root / f"{name}.zarr", res=5.625, attrs={"segment": "1D"})
    config = tiny_sfno_config(root / "frames.zarr", CHANNELS, root / "run", steps=200)
    train(config, progress=False)
    truth = load_truth(root / "heldout.zarr", CHANNELS, index=2).double()
    g = torch.Generator().manual_seed(0)
    stations = random_sensors(0.05, (32, 64), grid="latlon", on_grid=False, generator=g)
    obs = SparseObservation(stations, channels=(0, 1), grid="latlon")
    values = obs.observe(truth)[0] + torch.tensor([NOISE[c] for c in CHANNELS], dtype=torch.float64)[:, None] \
        * torch.randn(2, len(stations), generator=g, dtype=torch.float64)
    station_file(root / "stations.nc", stations, values)
    torus = Trainer.from_config(config_from_dict({
        "data": {"source": "synthetic", "channels": ["a", "u"], "resolution": 8, "num_samples": 8},
        "noise": {"smoothness": 2.0, "length_scale": 0.1},
        "model": {"backbone": "fno", "n_modes": [3, 3], "hidden_channels": 4, "n_layers": 1, "emb_dim": 8,
                  "norm_groups": 1},
        "train": {"steps": 1, "batch_size": 4, "warmup_steps": 1, "log_every": 0, "checkpoint_every": 0,
                  "eval_every": 0, "out_dir": str(root / "torus"), "device": "cpu"}}), progress=False)
    torus.fit()
    return {"root": root, "run": root / "run", "truth": truth, "stations": root / "stations.nc",
            "torus": torus.save_checkpoint()}


def station_file(path, stations: torch.Tensor, values: torch.Tensor, names=CHANNELS) -> None:
    """A plain station file: latitude/longitude (degrees) and one variable per channel along ``station``."""
    ds = xr.Dataset({n: ("station", values[i].numpy(), {"noise_std": NOISE.get(n, 1.0)}) for i, n in enumerate(names)},
                    coords={"latitude": ("station", stations[:, 0].numpy(), {"units": "degrees_north"}),
                            "longitude": ("station", stations[:, 1].numpy(), {"units": "degrees_east"})})
    ds.to_netcdf(path, engine="netcdf4")


def user_error(argv, capsys) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_station_file_reconstruction_beats_the_unguided_prior_and_climatology_at_stations(sphere, capsys, tmp_path):
    """Measured (lat-weighted RMSE, z500 in m² s⁻² / u500 in m s⁻¹): overall guided mean 548 / 4.5, unguided
    sample 1677 / 10.7, climatology 372 / 2.1; at the stations 17.8 / 0.50 (noise 20 / 0.5), unguided 1139 / 6.6,
    climatology 432 / 1.9. The climatology of 16 neighbouring frames beats this 200-step model away from the
    stations; the 600-step model of benchmarks/sphere_solve.py beats it for z500 (README)."""
    out = tmp_path / "post.nc"
    argv = ["solve", "--checkpoint", sphere["run"], "--task", "reconstruct", "--observations", sphere["stations"],
            "--truth", sphere["root"] / "heldout.zarr", "--index", "2", "--seed", "3", "--out", out, *SOLVE]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    assert out.with_suffix(".png").stat().st_size > 0
    with xr.open_dataset(out) as ds:
        ds = ds.load()
    assert ds["z500_mean"].dims == ("latitude", "longitude") and ds["z500"].dims == ("sample", "latitude", "longitude")
    np.testing.assert_allclose(ds["latitude"].values, grid_latitudes(32, 64))
    assert ds["latitude"].attrs["units"] == "degrees_north" and ds["longitude"].attrs["units"] == "degrees_east"
    assert np.all(np.diff(ds["latitude"].values) > 0) and float(ds["longitude"].max()) < 360
    with xr.open_zarr(sphere["root"] / "frames.zarr") as store:
        units = dict(store.attrs["era5"]["units"]) if "era5" in store.attrs else None
    assert ds["z500_mean"].attrs["units"] == (units or {}).get("z500", ds["z500_mean"].attrs["units"]) != "1"
    assert ds["sensor_coords"].attrs["grid"] == "latlon" and ds.attrs["task"] == "reconstruct"
    from cf_check import cf_errors, checker_available

    if checker_available()[0]:  # a posterior on the sphere with its stations passes the CF-1.8 checker
        assert cf_errors(out) == []

    truth = sphere["truth"].float()
    mean = torch.stack([torch.from_numpy(ds[f"{c}_mean"].values) for c in CHANNELS])[None]
    # the unguided prior from the same seed and the climatology (mean of the training frames) as baselines
    free = solve(str(sphere["run"]), "reconstruct", _loaded(sphere["stations"]), num_samples=4, steps=12,
                 sigma_max=20.0, seed=3, guidance_strength=0.0).samples
    climatology = read_truth_file(sphere["root"] / "frames.zarr", CHANNELS).mean(0, keepdim=True)
    obs = _loaded(sphere["stations"])
    w = latitude_weights(grid_latitudes(32, 64)).float()[:, None]
    for c, name in enumerate(CHANNELS):
        errors = {"guided": mean, "unguided": free[:1], "climatology": climatology}
        overall = {k: float(rmse(v[:, c], truth[:, c], w)) for k, v in errors.items()}
        stations = {k: float((obs.values[0, c] - obs.observe(v.double())[0, c]).pow(2).mean().sqrt())
                    for k, v in errors.items()}
        assert abs(overall["guided"] - float(ds.attrs[f"rmse_{name}"])) < 1e-3 * overall["guided"]
        print(name, "overall", overall, "stations", stations)
        assert overall["guided"] < 0.6 * overall["unguided"], (name, overall)
        assert stations["guided"] < 0.5 * min(stations["unguided"], stations["climatology"]), (name, stations)
        assert stations["guided"] < 3 * NOISE[name], (name, stations)


def _loaded(path):
    from funcdiff.guidance import load_observation

    return load_observation(path)


def test_twin_stations_from_the_truth_store_same_seed_same_result(sphere, capsys, tmp_path):
    runs = []
    for out in (tmp_path / "a.nc", tmp_path / "b.nc"):
        argv = ["solve", "--checkpoint", sphere["run"], "--task", "reconstruct", "--truth",
                sphere["root"] / "heldout.zarr", "--index", "2", "--obs-fraction", "0.05", "--observed", "z500",
                "--obs-noise", "20", "--seed", "1", "--no-plot", "--out", out, *SOLVE]
        assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
        with xr.open_dataset(out) as ds:
            runs.append(ds.load())
    a, b = runs
    assert list(a["channel_name"].values) == ["z500"] and a.sizes["sensor"] == round(0.05 * 32 * 64)
    again = _loaded(tmp_path / "a.nc")  # a posterior's stations are a station file for the next solve
    assert again.grid == "latlon" and again.channel_names == ("z500",) and again.values.shape == (1, 1, 102)
    np.testing.assert_array_equal(a["u500_mean"].values, b["u500_mean"].values)
    # z500 stations only: u500 is reconstructed through the joint prior (reported, not asserted beyond finiteness)
    assert np.isfinite(a["u500_mean"].values).all() and a.attrs["rmse_z500"] < a.attrs["rmse_z500_single"] * 1.5


def test_sphere_solve_errors_are_one_line(sphere, capsys, tmp_path):
    stations = torch.tensor([[95.0, 10.0], [0.0, 20.0]], dtype=torch.float64)
    station_file(tmp_path / "north.nc", stations, torch.ones(2, 2))
    base = ["solve", "--checkpoint", sphere["run"], "--task", "reconstruct", "--no-plot", "--out",
            tmp_path / "x.nc", *SOLVE]
    assert "latitude outside [-90, 90]" in user_error([*base, "--observations", tmp_path / "north.nc"], capsys)
    station_file(tmp_path / "t850.nc", stations * 0.5, torch.ones(1, 2), names=("t850",))
    err = user_error([*base, "--observations", tmp_path / "t850.nc"], capsys)
    assert "t850" in err and "z500" in err
    err = user_error([*base, "--truth", sphere["root"] / "heldout.zarr", "--obs-count", "5", "--observed", "t2m"],
                     capsys)
    assert "t2m" in err and "u500" in err
    torus = ["solve", "--checkpoint", sphere["torus"], "--task", "reconstruct", "--observations", sphere["stations"],
             "--no-plot", "--out", tmp_path / "y.nc", *SOLVE]
    assert "ERA5 store" in user_error(torus, capsys)
    err = user_error([*torus[:4], "darcy-inverse", *torus[5:]], capsys)
    assert "latitude, longitude" in err
    err = user_error(["solve", "--checkpoint", sphere["run"], "--task", "reconstruct", "--cases",
                      sphere["root"] / "heldout.zarr", "--obs-fraction", "0.05", "--out-dir", tmp_path / "cases"], capsys)
    assert "--cases" in err
