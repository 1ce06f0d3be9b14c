"""Sensor files (``funcdiff observe``, forecast ``*.sensors.nc``): CF-1.8 clean by the IOOS checker, one row of
values per initial state, read back exactly, units stated (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from cf_check import cf_errors, require_checker
from funcdiff.errors import UserError
from funcdiff.guidance.io import load_observation, save_observation
from funcdiff.guidance.observations import SparseObservation
from funcdiff.guidance.timed import (SensorNetwork, load_timed_observation, load_timed_observations, make_timed_observation,
                                     save_timed_observations, twin_observation)


def _twin(seed=0, trajectory=0):
    gen = torch.Generator().manual_seed(trajectory)
    initial, truth = torch.randn(2, 1, 12, 12, generator=gen), torch.randn(2, 6, 12, 12, generator=gen)
    return twin_observation(initial, truth, 6, 0.5, SensorNetwork(0.2, every=2, noise_std=0.1, seed=seed),
                            channel_names=("u", "v"), trajectory=trajectory, frame=0)


def test_forecast_sensor_file_is_cf_clean_and_round_trips(tmp_path):
    require_checker()
    obs = [_twin(trajectory=3), _twin(trajectory=8)]
    path = save_timed_observations(obs, tmp_path / "f.sensors.nc", init_index=[3, 8], init_frame=[0, 0])
    assert cf_errors(path) == []
    back = load_timed_observations(path)
    assert back.init_index == (3, 8) and back.init_frame == (0, 0)
    for a, b in zip(obs, back.observations):
        torch.testing.assert_close(a.sensors.values, b.sensors.values)
        torch.testing.assert_close(a.times, b.times)
    with xr.open_dataset(path) as ds:
        assert ds["observed_values"].dims == ("init", "obs_sample", "observed_channel", "sensor")
        assert ds["obs_time"].attrs["units"] == "1" and "model time units" in ds["obs_time"].attrs["long_name"]
        assert ds["observed_values"].attrs["units"] == "1" and ds["init_index"].dtype == np.int32
        assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["title"] and ds.attrs["history"]
    with pytest.raises(UserError, match="2 initial states"):
        load_timed_observation(path)
    with pytest.raises(UserError, match="funcdiff forecast --observations"):
        load_observation(path)  # not a static observation file


def test_sensor_noise_is_independent_per_trajectory_and_positions_shared():
    a, b = _twin(trajectory=1), _twin(trajectory=2)
    torch.testing.assert_close(a.sensors.coords, b.sensors.coords)  # one network
    again = _twin(trajectory=1)
    torch.testing.assert_close(a.sensors.values, again.sensors.values)


def test_sphere_sensor_file_has_hours_and_channel_units(tmp_path):
    require_checker()
    gen = torch.Generator().manual_seed(0)
    truth = torch.randn(2, 5, 9, 16, generator=gen)
    obs = make_timed_observation(truth, [2, 4], 6.0, fraction=0.1, channels=[0, 1], channel_names=["z500", "u500"],
                                 grid="latlon")
    path = save_timed_observations([obs], tmp_path / "s.sensors.nc", init_index=[0], init_frame=[4],
                                   time_units="hours since 1970-01-01", units=["m2 s-2", "m s-1"])
    assert cf_errors(path) == []
    with xr.open_dataset(path) as ds:
        assert ds["obs_time"].attrs["units"] == "hours" and ds["obs_time"].values.tolist() == [12.0, 24.0]
        assert list(ds["observed_units"].values) == ["m2 s-2", "m s-1"]
        assert ds["latitude"].attrs["units"] == "degrees_north"
    torch.testing.assert_close(load_timed_observation(path).sensors.coords, obs.sensors.coords)


def test_static_observation_file_is_cf_clean(tmp_path):
    require_checker()
    obs = SparseObservation(coords=torch.rand(7, 2), channels=(0, 1), values=torch.randn(1, 2, 7),
                            noise_std=(0.1, 0.2), channel_names=("a", "u"))
    path = save_observation(obs, tmp_path / "obs.nc")
    assert cf_errors(path) == []
    back = load_observation(path)
    assert back.channel_names == ("a", "u")
    torch.testing.assert_close(back.values, obs.values.double())


def test_lat_lon_stations_for_a_torus_model_are_named_as_such(tmp_path):
    stations = xr.Dataset({"z500": ("station", np.array([5e4, 5.1e4]))},
                          coords={"latitude": ("station", [10.0, 20.0]), "longitude": ("station", [5.0, 6.0])})
    stations.to_netcdf(tmp_path / "stations.nc")
    with pytest.raises(UserError, match="lat-lon stations.*model's grid is 'periodic'"):
        load_timed_observations(tmp_path / "stations.nc", grid="periodic")
