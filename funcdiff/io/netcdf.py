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


def _attr_value(value):
    """netCDF attributes hold numbers, strings and 1-D arrays; anything else is stored as JSON text."""
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, bool):
        return int(value)
    return json.dumps(value, default=str)


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
        attrs: global attributes (non-scalar values are stored as JSON strings).
        grid: "periodic" (x_i = i/n on [0, 1)) or "nodes" (x_i = i/(n-1) on [0, 1], Dirichlet problems).
        extra: further (B, C, *S) tensors stored as ``<channel>_<key>`` (e.g. posterior ``std``).
    """
    if fields.ndim < 3 or fields.ndim > 5:
        raise ValueError(f"fields must be (B, C, *S) with 1-3 spatial dims, got shape {tuple(fields.shape)}")
    if len(channel_names) != fields.shape[1]:
        raise ValueError(f"{len(channel_names)} channel names for {fields.shape[1]} channels")
    if grid not in ("periodic", "nodes"):
        raise ValueError(f"grid must be 'periodic' or 'nodes', got {grid!r}")
    dims = (sample_dim, *SPATIAL_NAMES[: fields.ndim - 2])
    coords = {sample_dim: np.arange(fields.shape[0])}
    for name, n in zip(dims[1:], fields.shape[2:]):
        coords[name] = np.arange(n) / (n if grid == "periodic" else max(n - 1, 1))
    data_vars = {}
    tensors = {"": fields, **{f"_{k}": v for k, v in (extra or {}).items()}}
    for suffix, tensor in tensors.items():
        array = tensor.detach().float().cpu().numpy()
        for c, name in enumerate(channel_names):
            data_vars[f"{name}{suffix}"] = xr.DataArray(array[:, c], dims=dims, attrs={"long_name": f"{name}{suffix}"})
    ds = xr.Dataset(data_vars, coords=coords)
    for name in dims[1:]:
        ds[name].attrs.update(units="1", long_name=f"{name} coordinate (unit domain)")
    ds.attrs.update({"funcdiff_version": funcdiff.__version__, "grid": grid,
                     "Conventions": "CF-1.8", **{k: _attr_value(v) for k, v in (attrs or {}).items()}})
    return ds


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    return Path(path)


def dataset_to_fields(ds: xr.Dataset, channel_names: Sequence[str]) -> torch.Tensor:
    """Inverse of :func:`fields_to_dataset`: stack the named variables into (B, C, *S) float32."""
    missing = [name for name in channel_names if name not in ds.data_vars]
    if missing:
        raise ValueError(f"netCDF dataset lacks variables {missing}; it has {sorted(ds.data_vars)}")
    return torch.stack([torch.as_tensor(ds[name].values, dtype=torch.float32) for name in channel_names], dim=1)
