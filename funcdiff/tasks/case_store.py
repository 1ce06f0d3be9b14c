"""The data of batch cases read lazily: one case's frames or sample at a time, never the whole file.

A batch of forecasts (``forecast --indices/--init-times``) needs, per case, the history frames before its start
(and, for twin-experiment sensors, the truth frames of its leads); a batch of inverse problems (``solve --cases``)
needs one sample per case. :func:`open_trajectories` and :func:`open_samples` open a data file as an
:class:`~funcdiff.data.stores.ArrayStore` from its metadata only; ``store.read([i], frames)`` then reads that
slice (h5py slicing, or an xarray selection of the zarr store, which reads only the chunks it touches):

* funcdiff HDF5 (``funcdiff data generate``): fields ``(N, T, *S)`` or ``(N, *S)``, one dataset per channel;
* an ERA5 store of ``funcdiff data era5``: ``state (time, channel, latitude, longitude)`` cut into consecutive
  segments of its ``segment`` attribute (trajectory i, frame t is time ``i · frames + t``); as samples, every
  frame of every whole segment is one;
* netCDF case files (``fields_to_dataset``: one variable per channel along ``sample``), through xarray;
* any other format :func:`funcdiff.data.load_fields` reads (PDEBench, FNO ``.mat``, ``.pt``): read whole once, as
  before (those formats have no lazy reader).

Values equal the whole-file readers' (:func:`funcdiff.tasks.forecast_io.read_trajectories`,
:func:`funcdiff.tasks.solve.read_truth_file`): float32 in physical units, times as those readers give them.
Each store counts what it read (:attr:`LazyStore.bytes_read`, float32 bytes) for tests and benchmarks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from funcdiff.data.stores import ArrayStore
from funcdiff.errors import UserError

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")


class LazyStore(ArrayStore):
    """An :class:`ArrayStore` that counts the values it read (``bytes_read``, as float32) and the reads.
    ``time_units``: the units of the times :func:`open_trajectories` returns with it (CF units for an ERA5 store)."""

    time_units = "model time units"

    def __init__(self, path: str | os.PathLike, shape: Sequence[int], channels: Sequence[str]) -> None:
        super().__init__(path)
        self.shape, self.channel_names = tuple(int(n) for n in shape), tuple(channels)
        self.bytes_read, self.reads = 0, 0

    def read(self, items, frames: slice | None = None) -> Tensor:
        out = super().read(items, frames)
        self.bytes_read += out.numel() * 4
        self.reads += 1
        return out


class Hdf5Store(LazyStore):
    """Our HDF5 layout: datasets ``<channel> (N, [T,] *S)``; items are samples or trajectories."""

    def _open(self) -> Any:
        import h5py

        return h5py.File(self.path, "r")

    def _read(self, handle: Any, items: np.ndarray, frames: slice | None) -> np.ndarray:
        rest = (frames,) if frames is not None else ()
        return np.stack([np.stack([np.asarray(handle[c][(int(i), *rest)], dtype=np.float32)
                                   for c in self.channel_names]) for i in items])


class Era5Store(LazyStore):
    """A ``funcdiff data era5`` store as trajectories ``(N, C, T, H, W)`` (``frames`` per segment) or, with
    ``frames=1`` view as samples, every time step ``(N·T, C, H, W)``."""

    def __init__(self, path: str | os.PathLike, channels: Sequence[str], frames: int, count: int,
                 index: Sequence[int], spatial: Sequence[int], samples: bool = False) -> None:
        from funcdiff.data.era5 import TIME_UNITS

        shape = (count * frames, len(channels), *spatial) if samples else (count, len(channels), frames, *spatial)
        super().__init__(path, shape, channels)
        self.time_units = TIME_UNITS
        self.frames, self.samples, self.channel_index = frames, samples, list(index)

    def _open(self) -> Any:
        import xarray as xr

        return xr.open_zarr(self.path, chunks=None)["state"]

    def _close(self, handle: Any) -> None:
        handle.close()

    def _read(self, handle: Any, items: np.ndarray, frames: slice | None) -> np.ndarray:
        out = []
        for i in items:
            if self.samples:
                out.append(handle.isel(time=int(i), channel=self.channel_index).values)
                continue
            steps = np.arange(self.frames)[frames if frames is not None else slice(None)]
            block = handle.isel(time=int(i) * self.frames + steps, channel=self.channel_index).values
            out.append(np.moveaxis(block, 0, 1))  # (T', C, H, W) -> (C, T', H, W)
        return np.stack(out).astype(np.float32, copy=False)


class NetcdfStore(LazyStore):
    """A netCDF case file: one variable per channel along its first dimension (``sample``)."""

    def _open(self) -> Any:
        import xarray as xr

        return xr.open_dataset(self.path, engine="netcdf4", cache=False)

    def _read(self, handle: Any, items: np.ndarray, frames: slice | None) -> np.ndarray:
        first = handle[self.channel_names[0]].dims[0]
        chosen = handle[list(self.channel_names)].isel({first: items.tolist()})
        return np.stack([np.asarray(chosen[c].values, dtype=np.float32) for c in self.channel_names], axis=1)


class MemoryStore(LazyStore):
    """Data already read whole (formats without a lazy reader): reads slice the tensor."""

    def __init__(self, path: str | os.PathLike, data: Tensor, channels: Sequence[str]) -> None:
        super().__init__(path, data.shape, channels)
        self.data = data

    def _open(self) -> Any:
        return self.data

    def _close(self, handle: Any) -> None:
        """Nothing to close."""

    def _read(self, handle: Any, items: np.ndarray, frames: slice | None) -> np.ndarray:
        block = handle[torch.as_tensor(items)]
        return (block[:, :, frames] if frames is not None else block).numpy()


def case_frames(store: ArrayStore, times: Optional[Tensor], path: str | os.PathLike, index: int,
                start_frame: Optional[int], history: int, frame_step: int = 1, truth_leads: Optional[int] = None
                ) -> tuple[Tensor, Tensor, int, float]:
    """:func:`~funcdiff.tasks.forecast_io.initial_from_trajectories` reading only trajectory ``index``'s frames
    from ``store``: the ``history`` frames ending at ``start_frame`` and the truth after it, at most
    ``truth_leads`` frames of it (None: to the end; 0: none). Same values, same errors.

    Shapes: store (N, C, T, *S); returns initial (C, history, *S), truth (C, L, *S), start frame, its time."""
    n, t = store.shape[0], store.shape[2]
    if not 0 <= index < n:
        raise UserError(f"index={index} is out of range: {path} holds {n} trajectories")
    first = (history - 1) * frame_step
    start = first if start_frame is None else int(start_frame)
    if not first <= start < t:
        raise UserError(f"start_frame={start} must lie in {first}..{t - 1}: the forecaster needs {history} "
                        f"history frames spaced {frame_step} apart, and the trajectories have {t} frames")
    initial = store.read([index], slice(start - first, start + 1, frame_step))[0]
    stop = t if truth_leads is None else min(t, start + frame_step * int(truth_leads) + 1)
    if start + frame_step < stop:
        truth = store.read([index], slice(start + frame_step, stop, frame_step))[0]
    else:
        truth = initial.new_zeros((initial.shape[0], 0, *initial.shape[2:]))
    if times is None:
        time = float(start)
    else:
        time = float(times[index, start] if times.ndim == 2 else times[start])
    return initial, truth, start, time


# ------------------------------------------------------------------------------------------------ opening
def _funcdiff_hdf5(path: Path) -> Optional[dict]:
    """The attributes of our HDF5 layout (None for another format)."""
    import h5py

    from funcdiff.data.hdf5 import FORMAT_NAME

    if path.is_dir() or not h5py.is_hdf5(path):
        return None
    with h5py.File(path, "r") as f:
        if f.attrs.get("funcdiff_format") != FORMAT_NAME:
            return None
        attrs = {k: f.attrs[k] for k in ("fields", "num_written", "num_samples", "complete") if k in f.attrs}
        attrs["shapes"] = {k: f[k].shape for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        attrs["t"] = np.asarray(f["t"][...]) if "t" in f else None
    return attrs


def _hdf5_store(path: Path, attrs: dict, channels: Sequence[str]) -> Hdf5Store:
    """Checks as :func:`funcdiff.data.readers.read_funcdiff_hdf5` (complete file, the channels present)."""
    written = int(attrs["num_written"])
    if not attrs.get("complete"):
        raise ValueError(f"{path} is incomplete ({written} of {attrs.get('num_samples')} samples written); resume "
                         "the generation with the same arguments, or pass allow_partial=True")
    fields = json.loads(attrs["fields"]) if "fields" in attrs else []
    missing = [c for c in channels if c not in fields]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}; available: {sorted(fields)}")
    shapes = {attrs["shapes"][c][1:] for c in channels}
    if len(shapes) != 1:
        raise ValueError(f"{path}: cannot stack fields with different shapes {shapes}")
    return Hdf5Store(path, (written, len(channels), *shapes.pop()), channels)


def _era5_store(path: Path, channels: Sequence[str], samples: bool) -> tuple[Era5Store, Optional[Tensor]]:
    """An ERA5 store and its times as :func:`~funcdiff.tasks.forecast_io.read_trajectories` gives them ((N, T)
    hours, float64 from the float32 coordinate)."""
    import pandas as pd
    import xarray as xr

    from funcdiff.data.era5 import SEGMENT_ATTR, TIME_ORIGIN, segment_frames

    with xr.open_zarr(path, chunks=None) as ds:
        state = ds["state"]
        names = [str(c) for c in state["channel"].values]
        missing = [c for c in channels if c not in names]
        if missing:
            raise ValueError(f"{path}: missing field(s) {missing}; available: {sorted(names)}")
        times = state.indexes["time"]
        frames = segment_frames(times, ds.attrs.get(SEGMENT_ATTR))
        spatial = (state.sizes["latitude"], state.sizes["longitude"])
    count = len(times) // frames
    store = Era5Store(path, channels, frames, count, [names.index(c) for c in channels], spatial, samples)
    hours = torch.from_numpy(np.array((times[:frames] - TIME_ORIGIN) / pd.Timedelta(hours=1), dtype=np.float64))
    hours = hours.to(torch.float32).double()
    segment = float(hours[1] - hours[0]) * frames if frames > 1 else 0.0
    if not segment:
        return store, hours.to(torch.float32)
    return store, hours[None] + segment * torch.arange(count, dtype=torch.float64)[:, None]


def open_trajectories(path: str | os.PathLike, channels: Sequence[str]) -> tuple[LazyStore, Optional[Tensor]]:
    """A trajectory file as a lazy store ``(N, C, T, *S)`` of the named channels, and its time coordinate as
    :func:`~funcdiff.tasks.forecast_io.read_trajectories` gives it ((T,) float32, (N, T) float64 for an ERA5 store,
    or None). Reads metadata only (formats without a lazy reader are read whole). ValueError/UserError as the
    whole-file reader raises them."""
    from funcdiff.data.era5 import is_era5_store

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {path}")
    if is_era5_store(path):
        return _era5_store(path, channels, samples=False)
    attrs = _funcdiff_hdf5(path)
    if attrs is not None:
        store = _hdf5_store(path, attrs, channels)
        if len(store.shape) < 4:
            raise UserError(f"{path}: {list(channels)} are not trajectories (N, T, *S); got {store.shape}")
        times = attrs["t"]
        return store, None if times is None else torch.from_numpy(np.asarray(times)).to(torch.float32)
    from funcdiff.tasks.forecast_io import read_trajectories

    traj, times = read_trajectories(path, channels)
    return MemoryStore(path, traj, channels), times


def open_samples(path: str | os.PathLike, channels: Sequence[str]) -> LazyStore:
    """A case file as a lazy store of samples ``(N, C, *S)`` of the named channels (every frame of an ERA5 store
    is a sample), as :func:`~funcdiff.tasks.solve.read_truth_file` reads them whole. Metadata only."""
    from funcdiff.data.era5 import is_era5_store

    path = Path(path)
    if path.suffix in NETCDF_SUFFIXES:
        return _netcdf_store(path, channels)
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {path}")
    if is_era5_store(path):
        return _era5_store(path, channels, samples=True)[0]
    attrs = _funcdiff_hdf5(path)
    if attrs is not None:
        return _hdf5_store(path, attrs, channels)
    from funcdiff.tasks.solve import read_truth_file

    return MemoryStore(path, read_truth_file(path, channels), channels)


def _netcdf_store(path: Path, channels: Sequence[str]) -> NetcdfStore:
    import xarray as xr

    with xr.open_dataset(path, engine="netcdf4") as ds:
        missing = [name for name in channels if name not in ds.data_vars]
        if missing:
            raise ValueError(f"netCDF dataset lacks variables {missing}; it has {sorted(ds.data_vars)}")
        shape = (ds[channels[0]].shape[0], len(channels), *ds[channels[0]].shape[1:])
    return NetcdfStore(path, shape, channels)


__all__ = ["LazyStore", "Hdf5Store", "Era5Store", "NetcdfStore", "MemoryStore", "case_frames", "open_trajectories",
           "open_samples"]
