"""ERA5-like files from a physical model, without downloads: the shallow-water equations on the sphere
(:mod:`funcdiff.pde.shallow_water`) written in the two layouts :func:`funcdiff.data.era5.read_era5` reads.

The layer's geopotential, eastward and northward wind become the pressure-level variables ``z``, ``u``, ``v`` at
500 hPa (channels ``z500``, ``u500``, ``v500``): a one-layer stand-in for the mid-troposphere, with ERA5's names,
units, time step and grid conventions, so that reading, regridding, training, forecasting and scoring run end to
end on data nobody typed in. Nothing here claims to be the real atmosphere.

* **CDS netCDF** (``<out>/cds/era5_swe_500hPa_<YYYY-MM>.nc``, one file per month as CDS requests are split):
  ``valid_time``, ``pressure_level`` (float hPa), latitude from 90 to -90, short names, an ``expver`` coordinate
  along ``valid_time`` ("0001") and a scalar ``number``.
* **WeatherBench 2 zarr** (``<out>/wb2.zarr``): long names (``geopotential``, ``u_component_of_wind``,
  ``v_component_of_wind``), dims ``(time, level, longitude, latitude)`` with latitude ascending.

Both are written atomically (a hidden sibling, renamed when complete); the grid has pole rows (W = 2 (H - 1),
like ERA5's native 0.25° grid), and ``funcdiff data era5 --grid 5.625deg`` regrids it conservatively to the WB2
32×64 grid.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from funcdiff.data.era5 import VARIABLES, _replace_directory
from funcdiff.errors import UserError
from funcdiff.io.netcdf import write_netcdf
from funcdiff.pde.shallow_water import ShallowWaterRun, grid_coordinates, shallow_water_frames

LEVEL = 500
SHORT_NAMES = ("z", "u", "v")
CHANNELS = tuple(f"{name}{LEVEL}" for name in SHORT_NAMES)
LAYOUTS = ("cds", "wb2", "both")


def simulate(run: ShallowWaterRun, start: str, frames: int, *, progress: bool = False) -> xr.Dataset:
    """The run as a Dataset in funcdiff's normalised ERA5 layout: ``z``, ``u``, ``v`` (time, level, latitude,
    longitude), latitude ascending, ``time`` every ``run.step_hours`` from ``start``, with units attributes.

    Shapes: each variable (frames, 1, H, W) float32.
    """
    if frames < 1:
        raise UserError(f"need at least one frame, got {frames}")
    lat, lon = grid_coordinates(run)
    data = np.empty((frames, 3, len(lat), len(lon)), dtype=np.float32)
    for k, frame in enumerate(tqdm(shallow_water_frames(run, frames), total=frames, desc="shallow water",
                                   unit="frame", disable=not progress)):
        data[k] = frame
    times = pd.date_range(pd.Timestamp(start), periods=frames, freq=pd.Timedelta(hours=run.step_hours))
    dims = ("time", "level", "latitude", "longitude")
    variables = {name: (dims, data[:, i:i + 1], {"units": VARIABLES[name].units,
                                                 "long_name": VARIABLES[name].long.replace("_", " ")})
                 for i, name in enumerate(SHORT_NAMES)}
    attrs = {"source": "funcdiff shallow-water ERA5-like data (torch-harmonics ShallowWaterSolver)",
             "seed": run.seed, "mach": run.mach, "mean_depth_m": run.mean_depth, "spinup_days": run.spinup_days,
             "solver_dt_s": run.solver_dt}
    return xr.Dataset(variables, coords={"time": times, "level": [LEVEL], "latitude": lat, "longitude": lon},
                      attrs=attrs)


CF_STANDARD_NAMES = {"z": "geopotential", "u": "eastward_wind", "v": "northward_wind"}
CDS_COORD_ATTRS = {  # as in CDS files, which are CF (CDS writes "CF-1.7"; ours pass the CF-1.8 checker)
    "valid_time": {"standard_name": "time", "long_name": "time"},
    "pressure_level": {"standard_name": "air_pressure", "long_name": "pressure", "units": "hPa", "positive": "down",
                       "stored_direction": "decreasing"},
    "latitude": {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"},
    "longitude": {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"},
    "expver": {"long_name": "model experiment version"},
    "number": {"standard_name": "realization", "long_name": "ensemble member numerical id", "units": "1"},
}


def to_cds(ds: xr.Dataset) -> xr.Dataset:
    """The CDS 2024 layout of a normalised dataset (see the module docstring), with CF coordinate attributes."""
    out = ds.rename(time="valid_time", level="pressure_level").isel(latitude=slice(None, None, -1))
    out = out.assign_coords(pressure_level=out["pressure_level"].astype(np.float64),
                            expver=("valid_time", np.full(out.sizes["valid_time"], "0001")), number=np.int32(0))
    for name in out.data_vars:
        out[name].attrs["units"] = re.sub(r"(-?\d+)", r"**\1", out[name].attrs["units"])  # m2 s-2 -> m**2 s**-2
        if name in CF_STANDARD_NAMES:
            out[name].attrs["standard_name"] = CF_STANDARD_NAMES[name]
    for name, attrs in CDS_COORD_ATTRS.items():
        if name in out.variables:
            out[name].attrs.update(attrs)
    out.attrs.setdefault("title", "funcdiff shallow-water ERA5-like data, CDS netCDF layout")
    return out


def to_wb2(ds: xr.Dataset) -> xr.Dataset:
    """The WeatherBench 2 layout of a normalised dataset: long names, dims (time, level, longitude, latitude)."""
    out = ds.rename({name: VARIABLES[name].long for name in ds.data_vars})
    return out.transpose("time", "level", "longitude", "latitude")


def write_cds(ds: xr.Dataset, folder: Path, overwrite: bool = False) -> list[Path]:
    """One netCDF file per calendar month under ``folder``, each written atomically. Returns the paths."""
    paths = []
    months = ds.indexes["time"].to_period("M")
    for month in months.unique():
        path = folder / f"era5_swe_{LEVEL}hPa_{month}.nc"
        if path.exists() and not overwrite:
            raise UserError(f"{path} exists (use overwrite=True)")
        part = to_cds(ds.isel(time=np.flatnonzero(months == month)))
        write_netcdf(part, path)  # atomic, CF-1.8 encoding (no fill value on coordinates, history)
        paths.append(path)
    return paths


def write_wb2(ds: xr.Dataset, path: Path, overwrite: bool = False) -> Path:
    """A zarr store (format 2, consolidated) in the WB2 layout, written beside ``path`` and renamed into place."""
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists (use overwrite=True)")
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        store = to_wb2(ds)
        for variable in store.variables.values():
            variable.encoding = {}
        store.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True)
        _replace_directory(tmp, path, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_shallow_water_era5(out: str | os.PathLike, run: ShallowWaterRun, *, start: str = "2000-01-01",
                             days: float = 30.0, layout: str = "both", overwrite: bool = False,
                             progress: bool = False) -> dict[str, Sequence[Path] | Path]:
    """Simulate ``days`` days from ``start`` (6-hourly by default) and write the requested layouts under ``out``.

    Returns ``{"cds": [files...], "wb2": store}`` for the layouts written.
    """
    if layout not in LAYOUTS:
        raise UserError(f"layout={layout!r} is not one of {', '.join(LAYOUTS)}")
    frames = int(round(days * 24 / run.step_hours)) + 1
    ds = simulate(run, start, frames, progress=progress)
    out = Path(out)
    written: dict[str, Sequence[Path] | Path] = {}
    if layout in ("cds", "both"):
        written["cds"] = write_cds(ds, out / "cds", overwrite)
    if layout in ("wb2", "both"):
        written["wb2"] = write_wb2(ds, out / "wb2.zarr", overwrite)
    return written
