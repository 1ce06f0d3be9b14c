"""Observations to and from netCDF (via xarray), written atomically.

File layout:
    values(sample, channel, sensor)   float64, observed values in field units
    coords(sensor, dim)               float64, sensor coordinates in domain units
    noise_std(channel)                float64, Gaussian measurement-noise std
    channel_index(channel)            int64, index of the observed channel in the model state
    channel(channel)                  str coordinate, channel names
    attrs: grid ("periodic" | "node"), grid_convention (text), funcdiff_version
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import funcdiff
from funcdiff.guidance.observations import SparseObservation
from funcdiff.io.atomic import atomic_path

CONVENTIONS = {
    "periodic": "cell grid x_i = i/n on the torus [0, 1)^d",
    "node": "node grid x_i = i/(n-1) on [0, 1]^d including the boundary",
}


def observation_to_dataset(observation: SparseObservation) -> xr.Dataset:
    """The observation as an ``xarray.Dataset`` (layout in the module docstring)."""
    if observation.values is None:
        raise ValueError("cannot write an observation without values")
    names = observation.channel_names or tuple(f"channel_{c}" for c in observation.channels)
    return xr.Dataset(
        {
            "values": (("sample", "channel", "sensor"), observation.values.double().cpu().numpy()),
            "coords": (("sensor", "dim"), observation.coords.cpu().numpy()),
            "noise_std": (("channel",), observation.noise_std_per_channel().numpy()),
            "channel_index": (("channel",), np.asarray(observation.channels, dtype=np.int64)),
        },
        coords={"channel": list(names)},
        attrs={"grid": observation.grid, "grid_convention": CONVENTIONS[observation.grid],
               "has_channel_names": int(observation.channel_names is not None),
               "funcdiff_version": funcdiff.__version__},
    )


def save_observation(observation: SparseObservation, path: str | os.PathLike) -> Path:
    """Write ``observation`` to netCDF at ``path`` atomically (temporary file in the same folder + os.replace)."""
    with atomic_path(path) as tmp:
        observation_to_dataset(observation).to_netcdf(tmp, engine="netcdf4")
    return Path(path)


def load_observation(path: str | os.PathLike) -> SparseObservation:
    """Read an observation written by :func:`save_observation`; raises ValueError for a malformed file."""
    with xr.open_dataset(path, engine="netcdf4") as ds:
        ds = ds.load()
    missing = [v for v in ("values", "coords", "noise_std", "channel_index") if v not in ds]
    if missing or "grid" not in ds.attrs:
        raise ValueError(f"{path} is not a funcdiff observation file: missing {missing or ['grid attribute']}")
    names = tuple(str(n) for n in ds["channel"].values) if int(ds.attrs.get("has_channel_names", 1)) else None
    std = ds["noise_std"].values.astype(np.float64)
    return SparseObservation(
        coords=torch.from_numpy(ds["coords"].values.astype(np.float64)),
        channels=tuple(int(c) for c in ds["channel_index"].values),
        values=torch.from_numpy(ds["values"].transpose("sample", "channel", "sensor").values.astype(np.float64)),
        noise_std=tuple(float(s) for s in std),
        grid=str(ds.attrs["grid"]),
        channel_names=names,
    )
