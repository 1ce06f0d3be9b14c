"""A forecast netCDF file written lead by lead while the rollout runs (CF-style, readable by xarray).

Layout (``funcdiff evaluate`` reads it; CF-1.8, checked by the IOOS compliance checker in the tests)::

    <channel>(init, member, lead_time, x[, y[, z]])   float32, physical units
    init(init)             int32, 0..B-1: one entry per initial state (unique, so ``ds.sel(init=k)`` works)
    init_time(init)        float64, time of the initial state      init_index(init) int32: trajectory in its file
    init_frame(init)       int32, frame of the initial state in its trajectory (lead 0)
    lead_time(lead_time)   float64, lead × dt                      lead(lead_time) int32, 1..L
    member(member) int32;  x, y, z: grid coordinates on the unit domain (units "1")
    completed_leads(init)  int32: leads written so far (a run in progress; L when complete)
    global attributes: Conventions, title, history; numbers as numbers, lists/dicts as JSON text (``channels``, ...)

Times. On the unit domain (PDE data) times are dimensionless: ``lead_time`` and ``init_time`` have units ``"1"``
and say "(model time units)" in their ``long_name``. Data with CF times (ERA5 on the sphere: ``time_units`` such
as ``"hours since 1970-01-01"``) give ``init_time`` those units (standard_name ``forecast_reference_time``, decoded
to datetimes by xarray) and ``lead_time`` the duration ``"hours"`` (standard_name ``forecast_period``, decoded to
timedeltas). This is WeatherBench 2's forecast layout under other names: WB2 ``time`` (the initialisation) is our
``init_time`` on the ``init`` dimension, WB2 ``prediction_timedelta`` is ``lead_time``, WB2 ``number`` (ensemble
member) is ``member``; ``ds.swap_dims(init="init_time").rename(init_time="time", lead_time="prediction_timedelta")``
gives WB2's names when the initial times are unique. Files of funcdiff <= 0.1 had an ``init_time`` dimension
(not unique when two trajectories start at the same frame); :func:`open_layout` reads both.

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
from funcdiff.io.netcdf import SPATIAL_NAMES, cf_units
from funcdiff.io.provenance import cf_global_attrs

FORECAST_DIMS = ("init", "member", "lead_time")
OLD_INIT_DIM = "init_time"  # the first dimension of forecast files of funcdiff <= 0.1
LATLON = ("latitude", "longitude")  # spatial dims of a forecast on the sphere (grid "latlon")
# WeatherBench 2's names of a forecast zarr store on the sphere (funcdiff.io.forecast_zarr): variables and dims
WB2_VARIABLES = {"init_time": "time", "lead_time": "prediction_timedelta", "member": "number"}
WB2_DIMS = {"init": "time", "lead_time": "prediction_timedelta", "member": "number"}


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
    spatial_dims = LATLON if layout.grid == "latlon" else SPATIAL_NAMES[: len(layout.spatial)]
    for name, size in (*zip(FORECAST_DIMS, (len(layout.init_index), layout.members, layout.lead_steps)),
                       *zip(spatial_dims, layout.spatial)):
        ds.createDimension(name, size)
    for name, dims, values, attrs_ in coordinate_variables(layout):
        _coord(ds, name, dims, values, "f8" if values.dtype.kind == "f" else "i4", **attrs_)
    for i, c in enumerate(layout.channels):
        var = ds.createVariable(c, "f4", (*FORECAST_DIMS, *spatial_dims),
                                chunksizes=(1, 1, 1, *layout.spatial))
        units = layout.channel_units[i] if layout.channel_units else layout.units
        var.setncatts(cf_units({"long_name": f"forecast of {c}", "units": units,
                                "coordinates": "lead init_time init_index init_frame"}))
    ds.setncatts(global_attrs(layout, attrs))
    os.chmod(path, new_file_mode())
    return ds


def global_attrs(layout: ForecastLayout, attrs: dict) -> dict:
    """The global attributes of a forecast file or store: CF-1.8 (title, history, Conventions), the grid, dt,
    the channels as JSON text and ``attrs`` (:func:`attribute`: numbers and strings as they are, else JSON)."""
    attrs = dict(attrs)
    globals_ = cf_global_attrs(str(attrs.pop("title", "")) or "funcdiff ensemble forecast",
                               history=str(attrs.pop("history", "")))
    return {**globals_, "funcdiff_version": funcdiff.__version__, "grid": layout.grid,
            "dt": float(layout.dt), "channels": json.dumps(list(layout.channels)),
            **{k: attribute(v) for k, v in attrs.items()}}


def coordinate_variables(layout: ForecastLayout) -> list[tuple[str, tuple, np.ndarray, dict]]:
    """(name, dims, values, attributes) of every coordinate of the netCDF layout, typed as the file stores them."""
    n_init, leads = len(layout.init_index), np.arange(1, layout.lead_steps + 1)
    lead_attrs, init_attrs = time_attrs(layout.time_units)
    out = [("lead_time", ("lead_time",), leads * layout.dt, lead_attrs),
           ("lead", ("lead_time",), leads.astype(np.int32), {"long_name": "forecast step"}),
           ("init", ("init",), np.arange(n_init, dtype=np.int32), {"long_name": "initial state number"}),
           ("init_time", ("init",), np.asarray(layout.init_time, dtype=np.float64), init_attrs),
           ("init_index", ("init",), np.asarray(layout.init_index, dtype=np.int32),
            {"long_name": "trajectory of the initial state in its file"}),
           ("init_frame", ("init",), np.asarray(layout.init_frame, dtype=np.int32),
            {"long_name": "frame of the initial state in its trajectory (lead 0)"}),
           ("member", ("member",), np.arange(layout.members, dtype=np.int32), {"long_name": "ensemble member"})]
    if layout.grid == "latlon":
        from funcdiff.sphere import grid_latitudes, grid_longitudes

        out += [("latitude", ("latitude",), grid_latitudes(*layout.spatial),
                 {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"}),
                ("longitude", ("longitude",), grid_longitudes(layout.spatial[1]),
                 {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"})]
    else:
        for name, n in zip(SPATIAL_NAMES, layout.spatial):
            values = np.arange(n) / (n if layout.grid == "periodic" else max(n - 1, 1))
            out.append((name, (name,), values, {"long_name": f"{name} coordinate (unit domain)", "units": "1"}))
    out.append(("completed_leads", ("init",), np.zeros(n_init, dtype=np.int32), {"long_name": "leads written so far"}))
    return out


def time_attrs(time_units: str) -> tuple[dict, dict]:
    """CF attributes of ``lead_time`` and ``init_time`` for a forecaster's ``time_units``: CF times
    (``"hours since 1970-01-01"``: a duration in hours and a reference time) or a unit of the model's own
    (``"model time units"``: dimensionless, units "1", the unit named in the long_name)."""
    if " since " in time_units:
        duration = time_units.split(" since ")[0].strip()
        return ({"standard_name": "forecast_period", "long_name": "lead time", "units": duration},
                {"standard_name": "forecast_reference_time", "long_name": "time of the initial state",
                 "units": time_units, "calendar": "proleptic_gregorian"})
    return (cf_units({"long_name": "lead time", "units": time_units}),
            cf_units({"long_name": "time of the initial state", "units": time_units}))


def open_layout(forecast: xr.Dataset) -> xr.Dataset:
    """``forecast`` in the current layout: a file of funcdiff <= 0.1 (dimension ``init_time``) gets the ``init``
    dimension, ``init_time`` becoming a coordinate on it; a zarr store with WeatherBench 2's names gets the
    netCDF names (:func:`from_wb2`); a current file is returned as it is."""
    forecast = from_wb2(forecast)
    if OLD_INIT_DIM in forecast.dims and "init" not in forecast.dims:
        forecast = forecast.swap_dims({OLD_INIT_DIM: "init"})
        forecast = forecast.assign_coords(init=np.arange(forecast.sizes["init"], dtype=np.int32))
    return forecast


def from_wb2(ds: xr.Dataset) -> xr.Dataset:
    """A dataset with WeatherBench 2's forecast names (``time``, ``prediction_timedelta``, ``number``) in the
    netCDF layout's (``init`` with ``init_time`` on it, ``lead_time``, ``member``); others unchanged."""
    if "prediction_timedelta" not in ds.dims or "init" not in ds.variables:
        return ds
    ds = ds.swap_dims(time="init")
    return ds.rename({k: v for v, k in WB2_VARIABLES.items() if k in ds.variables})


def to_wb2(ds: xr.Dataset) -> xr.Dataset:
    """Inverse of :func:`from_wb2` for a dataset on a lat-lon grid; others unchanged."""
    if "lead_time" not in ds.dims or not set(LATLON) <= set(ds.dims):
        return ds
    ds = ds.swap_dims(init="init_time")
    return ds.rename({k: v for k, v in WB2_VARIABLES.items() if k in ds.variables})


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
    """Channels, spatial dims and init/lead coordinates of a forecast dataset in the current layout (pass a file
    of funcdiff <= 0.1 through :func:`open_layout` first; UserError if malformed)."""
    forecast = open_layout(forecast)
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
