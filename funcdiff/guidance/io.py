"""Observations to and from netCDF (via xarray), written atomically.

One layout for every file that holds sensors: ``funcdiff observe`` and :func:`save_observation` write it,
``funcdiff solve`` and the demo add it to their posterior files, and :func:`load_observation` reads any of them
(so a posterior's sensors can be reused as the input of another ``solve``)::

    observed_values(obs_sample, observed_channel, sensor)  float64, observed values in field units
    sensor_coords(sensor, dim)                             float64, sensor coordinates on the unit domain
    noise_std(observed_channel)                            float64, Gaussian measurement-noise std
    channel_index(observed_channel)                        int32, index of the observed channel in the model state
    channel_name(observed_channel)                         str, channel names (``observed_channel`` before 0.2)
    sensor_coords.attrs: grid ("periodic" | "node"), grid_convention (text)

Stations on the sphere (grid ``"latlon"``) keep ``sensor_coords`` as (latitude, longitude) in degrees. A plain
station file is read too: 1-D ``latitude`` and ``longitude`` (degrees north/east) along one dimension (e.g.
``station``) and one variable per observed channel along it, named like the model's channels (``z500``), with an
optional ``noise_std`` attribute (measurement-noise std in the variable's units; default 0)::

    z500(station), t850(station)          float, observed values in the variable's units
    latitude(station), longitude(station) float, degrees

Files of funcdiff <= 0.1 (variables ``values(sample, channel, sensor)``, ``coords(sensor, dim)``, global
``grid`` attribute) are still read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import xarray as xr

import funcdiff
from funcdiff.errors import UserError
from funcdiff.guidance.observations import SparseObservation
from funcdiff.io.atomic import atomic_path
from funcdiff.io.provenance import cf_global_attrs

INIT_DIM = "init"  # forecast sensor files (funcdiff.guidance.timed): one row of sensor values per initial state

CONVENTIONS = {
    "periodic": "cell grid x_i = i/n on the torus [0, 1)^d",
    "node": "node grid x_i = i/(n-1) on [0, 1]^d including the boundary",
    "latlon": "stations on the sphere: (latitude, longitude) in degrees north and east",
}


def observation_to_dataset(observation: SparseObservation, units: Sequence[str] | str = "1") -> xr.Dataset:
    """The observation as an ``xarray.Dataset`` (layout in the module docstring), CF-1.8 attributes included.

    ``units``: the observed channels' units (one string for all, or one per observed channel; ``"1"`` for
    funcdiff's dimensionless PDE fields). When the channels share a unit it is ``observed_values``' ``units``;
    when they differ (z500 in m2 s-2 beside u500 in m s-1) each channel keeps its own values and units, named in
    the ``observed_units(observed_channel)`` coordinate, and ``observed_values``/``noise_std`` carry no single
    ``units`` (CF has no per-channel units within one variable). Stations on the sphere also get ``latitude(sensor)`` and
    ``longitude(sensor)`` in degrees north/east.
    """
    if observation.values is None:
        raise ValueError("cannot write an observation without values")
    names = observation.channel_names or tuple(f"channel_{c}" for c in observation.channels)
    per_channel = [units] * len(names) if isinstance(units, str) else [str(u) for u in units]
    if len(per_channel) != len(names):
        raise ValueError(f"units: one per observed channel ({len(names)}), got {len(per_channel)}")
    shared = per_channel[0] if len(set(per_channel)) == 1 else None
    grid = {"grid": observation.grid, "grid_convention": CONVENTIONS[observation.grid]}
    where = ({"long_name": "station (latitude, longitude)", "units": "degrees"} if observation.grid == "latlon" else
             {"long_name": "sensor coordinates on the unit domain", "units": "1"})
    values_attrs = {"long_name": "observed values", **({"units": shared} if shared else {})}
    # the names as an auxiliary coordinate: a string coordinate *variable* (named like its dimension) is not
    # CF-monotonic, and the IOOS checker fails on it
    coords: dict = {"channel_name": ("observed_channel", list(names), {"long_name": "name of the observed channel"})}
    if shared is None:
        values_attrs["long_name"] = "observed values, each channel in its own units (observed_units)"
        coords["observed_units"] = ("observed_channel", per_channel, {"long_name": "units of the observed channel"})
    if observation.grid == "latlon":
        lat, lon = observation.coords.double().cpu().numpy().T
        coords["latitude"] = ("sensor", lat, {"standard_name": "latitude", "long_name": "station latitude",
                                              "units": "degrees_north"})
        coords["longitude"] = ("sensor", lon, {"standard_name": "longitude", "long_name": "station longitude",
                                               "units": "degrees_east"})
        values_attrs["coordinates"] = "latitude longitude"
    return xr.Dataset(
        {
            "observed_values": (("obs_sample", "observed_channel", "sensor"),
                                observation.values.double().cpu().numpy(), values_attrs),
            "sensor_coords": (("sensor", "dim"), observation.coords.double().cpu().numpy(),
                              {**where, **grid}),
            "noise_std": (("observed_channel",), observation.noise_std_per_channel().numpy(),
                          {"long_name": "measurement-noise standard deviation",
                           **({"units": shared} if shared else {})}),
            "channel_index": (("observed_channel",), np.asarray(observation.channels, dtype=np.int32),
                              {"long_name": "index of the observed channel in the model state", "units": "1"}),
        },
        coords=coords,
        attrs={**cf_global_attrs("funcdiff point observations (sensors)"), **grid,
               "has_channel_names": int(observation.channel_names is not None),
               "funcdiff_version": funcdiff.__version__},
    )


def save_observation(observation: SparseObservation, path: str | os.PathLike) -> Path:
    """Write ``observation`` to netCDF at ``path`` atomically (temporary file in the same folder + os.replace)."""
    with atomic_path(path) as tmp:
        observation_to_dataset(observation).to_netcdf(tmp, engine="netcdf4")
    return Path(path)


LEGACY_NAMES = {"values": "observed_values", "coords": "sensor_coords", "sample": "obs_sample",
                "channel": "observed_channel"}


def load_observation(path: str | os.PathLike) -> SparseObservation:
    """Read the sensors of any file in the layout of the module docstring (an observation file, a posterior
    written by ``funcdiff solve`` or the demo). Raises :class:`~funcdiff.errors.UserError` naming the
    problem for a file that is not one, or whose sensors lie outside the domain or hold NaN."""
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except (OSError, ValueError) as err:
        if isinstance(err, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise UserError(f"{path}: cannot read as netCDF ({err})") from err
    if INIT_DIM in ds.dims:
        raise UserError(f"{path} holds the sensors of {ds.sizes[INIT_DIM]} forecast initial state(s) (an "
                        f"'{INIT_DIM}' dimension): give it to `funcdiff forecast --observations` (in Python: "
                        "load_timed_observations)")
    return observation_from_dataset(ds, path)


def observation_from_dataset(ds: xr.Dataset, path: str | os.PathLike) -> SparseObservation:
    """The sensors of a dataset in the layout of the module docstring (one initial state: no ``init`` dimension);
    ``path`` names the file in errors."""
    if "values" in ds and "coords" in ds:
        ds = ds.rename({k: v for k, v in LEGACY_NAMES.items() if k in ds.variables or k in ds.dims})
    missing = [v for v in ("observed_values", "sensor_coords", "channel_index") if v not in ds]
    if missing and "observed_values" not in ds and "latitude" in ds.variables and "longitude" in ds.variables:
        stations = _station_file(ds, path)
        if stations is not None:
            return stations
    if missing:
        raise UserError(f"{path} holds no sensors: it lacks the variables {missing} of an observation file")
    grid = str(ds["sensor_coords"].attrs.get("grid", ds.attrs.get("grid", "")))
    grid = {"nodes": "node"}.get(grid, grid)
    has_names = int(ds.attrs.get("has_channel_names", 1))
    name_var = "channel_name" if "channel_name" in ds.variables else "observed_channel"  # funcdiff <= 0.1
    names = tuple(str(n) for n in ds[name_var].values) if has_names else None
    std = ds["noise_std"].values.astype(np.float64) if "noise_std" in ds else np.zeros(ds.sizes["observed_channel"])
    values = ds["observed_values"]
    if "obs_sample" not in values.dims:
        values = values.expand_dims("obs_sample")
    try:
        return SparseObservation(
            coords=torch.from_numpy(ds["sensor_coords"].values.astype(np.float64)),
            channels=tuple(int(c) for c in ds["channel_index"].values),
            values=torch.from_numpy(values.transpose("obs_sample", "observed_channel", "sensor").values
                                    .astype(np.float64)),
            noise_std=tuple(float(s) for s in std), grid=grid, channel_names=names)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from err


def _station_file(ds: xr.Dataset, path: str | os.PathLike) -> SparseObservation | None:
    """A plain station file (module docstring) as a lat-lon observation, or None when ``latitude`` and
    ``longitude`` are not 1-D along one shared dimension (e.g. a gridded field). Channel indices are placeholders
    (0..C-1): ``funcdiff solve`` binds the channels by name."""
    lat, lon = ds["latitude"], ds["longitude"]
    if lat.ndim != 1 or lon.dims != lat.dims:
        return None
    (dim,) = lat.dims
    names = [str(n) for n, v in ds.data_vars.items() if v.dims == (dim,) and n not in ("latitude", "longitude")]
    if not names:
        raise UserError(f"{path}: the stations along {dim!r} hold no observed variables (one 1-D variable per "
                        f"channel, e.g. z500({dim}))")
    values = np.stack([ds[n].values.astype(np.float64) for n in names])[None]
    coords = np.stack([lat.values, lon.values], axis=1).astype(np.float64)
    std = tuple(float(ds[n].attrs.get("noise_std", 0.0)) for n in names)
    try:
        return SparseObservation(coords=torch.from_numpy(coords), channels=tuple(range(len(names))),
                                 values=torch.from_numpy(values), noise_std=std, grid="latlon",
                                 channel_names=tuple(names))
    except ValueError as err:
        raise UserError(f"{path}: {err}") from err
