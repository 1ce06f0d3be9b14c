"""Data on disk, read lazily: the one interface every streamed source implements (:class:`ArrayStore`).

A store presents a file or folder as an array ``(N, C, *rest)`` — ``rest`` is ``(*S)`` for fields and
``(T, *S)`` for trajectories (one continuous time axis, as in an ERA5 store, is ``N = 1`` trajectory) — and reads
only the items (and frames) asked for. It holds no open handle when pickled: h5py, netCDF and zarr handles are not
fork-safe, so each process (DataLoader worker, rank) opens its own on first read.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from funcdiff.errors import UserError


class ArrayStore(ABC):
    """A lazily read array ``(N, C, *rest)`` of float32 values with named channels.

    Subclasses set :attr:`shape`, :attr:`channel_names` (and optionally :attr:`coords`, :attr:`attrs`) in
    ``__init__`` from the file's metadata only, and implement :meth:`_open` and :meth:`_read`.

    Shapes:
        shape: ``(N, C, *S)`` (fields) or ``(N, C, T, *S)`` (trajectories); :meth:`read` returns
        ``(len(items), C, *rest)`` with ``rest`` cut to ``frames`` when given.
    """

    shape: tuple[int, ...]
    channel_names: tuple[str, ...]

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.coords: dict[str, np.ndarray] = {}
        self.attrs: dict[str, Any] = {}
        self._handle: Any = None
        self._pid: int | None = None

    # ------------------------------------------------------------------------------- for subclasses
    @abstractmethod
    def _open(self) -> Any:
        """Open the file(s); the returned handle is kept per process."""

    @abstractmethod
    def _read(self, handle: Any, items: np.ndarray, frames: slice | None) -> np.ndarray:
        """Items ``items`` (sorted, unique int64) and, for trajectories, ``frames`` (a slice of T or None for all):
        an array ``(len(items), C, *rest)``."""

    # ------------------------------------------------------------------------------------- public
    def __len__(self) -> int:
        return self.shape[0]

    @property
    def num_channels(self) -> int:
        return self.shape[1]

    @property
    def nbytes(self) -> int:
        """Size of the whole array as float32, in bytes."""
        return 4 * int(np.prod(self.shape))

    def handle(self) -> Any:
        """This process's open handle (opened on first use, and again after a fork)."""
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = self._open(), os.getpid()
        return self._handle

    def read(self, items: Sequence[int] | np.ndarray | Tensor, frames: slice | None = None) -> Tensor:
        """The items ``items`` in the order given (repeats allowed), as float32 ``(len(items), C, *rest)``.

        A chunk that cannot be read (missing or corrupt) raises :class:`UserError` naming the file and items."""
        wanted = np.asarray(items, dtype=np.int64).reshape(-1)
        if wanted.size and (wanted.min() < 0 or wanted.max() >= len(self)):
            raise IndexError(f"{self.path}: items {wanted.tolist()} out of range for {len(self)}")
        unique, inverse = np.unique(wanted, return_inverse=True)
        try:
            block = self._read(self.handle(), unique, frames)
        except (OSError, KeyError, ValueError, RuntimeError) as err:
            raise UserError(f"{self.path}: cannot read item(s) {unique.tolist()}: {type(err).__name__}: {err}") from None
        return torch.from_numpy(np.ascontiguousarray(block[inverse], dtype=np.float32))

    def _close(self, handle: Any) -> None:
        """Close a handle of :meth:`_open` (override when it has no ``close``)."""
        handle.close()

    def close(self) -> None:
        """Close this process's handle, if open."""
        if self._handle is not None and self._pid == os.getpid():
            self._close(self._handle)
        self._handle, self._pid = None, None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, None
        return state




# ----------------------------------------------------------------------------------------------- concrete stores
def _decode_attr(value: Any) -> Any:
    """An HDF5 attribute as Python: bytes to str, JSON objects/lists parsed, numpy scalars to Python."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value.item() if isinstance(value, np.generic) else value


class HDF5Store(ArrayStore):
    """One dataset per channel in an HDF5 file: ours (``funcdiff data generate``: ``<field>`` ``(N, *S)`` or
    ``(N, T, *S)``, only the ``num_written`` finished samples), or any file with a dataset per channel name.

    Shapes: ``(N, C, *rest)``; ``coords["t"]`` ``(T,)`` when the file has a time coordinate ``t``, ``attrs`` the
    file's attributes (JSON decoded)."""

    def __init__(self, path: str | os.PathLike, channels: Sequence[str]) -> None:
        super().__init__(path)
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                self.attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
                self.datasets = tuple(self._dataset_name(f, c) for c in channels)
                shapes = {tuple(f[name].shape) for name in self.datasets}
                time = f["t"][...] if "t" in f else None
        except OSError as err:
            raise UserError(f"{self.path}: not a readable HDF5 file ({err})") from None
        if len(shapes) != 1:
            raise UserError(f"{self.path}: channels {list(channels)} have different shapes {sorted(shapes)}")
        shape = shapes.pop()
        count = shape[0]
        if self.attrs.get("funcdiff_format") is not None:
            if not self.attrs.get("complete"):
                raise UserError(f"{self.path} is incomplete ({self.attrs.get('num_written')} of "
                                f"{self.attrs.get('num_samples')} samples written); resume its generation first")
            count = int(self.attrs.get("num_written", count))
        self.channel_names = tuple(channels)
        self.shape = (count, len(channels), *shape[1:])
        if time is not None:
            self.coords["t"] = np.asarray(time, dtype=np.float64)

    def _dataset_name(self, f: Any, channel: str) -> str:
        if channel in f:
            return channel
        fields = sorted(k for k in f.keys() if len(f[k].shape) >= 2)
        raise UserError(f"{self.path}: no field {channel!r}; it holds {fields}")

    def _open(self) -> Any:
        import h5py

        return h5py.File(self.path, "r")

    def _read(self, handle: Any, items: np.ndarray, frames: slice | None) -> np.ndarray:
        select = (items,) if frames is None else (items, frames)
        return np.stack([np.asarray(handle[name][select], dtype=np.float32) for name in self.datasets], axis=1)


class Era5ZarrStore(ArrayStore):
    """A store of ``funcdiff data era5`` (zarr ``state`` (time, channel, latitude, longitude)) as
    ``(N, C, T, H, W)``: the time series cut into the store's ``segment`` attribute's consecutive segments of T
    frames, as :func:`funcdiff.data.era5.read_era5_store` cuts it (no segment: ``N = 1``, the whole series).

    Shapes: ``coords["time"]`` ``(N·T,)`` datetime64 (segment n is ``time[n·T:(n+1)·T]``), ``coords["t"]`` the first
    segment's hours since 1970, ``coords["latitude"]``/``["longitude"]`` degrees; ``attrs`` as
    :func:`~funcdiff.data.era5.read_era5_store` gives them (``grid``, ``era5``, ``state_stats``, ...)."""

    def __init__(self, path: str | os.PathLike, channels: Sequence[str]) -> None:
        super().__init__(path)
        import pandas as pd
        import xarray as xr

        from funcdiff.data.era5 import SEGMENT_ATTR, TIME_ORIGIN, TIME_UNITS, segment_frames

        ds = xr.open_zarr(self.path, chunks=None)
        state = ds["state"]
        have = [str(c) for c in state["channel"].values]
        missing = [c for c in channels if c not in have]
        if missing:
            raise UserError(f"{self.path}: no channel(s) {missing}; it holds {have}")
        self.channel_index = np.array([have.index(c) for c in channels], dtype=np.int64)
        times = state.indexes["time"]
        frames = segment_frames(times, ds.attrs.get(SEGMENT_ATTR))
        count = len(times) // frames
        self.frames = frames
        self.channel_names = tuple(channels)
        self.shape = (count, len(channels), frames, state.sizes["latitude"], state.sizes["longitude"])
        hours = np.array((times[:frames] - TIME_ORIGIN) / pd.Timedelta(hours=1), dtype=np.float64)
        self.coords = {"time": np.asarray(times[:count * frames].values), "t": hours,
                       "latitude": np.asarray(state["latitude"].values, dtype=np.float64),
                       "longitude": np.asarray(state["longitude"].values, dtype=np.float64)}
        units = [str(u) for u in state["units"].values] if "units" in state.coords else ["1"] * len(have)
        step = float(hours[1] - hours[0]) if frames > 1 else 0.0
        self.attrs = {"grid": {"type": "latlon"},
                      "era5": {"time_units": TIME_UNITS, "units": {c: units[have.index(c)] for c in channels},
                               "segment": ds.attrs.get(SEGMENT_ATTR), "segment_hours": step * frames,
                               "step_hours": step},
                      "state_stats": ds.attrs.get("state_stats"), "tendency_stats": ds.attrs.get("tendency_stats")}
        ds.close()

    def _open(self) -> Any:
        import zarr

        return zarr.open_group(self.path, mode="r")["state"]

    def _close(self, handle: Any) -> None:
        """A zarr array holds no open file."""

    def _read(self, handle: Any, items: np.ndarray, frames: slice | None) -> np.ndarray:
        first, stop, step = (frames or slice(None)).indices(self.frames)
        channels = self.channel_index
        whole = np.array_equal(channels, np.arange(handle.shape[1]))
        out = []
        for n in items:
            base = int(n) * self.frames
            block = handle.get_orthogonal_selection((slice(base + first, base + stop, step),
                                                     slice(None) if whole else channels))
            out.append(np.moveaxis(np.asarray(block, dtype=np.float32), 1, 0))  # (C, T', H, W)
        return np.stack(out)


class XarrayStore(ArrayStore):
    """ERA5 in the CDS netCDF (a file, a list or a glob) or WeatherBench 2 / ARCO zarr layout, read through
    :func:`funcdiff.data.era5.open_era5` and :func:`~funcdiff.data.era5.to_channels` as one continuous time axis
    ``(1, C, T, H, W)`` (channels named ``z500``, ``t2m``, ...; latitude ascending, longitude in [0, 360)).

    Shapes: ``coords["time"]`` ``(T,)`` datetime64, ``coords["t"]`` hours since 1970, latitude/longitude in degrees."""

    def __init__(self, path: str | os.PathLike, channels: Sequence[str]) -> None:
        super().__init__(path)
        import pandas as pd

        from funcdiff.data.era5 import TIME_ORIGIN, TIME_UNITS

        self.sources = str(path)
        self.channel_names = tuple(channels)
        state = self._open()
        times = state.indexes["time"]
        self.shape = (1, len(channels), len(times), state.sizes["latitude"], state.sizes["longitude"])
        hours = np.array((times - TIME_ORIGIN) / pd.Timedelta(hours=1), dtype=np.float64)
        self.coords = {"time": np.asarray(times.values), "t": hours,
                       "latitude": np.asarray(state["latitude"].values, dtype=np.float64),
                       "longitude": np.asarray(state["longitude"].values, dtype=np.float64)}
        step = float(hours[1] - hours[0]) if len(hours) > 1 else 0.0
        units = [str(u) for u in state["units"].values]
        self.attrs = {"grid": {"type": "latlon"},
                      "era5": {"time_units": TIME_UNITS, "units": dict(zip(channels, units)), "segment": None,
                               "segment_hours": step * len(hours), "step_hours": step}}
        state.close()

    def _open(self) -> Any:
        from funcdiff.data.era5 import open_era5, parse_channels, to_channels

        return to_channels(open_era5(self.sources, chunks={"time": 1, "level": 1}), parse_channels(self.channel_names))

    def _read(self, handle: Any, items: np.ndarray, frames: slice | None) -> np.ndarray:
        import dask

        with dask.config.set(scheduler="synchronous"):
            block = np.asarray(handle.isel(time=frames or slice(None)).values, dtype=np.float32)
        return np.moveaxis(block, 1, 0)[None].repeat(len(items), axis=0)  # (1, C, T', H, W): N = 1


__all__ = ["ArrayStore", "Era5ZarrStore", "HDF5Store", "XarrayStore"]
