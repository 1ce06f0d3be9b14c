"""Outputs as netCDF through xarray: fields with coordinates and CF-style attributes, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
import xarray as xr

import funcdiff
from funcdiff.io.atomic import atomic_path

SPATIAL_NAMES = ("x", "y", "z")
LATLON = ("latitude", "longitude")  # spatial dims of fields on the sphere (grid "latlon", degrees)


GRIDS = ("periodic", "node", "latlon")  # latlon: dims (latitude, longitude) in degrees, latitude ascending
GRID_ALIASES = {"nodes": "node"}  # spelling of funcdiff <= 0.1
LONG_NAMES = {"a": "PDE coefficient (input) a", "u": "PDE solution u", "w0": "vorticity at t = 0",
              "wT": "vorticity at the final time"}
SUFFIX_NAMES = {"mean": "posterior mean of", "std": "posterior standard deviation of", "truth": "ground truth of",
                "error": "posterior mean minus truth of", "interpolated": "piecewise-linear interpolation of"}


def canonical_grid(grid: str) -> str:
    """``"periodic"`` or ``"node"`` (``"nodes"`` accepted); ValueError for anything else."""
    grid = GRID_ALIASES.get(grid, grid)
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {list(GRIDS)}, got {grid!r}")
    return grid


def _attr_value(value):
    """netCDF attributes hold numbers, strings and 1-D numeric arrays: numbers stay numbers (booleans become
    0/1), flat lists of numbers become arrays, anything else (dicts, None, nested lists) is stored as JSON text."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value):
        return np.asarray(value)
    return json.dumps(value, default=str)


def variable_attrs(name: str, units: str = "1") -> dict:
    """CF ``long_name`` and ``units`` of a channel (``"u"``) or a derived variable (``"u_mean"``); funcdiff's
    problems are non-dimensional on the unit domain, so the units are ``"1"``."""
    base, _, suffix = name.rpartition("_")
    if suffix in SUFFIX_NAMES and base:
        return {"long_name": f"{SUFFIX_NAMES[suffix]} {LONG_NAMES.get(base, base)}", "units": units}
    return {"long_name": LONG_NAMES.get(name, name), "units": units}


def add_field(ds: xr.Dataset, name: str, field: torch.Tensor, like: str) -> xr.Dataset:
    """Add one spatial field (*S) as variable ``name`` on the spatial dims of variable ``like``, with
    :func:`variable_attrs`. Returns ``ds`` (modified in place)."""
    ds[name] = xr.DataArray(field.detach().float().cpu().numpy(), dims=ds[like].dims[1:], attrs=variable_attrs(name))
    return ds


def fields_to_dataset(
    fields: torch.Tensor,
    channel_names: Sequence[str],
    attrs: Optional[Mapping] = None,
    *,
    grid: str = "periodic",
    sample_dim: str = "sample",
    extra: Optional[Mapping[str, torch.Tensor]] = None,
) -> xr.Dataset:
    """Wrap a field batch as an ``xarray.Dataset`` with one variable per channel.

    Args:
        fields: (B, C, *S) with 1 ≤ len(S) ≤ 3.
        channel_names: C names; each becomes a data variable of dims (sample, x[, y[, z]]).
        attrs: global attributes (numbers stay numbers, lists of numbers become arrays, others JSON text).
        grid: "periodic" (x_i = i/n on [0, 1)) or "node" (x_i = i/(n-1) on [0, 1], Dirichlet problems);
            "nodes" is accepted for "node"; "latlon": fields (B, C, H, W) on the lat-lon grid of
            :mod:`funcdiff.sphere`, dims ``latitude``/``longitude`` in degrees (CF ``degrees_north``/``_east``).
        extra: further (B, C, *S) tensors stored as ``<channel>_<key>`` (e.g. posterior ``std``).
    """
    if fields.ndim < 3 or fields.ndim > 5:
        raise ValueError(f"fields must be (B, C, *S) with 1-3 spatial dims, got shape {tuple(fields.shape)}")
    if len(channel_names) != fields.shape[1]:
        raise ValueError(f"{len(channel_names)} channel names for {fields.shape[1]} channels")
    grid = canonical_grid(grid)
    if grid == "latlon" and fields.ndim != 4:
        raise ValueError(f"lat-lon fields must be (B, C, latitude, longitude), got shape {tuple(fields.shape)}")
    dims = (sample_dim, *(LATLON if grid == "latlon" else SPATIAL_NAMES[: fields.ndim - 2]))
    coords = {sample_dim: np.arange(fields.shape[0])}
    for name, n in zip(dims[1:], fields.shape[2:]):
        coords[name] = np.arange(n) / (n if grid == "periodic" else max(n - 1, 1))
    if grid == "latlon":
        from funcdiff.sphere import grid_latitudes, grid_longitudes

        coords.update(latitude=grid_latitudes(*fields.shape[2:]), longitude=grid_longitudes(fields.shape[3]))
    data_vars = {}
    tensors = {"": fields, **{f"_{k}": v for k, v in (extra or {}).items()}}
    for suffix, tensor in tensors.items():
        array = tensor.detach().float().cpu().numpy()
        for c, name in enumerate(channel_names):
            data_vars[f"{name}{suffix}"] = xr.DataArray(array[:, c], dims=dims, attrs=variable_attrs(f"{name}{suffix}"))
    ds = xr.Dataset(data_vars, coords=coords)
    ds[sample_dim].attrs.update(long_name="sample number")
    for name in dims[1:]:
        if grid == "latlon":
            ds[name].attrs.update(standard_name=name, long_name=name,
                                  units="degrees_north" if name == "latitude" else "degrees_east")
        else:
            ds[name].attrs.update(units="1", long_name=f"{name} coordinate (unit domain)")
    ds.attrs.update({"funcdiff_version": funcdiff.__version__, "grid": grid,
                     "Conventions": "CF-1.8", **{k: _attr_value(v) for k, v in (attrs or {}).items()}})
    return ds


PLACEHOLDER_UNITS = ("model time units", "channel units")  # funcdiff <= 0.1: not UDUNITS; now "1" + long_name
INT32 = np.iinfo(np.int32)


def cf_units(attrs: Mapping) -> dict:
    """``attrs`` with a placeholder unit (``"model time units"``) replaced by ``"1"``, the placeholder moved into
    the ``long_name`` ("lead time (model time units)"): funcdiff's PDE data are dimensionless."""
    attrs = dict(attrs)
    units = attrs.get("units")
    if isinstance(units, str) and units in PLACEHOLDER_UNITS:
        attrs["units"] = "1"
        name = str(attrs.get("long_name", "")).strip()
        attrs["long_name"] = f"{name} ({units})" if name else units
    return attrs


def cf_dataset(ds: xr.Dataset, title: Optional[str] = None) -> xr.Dataset:
    """A copy of ``ds`` encoded to pass the CF-1.8 compliance checker (nothing is computed; values are unchanged):

    * 64-bit integers are written as int32 (CF has no 64-bit type) when they fit, booleans as int8;
    * coordinate and integer variables get no ``_FillValue`` (CF §2.5.1: coordinates have no missing values);
    * string labels of a dimension (``channel``) are written as char arrays (CF coordinate variables are
      numeric; xarray reads the labels back unchanged);
    * a variable without ``long_name``/``standard_name`` gets its name as ``long_name``; placeholder units
      become ``"1"`` (:func:`cf_units`);
    * global ``Conventions``, ``title`` (kept if present, else ``title`` or "funcdiff output") and ``history``
      (this program's line above any history ``ds`` carries, :mod:`funcdiff.io.provenance`).
    """
    from funcdiff.io.provenance import CONVENTIONS, add_history

    ds = ds.copy()
    for name, var in ds.variables.items():
        encoding = dict(var.encoding)
        attrs = cf_units(var.attrs)
        if "long_name" not in attrs and "standard_name" not in attrs:
            attrs["long_name"] = str(name)
        dtype = np.dtype(var.dtype)
        if dtype == np.bool_:
            encoding["dtype"] = "int8"
        elif dtype.kind in "iu" and dtype.itemsize == 8:
            values = np.asarray(var.values)
            fits = not values.size or (INT32.min <= int(values.min()) and int(values.max()) <= INT32.max)
            if fits:
                encoding["dtype"] = "int32"
        elif dtype.kind in "OUS" and name in ds.dims:  # a string dimension coordinate: CF's are numeric
            encoding["dtype"] = "S1"
        if name in ds.coords or dtype.kind in "iubOUS":
            encoding["_FillValue"] = None
        if dtype.kind in "mM":  # datetimes/timedeltas: CF numbers (double; xarray's default is int64)
            for key in ("units", "calendar"):
                if key in attrs:
                    encoding.setdefault(key, attrs.pop(key))
            encoding.setdefault("dtype", "float64")
        var.encoding, var.attrs = encoding, attrs
    attrs = dict(ds.attrs)
    attrs["Conventions"] = CONVENTIONS
    if not str(attrs.get("title", "")).strip():
        attrs["title"] = title or "funcdiff output"
    attrs["history"] = add_history(str(attrs.get("history", "")))
    ds.attrs = attrs
    return ds


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike, title: Optional[str] = None) -> Path:
    """Write ``ds`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``), encoded for
    CF-1.8 by :func:`cf_dataset` (``title``: the global title if ``ds`` has none)."""
    ds = cf_dataset(ds, title)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    return Path(path)


def dataset_to_fields(ds: xr.Dataset, channel_names: Sequence[str]) -> torch.Tensor:
    """Inverse of :func:`fields_to_dataset`: stack the named variables into (B, C, *S) float32."""
    missing = [name for name in channel_names if name not in ds.data_vars]
    if missing:
        raise ValueError(f"netCDF dataset lacks variables {missing}; it has {sorted(ds.data_vars)}")
    return torch.stack([torch.as_tensor(ds[name].values, dtype=torch.float32) for name in channel_names], dim=1)
