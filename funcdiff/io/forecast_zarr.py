"""A forecast written to a zarr store lead by lead, as :mod:`funcdiff.io.forecast_file` writes netCDF.

The store holds the variables, coordinates and attributes of the netCDF file (values as they are, attributes
with the same text), as zarr format 2 with consolidated metadata (what xarray and WeatherBench 2 tooling read).
Each channel is chunked one initial state × one lead per chunk (every member and the whole grid in one chunk), so
writing a rollout step touches only its own chunks and a reader of one lead reads one chunk per initial state.

On a lat-lon grid (ERA5 on the sphere) the names are WeatherBench 2's forecast names::

    <channel>(time, number, prediction_timedelta, latitude, longitude)   float32, physical units
    time(time)                     the initialisation (netCDF ``init_time``; CF "hours since ...")
    prediction_timedelta(...)      the lead time (netCDF ``lead_time``; CF "hours")
    number(number)                 the ensemble member (netCDF ``member``)
    init, init_index, init_frame, completed_leads (time); lead (prediction_timedelta)

On the unit domain (PDE data, where two initial states may share an initial time) the names are the netCDF file's.
:func:`from_wb2` turns a store opened with xarray into the netCDF layout, so ``funcdiff evaluate`` reads both
alike. Zarr is an optional dependency (the ``era5`` extra); :func:`require_zarr` says how to install it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import xarray as xr

from funcdiff.errors import UserError
from funcdiff.io.forecast_file import (FORECAST_DIMS, LATLON, WB2_DIMS, WB2_VARIABLES, ForecastLayout,
                                       coordinate_variables, from_wb2, global_attrs, to_wb2)
from funcdiff.io.netcdf import SPATIAL_NAMES, cf_units

ZARR_SUFFIX = ".zarr"
ZARR_FORMAT = 2


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (its suffix ``.zarr``): the suffix of ``--out`` decides the format."""
    return Path(path).suffix == ZARR_SUFFIX


def require_zarr():
    """The ``zarr`` module (version 3), or a UserError saying how to install it."""
    try:
        import zarr
    except ImportError:
        raise UserError("writing a .zarr forecast needs zarr: pip install 'funcdiff[era5]' (or pip install zarr), "
                        "or write netCDF (.nc)") from None
    if int(zarr.__version__.split(".")[0]) < 3:
        raise UserError(f"writing a .zarr forecast needs zarr >= 3 (installed: {zarr.__version__})")
    return zarr


class ZarrForecast:
    """An open forecast store being written: :meth:`write_leads` as :func:`funcdiff.io.forecast_file.write_leads`."""

    def __init__(self, group) -> None:
        self.group = group
        self._arrays: dict = {}  # opened once: each lookup in the group reads the array's metadata from disk

    def array(self, name: str):
        """The zarr array ``name`` of the store (opened on first use)."""
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def write_leads(self, channels: Sequence[str], init: int, leads: Sequence[int], frames: torch.Tensor) -> None:
        """Write ``frames`` (M, C, len(leads), *S) of initial state ``init`` at ``leads`` (1-based, contiguous):
        whole chunks, then the progress ``completed_leads[init]`` (its own chunk)."""
        first = leads[0] - 1
        values = frames.detach().float().cpu().numpy()
        for c, name in enumerate(channels):
            self.array(name)[init, :, first:first + len(leads)] = values[:, c]
        self.array("completed_leads")[init] = leads[-1]

    def close(self) -> None:
        """Nothing to flush: every write above is on disk when it returns."""


def _names(layout: ForecastLayout) -> tuple[dict, dict]:
    """(variable name, dimension name) maps from the netCDF layout's names to the store's."""
    if layout.grid == "latlon":
        return WB2_VARIABLES, WB2_DIMS
    return {}, {}


def create_forecast_zarr(path: str | os.PathLike, layout: ForecastLayout, attrs: dict) -> ZarrForecast:
    """Create the store at ``path`` (a folder; replaced if present) with every coordinate and the (unfilled,
    NaN) channel arrays; returns it open for writing. Attributes as :func:`create_forecast_file` writes them."""
    zarr = require_zarr()
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(path, mode="w", zarr_format=ZARR_FORMAT)
    var_names, dim_names = _names(layout)
    for name, dims, values, attrs_ in coordinate_variables(layout):
        _array(group, var_names.get(name, name), [dim_names.get(d, d) for d in dims], np.asarray(values), attrs_,
               chunks=(1,) if name == "completed_leads" else None)
    spatial_dims = LATLON if layout.grid == "latlon" else SPATIAL_NAMES[: len(layout.spatial)]
    dims = [dim_names.get(d, d) for d in (*FORECAST_DIMS, *spatial_dims)]
    shape = (len(layout.init_index), layout.members, layout.lead_steps, *layout.spatial)
    # WB2 names: ``init`` (the initial state number) is a coordinate on ``time``, not a variable to score
    coordinates = " ".join(var_names.get(n, n) for n in ("lead", "init_time", "init_index", "init_frame",
                                                         *(("init",) if var_names else ())))
    for i, c in enumerate(layout.channels):
        units = layout.channel_units[i] if layout.channel_units else layout.units
        group.create_array(c, shape=shape, chunks=(1, layout.members, 1, *layout.spatial), dtype="float32",
                           fill_value=np.nan, attributes={
                               **cf_units({"long_name": f"forecast of {c}", "units": units,
                                           "coordinates": coordinates}), "_ARRAY_DIMENSIONS": dims})
    group.attrs.update(_json_safe(global_attrs(layout, attrs)))
    return ZarrForecast(group)


def _array(group, name: str, dims: Sequence[str], values: np.ndarray, attrs: dict,
           chunks: Optional[tuple] = None) -> None:
    values = np.asarray(values, dtype=np.float64 if values.dtype.kind == "f" else np.int32)
    array = group.create_array(name, shape=values.shape, chunks=chunks or values.shape, dtype=values.dtype,
                               fill_value=None, attributes={**attrs, "_ARRAY_DIMENSIONS": list(dims)})
    array[...] = values


def _json_safe(attrs: dict) -> dict:
    """Attribute values as JSON numbers and strings (numpy scalars as Python ones)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}


def open_forecast_zarr(path: str | os.PathLike) -> ZarrForecast:
    """A partial store of :func:`create_forecast_zarr`, open to continue writing."""
    zarr = require_zarr()
    group = zarr.open_group(Path(path), mode="r+", zarr_format=ZARR_FORMAT)
    return ZarrForecast(group)


def finish_forecast_zarr(path: str | os.PathLike) -> None:
    """Consolidate the metadata of a fully written store (one read opens it)."""
    zarr = require_zarr()
    zarr.consolidate_metadata(Path(path), zarr_format=ZARR_FORMAT)


def store_attribute(path: str | os.PathLike, name: str) -> Optional[str]:
    """A global attribute of a store as text (None when the store is unreadable or lacks it)."""
    try:
        zarr = require_zarr()
        value = zarr.open_group(Path(path), mode="r", zarr_format=ZARR_FORMAT).attrs.get(name)
    except Exception:  # noqa: BLE001 - anything unreadable (zarr has its own errors for a folder that is no store)
        return None
    return None if value is None else str(value)


def open_forecast_dataset(path: str | os.PathLike) -> xr.Dataset:
    """A forecast netCDF file or zarr store opened lazily with xarray, in the netCDF layout (:func:`from_wb2`)."""
    path = Path(path)
    if is_zarr_path(path) or path.is_dir():
        require_zarr()
        return from_wb2(xr.open_dataset(path, engine="zarr", chunks=None))
    return xr.open_dataset(path, engine="netcdf4")


def write_dataset_zarr(ds: xr.Dataset, path: str | os.PathLike, channels: Sequence[str]) -> Path:
    """Write a whole forecast dataset (netCDF layout, e.g. a merged batch) to a zarr store atomically: into a
    hidden sibling folder, then renamed. Channels chunked one initial state × one lead per chunk; WB2 names on a
    lat-lon grid. Returns ``path``."""
    require_zarr()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    ds = ds.copy()
    for var in ds.variables.values():  # keep the CF encoding (dtype, fill, time units), drop netCDF storage keys
        var.encoding = {k: v for k, v in var.encoding.items() if k in ("dtype", "_FillValue", "units", "calendar")}
    for c in channels:
        ds[c].encoding["chunks"] = (1, ds.sizes["member"], 1, *ds[c].shape[3:])
    try:
        to_wb2(ds).to_zarr(tmp, mode="w", zarr_format=ZARR_FORMAT, consolidated=True)
        backup = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, backup)
        os.replace(tmp, path)
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def remove_store(path: str | os.PathLike) -> None:
    """Remove a (partial) store folder, or a file left at its name."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
