"""anemoi-datasets zarr stores (ECMWF's training layout), read lazily with zarr as one :class:`ArrayStore`.

Layout (as ``anemoi-datasets create`` writes it, zarr format 2): an array ``data`` (dates, variables, ensembles,
cells) (float32, NaN fill); 1-D arrays ``dates`` (datetime64[s]), ``latitudes`` and ``longitudes`` (degrees, one per
cell) and the statistics ``mean``, ``stdev``, ``minimum``, ``maximum`` (one per variable, float64); root attributes
``variables`` (names in order), ``start_date``, ``end_date``, ``frequency`` (e.g. ``"6h"``, or hours),
``missing_dates`` (ISO dates whose data are absent), ``field_shape`` and ``resolution``. The ``anemoi-datasets``
package is not needed to read it (it pins zarr <= 2.18; zarr 3 reads format 2).

The store is ``(1, C, T, *S)``: one trajectory (the whole time axis), C variables, T dates (the missing dates left
out, so the ``time`` coordinate shows the gap), S = ``(latitude, longitude)`` when the cells are the points of a
regular latitude-longitude grid (latitude ascending, degrees north; longitude ascending in [0, 360), degrees east)
and ``(cells,)`` otherwise (with per-cell ``latitude``/``longitude`` coordinates). One ensemble member is read
(``member``, 0 by default). Values are in the dataset's units.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from funcdiff.data.fields import FieldData
from funcdiff.data.stores import ArrayStore
from funcdiff.errors import UserError

STATISTICS = ("mean", "stdev", "minimum", "maximum")
TIME_UNITS = "hours since 1970-01-01 00:00:00"  # as funcdiff's ERA5 stores


def _open_group(path: str | os.PathLike) -> Any:
    import zarr

    return zarr.open_group(str(path), mode="r")


def is_anemoi_store(path: str | os.PathLike) -> bool:
    """True for a zarr store in the anemoi-datasets layout (a 4-D ``data`` array, ``dates``, ``variables``)."""
    path = Path(path)
    if not (path.is_dir() and ((path / ".zgroup").exists() or (path / "zarr.json").exists())):
        return False
    try:
        group = _open_group(path)
        return ("data" in group and "dates" in group and len(group["data"].shape) == 4
                and ("variables" in group.attrs or "name_to_index" in group.attrs))
    except Exception:  # noqa: BLE001 - anything unreadable is simply not an anemoi store
        return False


def regular_grid(latitudes: np.ndarray, longitudes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """If the cells are every point of a latitude x longitude product grid: ``(lat, lon, order)`` with ``lat``
    ascending (degrees north), ``lon`` ascending in [0, 360) (degrees east) and ``order`` the cell index of each
    grid point, row-major, so that ``values[..., order].reshape(..., len(lat), len(lon))`` is the field on the grid;
    otherwise ``None``. Shapes: (cells,), (cells,) -> (H,), (W,), (H·W,)."""
    lat = np.round(np.asarray(latitudes, dtype=np.float64), 6)
    lon = np.round(np.mod(np.asarray(longitudes, dtype=np.float64), 360.0), 6) % 360.0
    ulat, ulon = np.unique(lat), np.unique(lon)
    if ulat.size * ulon.size != lat.size or ulat.size < 2 or ulon.size < 2:
        return None
    flat = np.searchsorted(ulat, lat) * ulon.size + np.searchsorted(ulon, lon)
    if np.unique(flat).size != lat.size:
        return None
    order = np.empty(lat.size, dtype=np.int64)
    order[flat] = np.arange(lat.size)
    return ulat, ulon, order


def _variables(group: Any) -> list[str]:
    attrs = group.attrs
    if "variables" in attrs:
        return [str(v) for v in attrs["variables"]]
    index = dict(attrs["name_to_index"])
    return sorted(index, key=index.get)


def _frequency_hours(value: Any) -> float | None:
    """anemoi's ``frequency`` attribute (``"6h"``, ``"1d"``, ``"30m"``, or an int in hours) in hours."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    units = {"d": 24.0, "h": 1.0, "m": 1 / 60, "s": 1 / 3600}
    if text[-1:] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def _statistics(group: Any, names: Sequence[str]) -> dict[str, dict[str, float]]:
    stats: dict[str, dict[str, float]] = {name: {} for name in names}
    for key in STATISTICS:
        if key in group:
            for name, value in zip(names, np.asarray(group[key][...], dtype=np.float64)):
                stats[name][key] = float(value)
    return {k: v for k, v in stats.items() if v}


class AnemoiStore(ArrayStore):
    """An anemoi-datasets zarr store as a lazily read ``(1, C, T, *S)`` float32 array (see the module docstring).

    Args:
        path: the ``.zarr`` folder.
        variables: variable names to keep, in this order (``None``: all, in the store's order).
        member: the ensemble member to read (index along the store's ensemble axis).
        drop_missing: leave the store's ``missing_dates`` out of the time axis (default); with ``False`` they stay
            (their values are whatever the store holds, usually NaN).
        flatten: keep the cells as one axis even when they form a regular latitude-longitude grid.

    Shapes:
        shape ``(1, C, T, H, W)`` (regular grid) or ``(1, C, T, cells)``; ``coords["time"]`` ``(T,)``
        datetime64[s] and ``coords["t"]`` the same in hours since 1970-01-01 (float64); ``coords["latitude"]``, ``coords["longitude"]`` ``(H,)``, ``(W,)`` or ``(cells,)``, degrees.
        ``attrs["normalization"]``: ``{variable: {"mean": m, "std": s}}`` from the stored statistics.
    """

    def __init__(self, path: str | os.PathLike, variables: Sequence[str] | None = None, member: int = 0,
                 drop_missing: bool = True, flatten: bool = False) -> None:
        super().__init__(path)
        try:
            group = _open_group(self.path)
            shape, names = tuple(group["data"].shape), _variables(group)
            dates = np.asarray(group["dates"][...]).astype("datetime64[s]")
            lat, lon = np.asarray(group["latitudes"][...]), np.asarray(group["longitudes"][...])
            attrs, stats = dict(group.attrs), _statistics(group, names)
        except (OSError, KeyError, ValueError, RuntimeError) as err:
            raise UserError(f"{self.path}: not a readable anemoi-datasets store ({type(err).__name__}: {err})"
                            ) from None
        if not 0 <= member < shape[2]:
            raise UserError(f"{self.path}: member {member} out of range; the store has {shape[2]} ensemble member(s)")
        missing = np.array(attrs.get("missing_dates") or [], dtype="datetime64[s]")
        self.missing_dates = missing
        self.member, self.flatten = int(member), bool(flatten)
        self._all_dates = dates
        self.frame_index = np.flatnonzero(~np.isin(dates, missing)) if drop_missing else np.arange(len(dates))
        self.variable_index = self._select(names, variables)
        self.channel_names = tuple(names[i] for i in self.variable_index)
        grid = None if flatten else regular_grid(lat, lon)
        self.order = None if grid is None else grid[2]
        space = (lat.size,) if grid is None else (grid[0].size, grid[1].size)
        self.coords = {"time": dates[self.frame_index], "t": time_hours(dates[self.frame_index]),
                       "latitude": lat if grid is None else grid[0], "longitude": lon if grid is None else grid[1]}
        self.shape = (1, len(self.channel_names), len(self.frame_index), *space)
        self.attrs = self._attrs(attrs, stats, grid is not None)

    def _select(self, names: list[str], variables: Sequence[str] | None) -> np.ndarray:
        if variables is None:
            return np.arange(len(names))
        missing = [v for v in variables if v not in names]
        if missing:
            raise UserError(f"{self.path}: no variable(s) {missing} in this anemoi store; available: {names}")
        return np.array([names.index(v) for v in variables], dtype=np.int64)

    def _attrs(self, attrs: dict, stats: dict[str, dict[str, float]], regular: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "anemoi": {"frequency": attrs.get("frequency"), "step_hours": _frequency_hours(attrs.get("frequency")),
                       "start_date": attrs.get("start_date"), "end_date": attrs.get("end_date"),
                       "member": self.member, "resolution": attrs.get("resolution"),
                       "field_shape": attrs.get("field_shape"), "time_units": TIME_UNITS},
            "missing_dates": [str(d) for d in self.missing_dates], "statistics": stats,
            "normalization": {k: {"mean": v["mean"], "std": v["stdev"]} for k, v in stats.items()
                              if "mean" in v and "stdev" in v}}
        if regular and all(np.ptp(np.diff(self.coords[k])) < 1e-6 for k in ("latitude", "longitude")):
            out["grid"] = {"type": "latlon"}  # equally spaced in both: a grid the sphere modules take
        return out

    def _open(self) -> Any:
        return _open_group(self.path)["data"]

    def _close(self, handle: Any) -> None:
        """zarr arrays hold no open file."""

    def _read(self, handle: Any, items: np.ndarray, frames: slice | None) -> np.ndarray:
        raw = self.frame_index[frames or slice(None)]
        variables = self.variable_index
        if np.array_equal(variables, np.arange(handle.shape[1])):
            variables = slice(None)
        self._check_chunks(handle, raw)
        block = np.asarray(handle.oindex[raw, variables, self.member, :], dtype=np.float32)  # (T', C, cells)
        block = np.swapaxes(block, 0, 1)
        if self.order is not None:
            block = block[..., self.order].reshape(*block.shape[:2], *self.shape[3:])
        return np.broadcast_to(block[None], (len(items), *block.shape))

    def _check_chunks(self, handle: Any, raw: np.ndarray) -> None:
        """OSError when a chunk of ``data`` that these dates need is absent from the folder: zarr would return
        its fill value (NaN) without a word. Only the missing dates' chunks may be absent (anemoi never writes
        them)."""
        raw = raw[~np.isin(self._all_dates[raw], self.missing_dates)]
        chunks = handle.shards or handle.chunks  # a file per shard when the (format 3) array is sharded
        axes = [np.unique(raw // chunks[0]), np.unique(self.variable_index // chunks[1]), [self.member // chunks[2]],
                range(-(-handle.shape[3] // chunks[3]))]
        folder = self.path / "data"
        for coords in itertools.product(*axes):
            key = handle.metadata.encode_chunk_key(tuple(int(c) for c in coords))
            if not (folder / key).exists():
                date = self._all_dates[min(int(coords[0]) * chunks[0], len(self._all_dates) - 1)]
                raise OSError(f"chunk data/{key} (from date {date}) is missing: an incomplete copy or build? Only "
                              "the dates in missing_dates may lack chunks (zarr 3 also leaves all-NaN chunks out)")


def time_hours(times: np.ndarray) -> np.ndarray:
    """datetime64 times as float64 hours since 1970-01-01 (:data:`TIME_UNITS`). Shapes: (T,) -> (T,)."""
    return (np.asarray(times, dtype="datetime64[s]").astype(np.int64) / 3600.0).astype(np.float64)


def read_anemoi(path: str | os.PathLike, *, max_samples: int | None = None,
                fields: Sequence[str] | None = None) -> FieldData:
    """An anemoi-datasets store in memory: one field per variable ``(1, T, *S)`` (float32), coordinates ``t``
    (hours since 1970-01-01, :data:`TIME_UNITS`), ``latitude``, ``longitude`` (degrees), attributes as
    :class:`AnemoiStore` (``normalization`` from the stored statistics). ``max_samples`` is accepted for the
    common reader signature (the store is one trajectory)."""
    import torch

    store = AnemoiStore(path, variables=fields)
    values = store.read([0]) if max_samples is None or max_samples > 0 else store.read([])
    data = {name: values[:, c].contiguous() for c, name in enumerate(store.channel_names)}
    coords = {"t": torch.from_numpy(store.coords["t"]),
              "latitude": torch.from_numpy(np.asarray(store.coords["latitude"], dtype=np.float64)),
              "longitude": torch.from_numpy(np.asarray(store.coords["longitude"], dtype=np.float64))}
    return FieldData(data, coords, dict(store.attrs), "anemoi_zarr", str(store.path))


__all__ = ["AnemoiStore", "is_anemoi_store", "read_anemoi", "regular_grid", "time_hours"]
