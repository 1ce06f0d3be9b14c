"""A forecast netCDF file written lead by lead while the rollout runs (CF-style, readable by xarray).

Layout (``funcdiff evaluate`` reads it)::

    <channel>(init_time, member, lead_time, x[, y[, z]])   float32, physical units
    lead_time(lead_time)   float64, lead × dt (model time units)    lead(lead_time)  int, 1..L
    init_time(init_time)   float64, time of the initial state       init_index(init_time), init_frame(init_time) int
    member(member) int;    x, y, z: grid coordinates on the unit domain
    completed_leads(init_time) int: leads written so far (a run in progress; L when complete)
    global attributes: numbers as numbers, lists/dicts as JSON text (``channels``, ``config``, ...)

The dimensions have fixed sizes from the start, so a write is one slice and memory never holds more than one
step's frames. Files are created as ``<out>.partial`` and renamed when complete (see
:meth:`funcdiff.tasks.forecast.Forecast.save`). :func:`read_contents` is the reader's side of the same layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import netCDF4
import numpy as np
import torch
import xarray as xr

import funcdiff
from funcdiff.errors import UserError
from funcdiff.io.atomic import new_file_mode
from funcdiff.io.netcdf import SPATIAL_NAMES

FORECAST_DIMS = ("init_time", "member", "lead_time")
LATLON = ("latitude", "longitude")  # spatial dims of a forecast on the sphere (grid "latlon")


@dataclass(frozen=True)
class ForecastLayout:
    """Sizes and coordinates of a forecast file. ``spatial`` is the grid shape; ``grid`` "periodic" (x_i = i/n)
    or "node" (x_i = i/(n-1)); ``init_*`` one entry per initial state."""

    channels: tuple[str, ...]
    members: int
    lead_steps: int
    dt: float
    spatial: tuple[int, ...]
    grid: str
    init_index: tuple[int, ...]
    init_frame: tuple[int, ...]
    init_time: tuple[float, ...]
    units: str = "1"
    time_units: str = "model time units"
    channel_units: tuple[str, ...] = ()


def attribute(value: Any) -> Any:
    """A netCDF attribute value: numbers and strings as they are (bools as 0/1), anything else as JSON text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    return json.dumps(value, default=str)


def create_forecast_file(path: str | os.PathLike, layout: ForecastLayout, attrs: dict) -> netCDF4.Dataset:
    """Create the file with every dimension, coordinate and (unfilled) variable; returns it open for writing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = netCDF4.Dataset(path, "w", format="NETCDF4")
    n_init = len(layout.init_index)
    spatial_dims = LATLON if layout.grid == "latlon" else SPATIAL_NAMES[: len(layout.spatial)]
    duration = layout.time_units.split(" since ")[0]  # "hours since 1970-01-01" -> lead times in hours
    for name, size in (*zip(FORECAST_DIMS, (n_init, layout.members, layout.lead_steps)),
                       *zip(spatial_dims, layout.spatial)):
        ds.createDimension(name, size)
    _coord(ds, "lead_time", ("lead_time",), np.arange(1, layout.lead_steps + 1) * layout.dt, "f8",
           long_name="lead time", units=duration)
    _coord(ds, "lead", ("lead_time",), np.arange(1, layout.lead_steps + 1), "i8", long_name="forecast step")
    _coord(ds, "init_time", ("init_time",), np.asarray(layout.init_time), "f8", long_name="time of the initial state",
           units=layout.time_units, **({"calendar": "proleptic_gregorian"} if " since " in layout.time_units else {}))
    _coord(ds, "init_index", ("init_time",), np.asarray(layout.init_index), "i8",
           long_name="trajectory of the initial state in its file")
    _coord(ds, "init_frame", ("init_time",), np.asarray(layout.init_frame), "i8",
           long_name="frame of the initial state in its trajectory (lead 0)")
    _coord(ds, "member", ("member",), np.arange(layout.members), "i8", long_name="ensemble member")
    if layout.grid == "latlon":
        from funcdiff.sphere import grid_latitudes, grid_longitudes

        _coord(ds, "latitude", ("latitude",), grid_latitudes(*layout.spatial), "f8", standard_name="latitude",
               long_name="latitude", units="degrees_north")
        _coord(ds, "longitude", ("longitude",), grid_longitudes(layout.spatial[1]), "f8", standard_name="longitude",
               long_name="longitude", units="degrees_east")
    for name, n in zip(spatial_dims if layout.grid != "latlon" else (), layout.spatial):
        values = np.arange(n) / (n if layout.grid == "periodic" else max(n - 1, 1))
        _coord(ds, name, (name,), values, "f8", long_name=f"{name} coordinate (unit domain)", units="1")
    _coord(ds, "completed_leads", ("init_time",), np.zeros(n_init, dtype=np.int64), "i8",
           long_name="leads written so far")
    for i, c in enumerate(layout.channels):
        var = ds.createVariable(c, "f4", (*FORECAST_DIMS, *spatial_dims),
                                chunksizes=(1, 1, 1, *layout.spatial))
        units = layout.channel_units[i] if layout.channel_units else layout.units
        var.setncatts({"long_name": f"forecast of {c}", "units": units,
                       "coordinates": "lead init_index init_frame"})
    ds.setncatts({"Conventions": "CF-1.8", "funcdiff_version": funcdiff.__version__, "grid": layout.grid,
                  "dt": float(layout.dt), "channels": json.dumps(list(layout.channels)),
                  **{k: attribute(v) for k, v in attrs.items()}})
    os.chmod(path, new_file_mode())
    return ds


def _coord(ds: netCDF4.Dataset, name: str, dims: tuple, values: np.ndarray, dtype: str, **attrs: str) -> None:
    var = ds.createVariable(name, dtype, dims)
    var[:] = values
    var.setncatts(attrs)


def write_leads(ds: netCDF4.Dataset, channels: Sequence[str], init: int, leads: Sequence[int],
                frames: torch.Tensor) -> None:
    """Write ``frames`` (M, C, len(leads), *S) of initial state ``init`` at ``leads`` (1-based, contiguous), then
    record the progress and flush to disk."""
    first = leads[0] - 1
    values = frames.detach().float().cpu().numpy()
    for c, name in enumerate(channels):
        ds[name][init, :, first:first + len(leads)] = values[:, c]
    ds["completed_leads"][init] = leads[-1]
    ds.sync()


@dataclass(frozen=True)
class ForecastContents:
    """What a reader (``funcdiff evaluate``) needs to know about a forecast dataset opened with xarray.

    Shapes: init_index, init_frame (B,); lead, lead_time (L,).
    """

    channels: tuple[str, ...]
    spatial: tuple[str, ...]
    init_index: np.ndarray
    init_frame: np.ndarray
    lead: np.ndarray
    lead_time: np.ndarray


def read_contents(forecast: xr.Dataset) -> ForecastContents:
    """Channels, spatial dims and init/lead coordinates of a forecast dataset (UserError if malformed)."""
    channels = tuple(json.loads(forecast.attrs["channels"]) if "channels" in forecast.attrs else
                     [v for v in forecast.data_vars if forecast[v].dims[:3] == FORECAST_DIMS])
    missing = [c for c in channels if c not in forecast.data_vars]
    if not channels or missing:
        raise UserError(f"forecast has no variable for channel(s) {missing or 'any'}; "
                        f"variables: {sorted(forecast.data_vars)}")
    dims = forecast[channels[0]].dims
    spatial = tuple(d for d in dims if d not in FORECAST_DIMS)
    if set(FORECAST_DIMS) - set(dims) or not spatial or (set(spatial) - set(SPATIAL_NAMES) and spatial != LATLON):
        raise UserError(f"forecast variable {channels[0]!r} has dims {dims}; expected "
                        f"{FORECAST_DIMS + ('x', '[y]')}")
    needed = [c for c in ("lead", "init_index", "init_frame") if c not in forecast.coords]
    if needed:
        raise UserError(f"forecast lacks coordinate(s) {needed}: not written by `funcdiff forecast`?")
    lead_time = forecast["lead_time"].values
    if np.issubdtype(lead_time.dtype, np.timedelta64):  # CF "hours" decoded by xarray
        lead_time = lead_time / np.timedelta64(1, "h")
    return ForecastContents(channels, spatial, forecast["init_index"].values.astype(np.int64),
                          forecast["init_frame"].values.astype(np.int64), forecast["lead"].values.astype(np.int64),
                          lead_time.astype(np.float64))
