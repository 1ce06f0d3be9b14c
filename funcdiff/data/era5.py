"""ERA5 readers: CDS netCDF and WeatherBench 2 / ARCO zarr, normalised to one lazy layout; conservative
regridding to a coarser regular lat-lon grid; per-channel statistics of states and 6-hour tendencies.

Layouts read (any mix, one file or many):

* **CDS netCDF** as the Copernicus Climate Data Store delivers it since 2024: ``valid_time`` (not ``time``),
  ``pressure_level`` (hPa), latitude from 90 to -90, short names (``z``, ``t``, ``u``, ``v``, ``q``, ``t2m``,
  ``u10``, ``v10``, ``msl``, ``tp``), an ``expver`` coordinate along ``valid_time`` (ERA5 "0001" / ERA5T "0005")
  and a scalar ``number``; one file per variable group or month. Older CDS files with an ``expver``
  *dimension* (ERA5 and ERA5T side by side, NaN where the other holds the value) are merged.
* **WeatherBench 2 / ARCO-ERA5 zarr** (Rasp et al. 2024): long names (``geopotential``, ``temperature``,
  ``2m_temperature``, ``10m_u_component_of_wind``, ...), ``time``/``level``/``latitude``/``longitude``, in any
  dimension order (WB2 stores (time, level, longitude, latitude)).

Both become a dask-backed ``xarray.DataArray`` named ``state`` with dims ``(time, channel, latitude,
longitude)``: latitude ascending (degrees north), longitude ascending in [0, 360) (degrees east), channels
named ``<short name><level in hPa>`` for pressure-level variables (``z500``, ``t850``) and by the short name
for single-level ones (``t2m``, ``u10``: a single-level name wins over "u at 10 hPa"), with a ``units``
coordinate along ``channel``. Nothing is read until the caller computes.

Shapes and units: values are those of ERA5 (z in m² s⁻², t in K, winds in m s⁻¹, q in kg kg⁻¹, msl in Pa,
tp in m); the time coordinate is ``datetime64``.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import xarray as xr

from funcdiff.errors import UserError
from funcdiff.sphere import cell_area_weights, latitude_bounds  # noqa: F401 (public here too)

DIMS = ("time", "channel", "latitude", "longitude")
SPATIAL = ("time", "latitude", "longitude")
TENDENCY_INTERVAL = pd.Timedelta("6h")
DEFAULT_CHUNKS: dict[str, Any] = {"time": "auto", "level": 1}
Sources = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


@dataclass(frozen=True)
class Variable:
    """One ERA5 variable: CDS short name (also the channel prefix), WB2 long name, units, on pressure levels?"""

    short: str
    long: str
    units: str
    levels: bool


VARIABLES: dict[str, Variable] = {v.short: v for v in (
    Variable("z", "geopotential", "m2 s-2", True),
    Variable("t", "temperature", "K", True),
    Variable("u", "u_component_of_wind", "m s-1", True),
    Variable("v", "v_component_of_wind", "m s-1", True),
    Variable("q", "specific_humidity", "kg kg-1", True),
    Variable("t2m", "2m_temperature", "K", False),
    Variable("u10", "10m_u_component_of_wind", "m s-1", False),
    Variable("v10", "10m_v_component_of_wind", "m s-1", False),
    Variable("msl", "mean_sea_level_pressure", "Pa", False),
    Variable("tp", "total_precipitation", "m", False),
)}
RENAME = {"valid_time": "time", "pressure_level": "level", "lat": "latitude", "lon": "longitude",
          **{v.long: v.short for v in VARIABLES.values()}}


@dataclass(frozen=True)
class Channel:
    """A requested channel: ``z500`` -> Channel("z500", "z", 500); ``t2m`` -> Channel("t2m", "t2m", None)."""

    name: str
    variable: str
    level: Optional[int]


# --- channel names ---------------------------------------------------------------------------------------


def parse_channel(name: str) -> Channel:
    """``z500`` (pressure-level variable + level in hPa) or ``t2m`` (single-level variable) -> Channel."""
    var = VARIABLES.get(name)
    if var is not None and not var.levels:
        return Channel(name, name, None)
    match = re.fullmatch(r"([a-z]+)(\d+)", name)
    if match and match[1] in VARIABLES and VARIABLES[match[1]].levels:
        return Channel(name, match[1], int(match[2]))
    single = [v.short for v in VARIABLES.values() if not v.levels]
    levels = [v.short for v in VARIABLES.values() if v.levels]
    raise UserError(f"unknown variable {name!r}: use a single-level name ({', '.join(single)}) or a "
                    f"pressure-level name with its level in hPa ({', '.join(levels)}; e.g. z500)")


def parse_channels(spec: Union[str, Sequence[str]]) -> list[Channel]:
    """``"z500,t850,t2m"`` (or a list of names) -> channels in that order; duplicates and empty lists rejected."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if not names:
        raise UserError("no variables requested (e.g. variables='z500,t850,t2m')")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"variables requested twice: {', '.join(duplicates)}")
    return [parse_channel(n) for n in names]


def available_channels(ds: xr.Dataset) -> list[str]:
    """Channel names a normalised dataset can give (``z500``, ``t2m``; other variables by their own name)."""
    names: list[str] = []
    for name in ds.data_vars:
        var = VARIABLES.get(str(name))
        if var is not None and var.levels and "level" in ds[name].dims:
            names += [f"{name}{_level_name(level)}" for level in ds["level"].values]
        else:
            names.append(str(name))
    return names


def _level_name(level: float) -> str:
    return f"{int(level)}" if float(level).is_integer() else f"{level:g}"


# --- opening and normalising ----------------------------------------------------------------------------


def expand_sources(sources: Sources) -> list[Path]:
    """Paths from a path, a glob pattern or a list of them, sorted per pattern; FileNotFoundError if none."""
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    paths: list[Path] = []
    for item in items:
        text = os.fspath(item)
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        if not matches or not Path(matches[0]).exists():
            raise FileNotFoundError(f"no ERA5 file or zarr store at {text}")
        paths += [Path(m) for m in matches]
    return paths


def _is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or (path.is_dir() and any((path / f).exists() for f in
                                                            (".zgroup", ".zmetadata", "zarr.json")))


def open_era5(sources: Sources, *, chunks: Optional[Mapping[str, Any]] = None) -> xr.Dataset:
    """Open ERA5 files or stores lazily (dask) and normalise them to one dataset.

    Each source is opened without reading data, renamed to short names and ``time``/``level``, chunked with
    ``chunks`` (canonical names; default ``{"time": "auto", "level": 1}``), its ERA5/ERA5T ``expver`` merged,
    a one-member ``number`` dropped, latitude sorted ascending and longitude put in [0, 360) ascending.
    Several sources (variable groups, months) are combined by their coordinates.

    Shapes: variables (time, [level,] latitude, longitude), only those with a time dimension.
    """
    chunks = dict(DEFAULT_CHUNKS if chunks is None else chunks)
    parts = [_open_one(path, chunks) for path in expand_sources(sources)]
    if len(parts) == 1:
        return parts[0]
    try:
        return xr.combine_by_coords(parts, join="outer", compat="no_conflicts", data_vars="all",
                                    coords="different", combine_attrs="drop_conflicts")
    except ValueError as err:
        raise UserError(f"ERA5 sources do not combine (overlapping times with different values, or "
                        f"different grids?): {err}") from err


def _open_one(path: Path, chunks: Mapping[str, Any]) -> xr.Dataset:
    """One file or store, normalised (see :func:`open_era5`)."""
    ds = xr.open_dataset(path, engine="zarr" if _is_zarr(path) else None, chunks=None)
    ds = ds.rename({k: v for k, v in RENAME.items() if k in ds.variables})
    for dim in ("time", "latitude", "longitude"):
        if dim not in ds.dims:
            raise UserError(f"{path}: no {dim!r} dimension (has {', '.join(map(str, ds.dims))}); "
                            f"not an ERA5 file in the CDS or WeatherBench 2 layout")
    ds = _drop_member(ds, path)
    ds = ds.chunk({dim: size for dim, size in chunks.items() if dim in ds.dims})
    ds = _merge_expver(ds).reset_coords(drop=True)
    ds = ds[[name for name in ds.data_vars if "time" in ds[name].dims]]
    return _sort_grid(ds)


def _drop_member(ds: xr.Dataset, path: Path) -> xr.Dataset:
    """Drop the CDS ``number`` (ensemble member) coordinate; a dimension of size > 1 is an error."""
    if "number" in ds.dims:
        if ds.sizes["number"] != 1:
            raise UserError(f"{path}: {ds.sizes['number']} ensemble members (`number`); funcdiff reads one "
                            f"member: select it first (ds.sel(number=0))")
        ds = ds.isel(number=0)
    return ds


def _merge_expver(ds: xr.Dataset) -> xr.Dataset:
    """ERA5 (expver 1) and ERA5T (expver 5) in one file.

    Since 2024 CDS merges them itself and keeps ``expver`` as a coordinate along ``valid_time`` (dropped by
    the caller). Older files have an ``expver`` dimension with NaN where the other experiment holds the value:
    those are merged by taking, at every point, the first expver (in file order) that has a value.
    """
    if "expver" not in ds.dims:
        return ds
    parts = [ds.isel(expver=i, drop=True) for i in range(ds.sizes["expver"])]
    return functools.reduce(lambda a, b: a.combine_first(b), parts)


def _sort_grid(ds: xr.Dataset) -> xr.Dataset:
    """Latitude ascending; longitude wrapped to [0, 360) and ascending (lazy)."""
    lon = ds["longitude"]
    if bool(((lon < 0) | (lon >= 360)).any()):
        ds = ds.assign_coords(longitude=lon % 360)
    for dim in ("latitude", "longitude"):
        values = ds[dim].values
        if not np.all(np.diff(values) > 0):
            ds = ds.sortby(dim)
    return ds


# --- selection ----------------------------------------------------------------------------------------


def select_times(ds: xr.Dataset, start: Optional[str] = None, end: Optional[str] = None,
                 step: Optional[str] = None) -> xr.Dataset:
    """Times from ``start`` to ``end`` (inclusive, pandas partial strings: ``end="2017-12-31"`` keeps that whole
    day), every ``step`` (e.g. ``"6h"``) counted from ``start`` (or the first time held); every time of that
    regular grid must be in the data (UserError naming how many are missing otherwise)."""
    ds = ds.sortby("time")
    times = ds.indexes["time"]
    if times.has_duplicates:
        raise UserError(f"the data hold {int(times.duplicated().sum())} duplicated times (overlapping files?)")
    selected = ds.sel(time=slice(start, end))
    if selected.sizes["time"] == 0:
        raise UserError(f"no times between {start or 'the start'} and {end or 'the end'}; the data hold "
                        f"{times[0]} to {times[-1]}")
    if step is None:
        return selected
    first = pd.Timestamp(start) if start else selected.indexes["time"][0]
    wanted = pd.date_range(first, selected.indexes["time"][-1], freq=pd.Timedelta(step))
    missing = wanted.difference(times)
    if len(missing):
        raise UserError(f"{len(missing)} of {len(wanted)} times every {step} from {first} are not in the data "
                        f"(first missing: {missing[0]}); the data hold {times[0]} to {times[-1]}")
    return ds.sel(time=wanted)


def to_channels(ds: xr.Dataset, channels: Sequence[Channel]) -> xr.DataArray:
    """Stack the requested channels of a normalised dataset into one lazy DataArray ``state``.

    Shapes: -> (time, channel, latitude, longitude), with coordinates ``channel`` and ``units`` (along channel).
    UserError naming the channels the data hold if one is absent.
    """
    have = available_channels(ds)
    absent = [c.name for c in channels if c.name not in have]
    if absent:
        raise UserError(f"{', '.join(absent)} not in the data; it holds: {', '.join(have) or 'no variables'}")
    arrays = []
    for c in channels:
        array = ds[c.variable] if c.level is None else ds[c.variable].sel(level=c.level, drop=True)
        arrays.append(array.drop_vars([n for n in array.coords if n not in SPATIAL]))
    units = [str(a.attrs.get("units", VARIABLES[c.variable].units)) for a, c in zip(arrays, channels)]
    state = xr.concat(arrays, dim="channel", coords="minimal", compat="override", join="exact")
    state = state.assign_coords(channel=[c.name for c in channels], units=("channel", units))
    return state.transpose(*DIMS).rename("state").assign_attrs({})


def read_era5(sources: Sources, variables: Union[str, Sequence[str]], *, start: Optional[str] = None,
              end: Optional[str] = None, step: Optional[str] = None,
              chunks: Optional[Mapping[str, Any]] = None) -> xr.DataArray:
    """Open ERA5 (CDS netCDF or WB2 zarr, see the module docstring) and select channels and times, lazily.

    ``variables`` like ``"z500,t850,t2m"``. Nothing is read; :func:`check_missing` counts NaNs (one pass).

    Shapes: -> DataArray (time, channel, latitude ascending, longitude), dask-backed.
    """
    channels = parse_channels(variables)
    return to_channels(select_times(open_era5(sources, chunks=chunks), start, end, step), channels)


# --- missing values -------------------------------------------------------------------------------------


def missing_counts(state: xr.DataArray) -> xr.DataArray:
    """Number of NaN values per channel (lazy). Shapes: (time, channel, lat, lon) -> (channel,)."""
    return state.isnull().sum(SPATIAL)


def raise_if_missing(counts: xr.DataArray) -> None:
    """UserError (one line naming each channel with NaNs and how many) if any count is non-zero."""
    values = np.asarray(counts.values)
    bad = [f"{name} has {int(n)}" for name, n in zip(counts["channel"].values, values) if n > 0]
    if bad:
        raise UserError(f"missing values (NaN) in the data: {'; '.join(bad)}; choose times without gaps "
                        f"(start=..., end=...) or fill them first")


def check_missing(state: xr.DataArray) -> None:
    """Count NaNs per channel (reads the data once) and raise :func:`raise_if_missing`'s UserError."""
    raise_if_missing(missing_counts(state).compute())


# --- grid geometry and conservative regridding ----------------------------------------------------------


def longitude_bounds(lon: np.ndarray) -> np.ndarray:
    """Cell edges of ascending longitudes covering the globe: periodic midpoints, the last edge 360° after the
    first. Shapes: lon (W,) -> (W + 1,)."""
    lon = np.asarray(lon, dtype=np.float64)
    gaps = np.diff(np.concatenate([lon, [lon[0] + 360.0]]))
    if lon.size < 2 or np.any(gaps <= 0) or gaps.max() > 1.5 * np.median(gaps):
        raise ValueError(f"longitudes must be ascending, evenly spaced and global, got {lon}")
    first = (lon[-1] - 360.0 + lon[0]) / 2
    return np.concatenate([[first], (lon[:-1] + lon[1:]) / 2, [first + 360.0]])


def _overlaps(src: np.ndarray, dst: np.ndarray, period: Optional[float] = None) -> np.ndarray:
    """Length of the overlap of every destination interval with every source interval (edges ascending),
    also counting the source shifted by ±``period``. Shapes: src (m+1,), dst (n+1,) -> (n, m)."""
    total = np.zeros((dst.size - 1, src.size - 1))
    for shift in (0.0,) if period is None else (-period, 0.0, period):
        upper = np.minimum(dst[1:, None], src[None, 1:] + shift)
        lower = np.maximum(dst[:-1, None], src[None, :-1] + shift)
        total += np.clip(upper - lower, 0.0, None)
    return total


def conservative_matrices(src_lat: np.ndarray, src_lon: np.ndarray, dst_lat: np.ndarray,
                          dst_lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-stochastic matrices (A_lat, A_lon) with regridded = A_lat · x · A_lonᵀ (see :func:`regrid_conservative`).

    A_lat[i, j] ∝ overlap of target row i and source row j measured in sin(latitude) (area on the sphere);
    A_lon[k, l] ∝ overlap in longitude (periodic). Cells are the rectangles of :func:`latitude_bounds` and
    :func:`longitude_bounds`. Shapes: -> (H', H), (W', W).
    """
    sin_src, sin_dst = (np.sin(np.deg2rad(latitude_bounds(x))) for x in (src_lat, dst_lat))
    a_lat = _overlaps(sin_src, sin_dst)
    a_lon = _overlaps(longitude_bounds(src_lon), longitude_bounds(dst_lon), period=360.0)
    return a_lat / a_lat.sum(1, keepdims=True), a_lon / a_lon.sum(1, keepdims=True)


def parse_grid(spec: Union[str, float, None]) -> Optional[float]:
    """``"5.625deg"`` / ``"5.625"`` / 5.625 -> 5.625 (degrees); ``None`` / ``"native"`` -> None (keep the grid).
    The spacing must divide 180°."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "native"):
        return None
    text = str(spec).strip().lower().removesuffix("deg").removesuffix("°")
    try:
        res = float(text)
    except ValueError:
        raise UserError(f"grid {spec!r}: expected a spacing in degrees like 5.625deg, or native") from None
    if not 0 < res <= 90 or abs(180 / res - round(180 / res)) > 1e-9:
        raise UserError(f"grid spacing {res}° must divide 180° (e.g. 5.625deg, 2.8125deg, 1.5deg)")
    return res


def regular_grid(res: float) -> tuple[np.ndarray, np.ndarray]:
    """Equiangular grid of spacing ``res`` degrees without pole points, as WB2's ``*_equiangular_conservative``
    stores: latitudes -90 + res/2 ... 90 - res/2, longitudes 0 ... 360 - res. Shapes: -> (180/res,), (360/res,)."""
    n_lat, n_lon = round(180 / res), round(360 / res)
    return -90 + res * (np.arange(n_lat) + 0.5), res * np.arange(n_lon)


def regrid_conservative(state: xr.DataArray, res: Optional[float]) -> xr.DataArray:
    """First-order conservative regridding to the regular grid of spacing ``res`` (None: unchanged), lazily.

    "Conservative" here means: every target cell holds the area-weighted mean of the source cells it overlaps,
    each weighted by the area of the overlap on the sphere (R² Δlon Δsin(lat)); cells are the lat-lon rectangles
    between midpoints (:func:`latitude_bounds`, :func:`longitude_bounds`). Because rectangles are products of
    a latitude and a longitude interval, the overlap areas factor and the map is two small matrix products
    (:func:`conservative_matrices`), streamed chunk by chunk. The integral over the sphere, hence the
    cell-area-weighted global mean, is preserved exactly; when target cells are unions of source cells it is
    area-weighted block averaging. This is the scheme of WeatherBench 2's ``ConservativeRegridder``.

    Shapes: (time, channel, lat, lon) -> (time, channel, 180/res, 360/res), in the input's dtype.
    """
    if res is None:
        return state
    lat, lon = regular_grid(res)
    try:
        a_lat, a_lon = conservative_matrices(state["latitude"].values, state["longitude"].values, lat, lon)
    except ValueError as err:
        raise UserError(f"cannot regrid: {err}") from err
    w_lat = xr.DataArray(a_lat, dims=("lat_out", "latitude"))
    w_lon = xr.DataArray(a_lon, dims=("lon_out", "longitude"))
    out = xr.dot(xr.dot(state, w_lat, dim="latitude"), w_lon, dim="longitude")
    out = out.rename(lat_out="latitude", lon_out="longitude").assign_coords(latitude=lat, longitude=lon)
    return out.transpose(*DIMS).astype(state.dtype).rename(state.name)


# --- statistics ---------------------------------------------------------------------------------------


def tendency_lag(times: pd.DatetimeIndex) -> tuple[int, pd.Timedelta]:
    """Steps between a state and its tendency partner: 6 h when the (even) spacing divides 6 h, else one step.

    Returns (lag in steps, interval). UserError if the times are not evenly spaced or there are too few.
    """
    steps = np.unique(np.diff(times.values))
    if len(times) < 2 or len(steps) != 1:
        raise UserError("statistics need at least 2 evenly spaced times (pass e.g. step='6h')")
    step = pd.Timedelta(steps[0])
    lag = int(TENDENCY_INTERVAL // step) if TENDENCY_INTERVAL % step == pd.Timedelta(0) else 1
    if lag >= len(times):
        lag = 0
    return lag, step * max(lag, 1)


def _weighted_moments(x: xr.DataArray, weights: xr.DataArray) -> dict[str, xr.DataArray]:
    """Lazy area-weighted mean and mean square over (time, latitude, longitude), float64 (one pass)."""
    x = x.astype(np.float64)
    return {"mean": x.weighted(weights).mean(SPATIAL), "mean_square": (x * x).weighted(weights).mean(SPATIAL)}


def statistics_graph(state: xr.DataArray) -> dict[str, dict[str, xr.DataArray]]:
    """Lazy per-channel moments of states and of tendencies x(t + Δ) - x(t), Δ from :func:`tendency_lag`.

    Means are area-weighted (:func:`cell_area_weights`) over time, latitude and longitude; evaluate with
    ``dask.compute`` together with anything else that reads the same data, then :func:`finish_statistics`.
    """
    weights = xr.DataArray(cell_area_weights(state["latitude"].values), dims="latitude")
    lag, _ = tendency_lag(state.indexes["time"])
    graph = {"state": _weighted_moments(state, weights)}
    if lag:
        later = state.isel(time=slice(lag, None)).drop_vars("time")
        earlier = state.isel(time=slice(None, -lag)).drop_vars("time")
        graph["tendency"] = _weighted_moments(later - earlier, weights)
    return graph


def finish_statistics(moments: Mapping[str, Mapping[str, xr.DataArray]]) -> dict[str, dict[str, dict]]:
    """Computed moments -> ``{"state": {channel: {"mean", "std"}}, "tendency": {...}}`` (plain floats, the
    format of :meth:`funcdiff.data.Normalizer.from_field_stats`); std = sqrt(E[x²] - E[x]²) in float64."""
    result: dict[str, dict[str, dict]] = {}
    for kind, m in moments.items():
        std = np.sqrt(np.clip(m["mean_square"].values - m["mean"].values ** 2, 0.0, None))
        result[kind] = {str(c): {"mean": float(mu), "std": float(s)}
                        for c, mu, s in zip(m["mean"]["channel"].values, m["mean"].values, std)}
    return result


def era5_statistics(state: xr.DataArray) -> dict[str, dict[str, dict]]:
    """Per-channel statistics of states and 6-hour tendencies in one streaming pass (see
    :func:`statistics_graph`). Shapes: (time, channel, lat, lon) -> nested dict of floats."""
    import dask

    (moments,) = dask.compute(statistics_graph(state))
    return finish_statistics(moments)


# --- writing --------------------------------------------------------------------------------------------


def _time_chunk(state: xr.DataArray, target_bytes: int = 1 << 26) -> int:
    """Times per zarr chunk: whole (channel, lat, lon) slabs of about ``target_bytes`` (at least 1)."""
    slab = state.dtype.itemsize * int(np.prod([state.sizes[d] for d in DIMS[1:]]))
    return max(1, min(state.sizes["time"], target_bytes // slab))


def _store_dataset(state: xr.DataArray, attrs: Mapping[str, Any]) -> xr.Dataset:
    """``state`` as a float32 Dataset ready for zarr: uniform time chunks, no encodings from the source."""
    state = state.astype(np.float32)
    chunks = {"time": _time_chunk(state), "channel": -1, "latitude": -1, "longitude": -1}
    ds = state.chunk(chunks).to_dataset()
    for variable in ds.variables.values():
        variable.encoding = {}
    ds.attrs = dict(attrs)
    return ds


def _replace_directory(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``out``; an existing ``out`` is removed only after the move succeeded."""
    backup = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        if not overwrite:
            raise UserError(f"{out} exists (use overwrite=True)")
        os.replace(out, backup)
    os.replace(tmp, out)
    shutil.rmtree(backup, ignore_errors=True)


def write_era5_zarr(source_state: xr.DataArray, out: Union[str, os.PathLike], *, res: Optional[float] = None,
                    overwrite: bool = False, attrs: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Regrid, check, write and summarise in one streaming pass over the source; atomic.

    The store is written to a hidden sibling directory; the NaN count of the source, the regridded values and
    the statistics of :func:`statistics_graph` come from one ``dask.compute`` (each source chunk is read once).
    On NaNs (UserError, see :func:`raise_if_missing`) or any failure the partial store is deleted; on success
    the statistics go into the store's attributes (``state_stats``, ``tendency_stats``, ``tendency_interval``)
    and the directory is renamed to ``out``. The store is zarr format 2 with consolidated metadata (what
    WeatherBench 2 tooling reads); ``xr.open_zarr(out)`` gives a Dataset with ``state`` (time, channel,
    latitude, longitude).

    Returns the attributes written.
    """
    import dask
    import zarr

    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists (use overwrite=True)")
    state = regrid_conservative(source_state, res)
    _, interval = tendency_lag(state.indexes["time"])
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        store = _store_dataset(state, attrs or {}).to_zarr(tmp, mode="w", compute=False, zarr_format=2,
                                                            consolidated=True)
        _, counts, moments = dask.compute(store, missing_counts(source_state), statistics_graph(state))
        raise_if_missing(counts)
        stats = finish_statistics(moments)
        written = {**(attrs or {}), "state_stats": stats["state"], "tendency_stats": stats.get("tendency", {}),
                   "tendency_interval": str(interval)}
        zarr.open_group(tmp, mode="r+", zarr_format=2).attrs.update(written)
        zarr.consolidate_metadata(tmp, zarr_format=2)
        _replace_directory(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written


# --- reading a written store as trajectories --------------------------------------------------------------

SEGMENT_ATTR = "segment"
TIME_ORIGIN = pd.Timestamp("1970-01-01")
TIME_UNITS = "hours since 1970-01-01 00:00:00"  # CF units of every time funcdiff derives from an ERA5 store


def is_era5_store(path: Union[str, os.PathLike]) -> bool:
    """True for a zarr store written by :func:`write_era5_zarr` (a ``state`` array and ``state_stats``)."""
    path = Path(path)
    if not (path.is_dir() and _is_zarr(path)):
        return False
    try:
        import zarr

        group = zarr.open_group(path, mode="r")
        return "state" in group and "state_stats" in group.attrs
    except Exception:  # noqa: BLE001 - anything unreadable is simply not ours
        return False


def segment_frames(times: pd.DatetimeIndex, segment: Optional[str]) -> int:
    """Frames per trajectory when a time series is cut into consecutive segments of duration ``segment``
    (e.g. ``"365D"``, ``"10D"``; None: the whole series). UserError if a segment is shorter than two frames or
    not a whole number of steps."""
    if not segment:
        return len(times)
    if len(times) < 2:
        raise UserError("a segmented ERA5 store needs at least 2 times")
    step = pd.Timedelta(times[1] - times[0])
    length = pd.Timedelta(segment)
    if length % step != pd.Timedelta(0) or length < step:
        raise UserError(f"segment {segment} is not a positive whole number of {step} steps")
    return min(len(times), int(length // step))


def read_era5_store(path: Union[str, os.PathLike], *, max_samples: Optional[int] = None):
    """A store of :func:`write_era5_zarr` as trajectories: the time series cut into consecutive segments of the
    store's ``segment`` attribute (``funcdiff data era5 --segment``; a trailing partial segment is dropped).

    Returns a :class:`funcdiff.data.readers.FieldData` with one field per channel (N, T, latitude, longitude)
    (float32, ERA5 units), coords ``t`` (the first segment's times in :data:`TIME_UNITS`; segment i is
    ``i · segment_hours`` later), ``latitude`` and ``longitude`` (degrees), and attrs ``grid``
    (``{"type": "latlon"}``), ``era5`` (time units, channel units, segment and step in hours) and the store's
    statistics. Reads ``max_samples`` segments at most.
    """
    import torch

    from funcdiff.data.fields import FieldData

    ds = xr.open_zarr(path)
    state = ds["state"]
    times = state.indexes["time"]
    frames = segment_frames(times, ds.attrs.get(SEGMENT_ATTR))
    count = len(times) // frames if max_samples is None else min(len(times) // frames, int(max_samples))
    values = np.asarray(state.isel(time=slice(0, count * frames)).values, dtype=np.float32)
    values = values.reshape(count, frames, *values.shape[1:])  # (N, T, C, H, W)
    channels = [str(c) for c in state["channel"].values]
    units = [str(u) for u in state["units"].values] if "units" in state.coords else ["1"] * len(channels)
    hours = np.array((times[:frames] - TIME_ORIGIN) / pd.Timedelta(hours=1), dtype=np.float64)
    fields = {c: torch.from_numpy(np.ascontiguousarray(values[:, :, i])) for i, c in enumerate(channels)}
    coords = {"t": torch.from_numpy(hours), "latitude": torch.tensor(state["latitude"].values, dtype=torch.float64),
              "longitude": torch.tensor(state["longitude"].values, dtype=torch.float64)}
    step = float(hours[1] - hours[0]) if frames > 1 else 0.0
    attrs = {"grid": {"type": "latlon"},
             "era5": {"time_units": TIME_UNITS, "units": dict(zip(channels, units)),
                      "segment": ds.attrs.get(SEGMENT_ATTR), "segment_hours": step * frames, "step_hours": step},
             "state_stats": ds.attrs.get("state_stats"), "tendency_stats": ds.attrs.get("tendency_stats")}
    return FieldData(fields=fields, coords=coords, attrs=attrs, source="era5_zarr", path=str(path))
