"""The data of batch cases read lazily: one case's frames or sample at a time, never the whole file.

A batch of forecasts (``forecast --indices/--init-times``) needs, per case, the history frames before its start
(and, for twin-experiment sensors, the truth frames of its leads); a batch of inverse problems (``solve --cases``)
needs one sample per case. :func:`open_trajectories` and :func:`open_samples` open a data file as an
:class:`~funcdiff.data.stores.ArrayStore` from its metadata only; ``store.read([i], frames)`` then reads that
slice (h5py slicing, or zarr's selection, which reads only the chunks it touches):

* funcdiff HDF5 (``funcdiff data generate``): :class:`~funcdiff.data.stores.HDF5Store`;
* an ERA5 store of ``funcdiff data era5``: :class:`~funcdiff.data.stores.Era5ZarrStore` (consecutive segments of
  one series); as samples (:class:`FramesAsSamples`), every frame of every whole segment is one;
* netCDF case files (``fields_to_dataset``: one variable per channel along ``sample``): :class:`NetcdfStore`;
* any other format :func:`funcdiff.data.load_fields` reads (PDEBench, FNO ``.mat``, ``.pt``): read whole once, as
  before (:class:`MemoryStore`).

Values equal the whole-file readers' (:func:`funcdiff.tasks.forecast_io.read_trajectories`,
:func:`funcdiff.tasks.solve.read_truth_file`): float32 in physical units, times as those readers give them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from funcdiff.data.stores import ArrayStore, Era5ZarrStore, HDF5Store
from funcdiff.errors import UserError

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")


class NetcdfStore(ArrayStore):
    """A netCDF case file: one variable per channel along its first dimension (``sample``). Shapes: (N, C, *S)."""

    def __init__(self, path: str | os.PathLike, channels: Sequence[str]) -> None:
        import xarray as xr

        super().__init__(path)
        with xr.open_dataset(self.path, engine="netcdf4") as ds:
            missing = [name for name in channels if name not in ds.data_vars]
            if missing:
                raise ValueError(f"netCDF dataset lacks variables {missing}; it has {sorted(ds.data_vars)}")
            self.shape = (ds[channels[0]].shape[0], len(channels), *ds[channels[0]].shape[1:])
        self.channel_names = tuple(channels)

    def _open(self) -> Any:
        import xarray as xr

        return xr.open_dataset(self.path, engine="netcdf4", cache=False)

    def _read(self, handle: Any, items: np.ndarray, frames: slice | None) -> np.ndarray:
        first = handle[self.channel_names[0]].dims[0]
        chosen = handle[list(self.channel_names)].isel({first: items.tolist()})
        return np.stack([np.asarray(chosen[c].values, dtype=np.float32) for c in self.channel_names], axis=1)


class FramesAsSamples(ArrayStore):
    """The frames of a trajectory store ``(N, C, T, *S)`` as samples ``(N·T, C, *S)``: sample ``k`` is frame
    ``k % T`` of trajectory ``k // T`` (an ERA5 store: time step ``k`` of the series)."""

    def __init__(self, trajectories: ArrayStore) -> None:
        super().__init__(trajectories.path)
        n, c, t, *spatial = trajectories.shape
        self.trajectories, self.frames = trajectories, t
        self.shape, self.channel_names = (n * t, c, *spatial), trajectories.channel_names

    def _open(self) -> Any:
        return self.trajectories

    def _close(self, handle: Any) -> None:
        handle.close()

    def _read(self, handle: Any, items: np.ndarray, frames: slice | None) -> np.ndarray:
        t = self.frames
        return np.stack([handle.read([int(k) // t], slice(int(k) % t, int(k) % t + 1))[0, :, 0].numpy()
                         for k in items])


class MemoryStore(ArrayStore):
    """Data already read whole (formats without a lazy reader): reads slice the tensor."""

    def __init__(self, path: str | os.PathLike, data: Tensor, channels: Sequence[str]) -> None:
        super().__init__(path)
        self.shape, self.channel_names, self.data = tuple(data.shape), tuple(channels), data

    def _open(self) -> Any:
        return self.data

    def _close(self, handle: Any) -> None:
        """Nothing to close."""

    def _read(self, handle: Any, items: np.ndarray, frames: slice | None) -> np.ndarray:
        block = handle[torch.as_tensor(items)]
        return (block[:, :, frames] if frames is not None else block).numpy()


def time_units(store: ArrayStore) -> str:
    """The units of the times :func:`open_trajectories` returns with ``store``: CF units for an ERA5 store (its
    ``era5`` attributes), else "model time units"."""
    return str((store.attrs.get("era5") or {}).get("time_units", "model time units"))


def case_frames(store: ArrayStore, times: Optional[Tensor], path: str | os.PathLike, index: int,
                start_frame: Optional[int], history: int, frame_step: int = 1, truth_leads: Optional[int] = None
                ) -> tuple[Tensor, Tensor, int, float]:
    """:func:`~funcdiff.tasks.forecast_io.initial_from_trajectories` reading only trajectory ``index``'s frames
    from ``store``: the ``history`` frames ending at ``start_frame`` and the truth after it, at most
    ``truth_leads`` frames of it (None: to the end; 0: none). Same values, same errors.

    Shapes: store (N, C, T, *S); returns initial (C, history, *S), truth (C, L, *S), start frame, its time."""
    from funcdiff.tasks.forecast_io import history_frames

    t = store.shape[2]
    first, start = history_frames(store.shape, path, index, start_frame, history, frame_step)
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
def _is_funcdiff_hdf5(path: Path) -> bool:
    import h5py

    from funcdiff.data.hdf5 import FORMAT_NAME

    if path.is_dir() or not h5py.is_hdf5(path):
        return False
    with h5py.File(path, "r") as f:
        return f.attrs.get("funcdiff_format") == FORMAT_NAME


def _store_times(store: ArrayStore) -> Optional[Tensor]:
    """The time coordinate as :func:`~funcdiff.tasks.forecast_io.read_trajectories` gives it: (T,) float32, or
    (N, T) float64 for consecutive segments of one series (an ERA5 store), or None."""
    t = store.coords.get("t")
    if t is None:
        return None
    times = torch.from_numpy(np.asarray(t)).to(torch.float32)
    segment = (store.attrs.get("era5") or {}).get("segment_hours")
    if segment:
        return times.double()[None] + float(segment) * torch.arange(store.shape[0], dtype=torch.float64)[:, None]
    return times


def open_trajectories(path: str | os.PathLike, channels: Sequence[str]) -> tuple[ArrayStore, Optional[Tensor]]:
    """A trajectory file as a lazy store ``(N, C, T, *S)`` of the named channels, and its time coordinate as
    :func:`~funcdiff.tasks.forecast_io.read_trajectories` gives it ((T,) float32, (N, T) float64 for an ERA5 store,
    or None; units: :func:`time_units`). Reads metadata only (formats without a lazy reader are read whole).
    ValueError/UserError as the whole-file reader raises them."""
    from funcdiff.data.era5 import is_era5_store

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {path}")
    if is_era5_store(path) or _is_funcdiff_hdf5(path):
        store = Era5ZarrStore(path, channels) if path.is_dir() else HDF5Store(path, channels)
        if len(store.shape) < 4:
            raise UserError(f"{path}: {list(channels)} are not trajectories (N, T, *S); got {store.shape}")
        return store, _store_times(store)
    from funcdiff.tasks.forecast_io import read_trajectories

    traj, times = read_trajectories(path, channels)
    return MemoryStore(path, traj, channels), times


def open_samples(path: str | os.PathLike, channels: Sequence[str]) -> ArrayStore:
    """A case file as a lazy store of samples ``(N, C, *S)`` of the named channels (every frame of an ERA5 store
    is a sample), as :func:`~funcdiff.tasks.solve.read_truth_file` reads them whole. Metadata only."""
    from funcdiff.data.era5 import is_era5_store

    path = Path(path)
    if path.suffix in NETCDF_SUFFIXES:
        return NetcdfStore(path, channels)
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {path}")
    if is_era5_store(path):
        return FramesAsSamples(Era5ZarrStore(path, channels))
    if _is_funcdiff_hdf5(path):
        return HDF5Store(path, channels)
    from funcdiff.data import load_fields  # what read_truth_file does for these formats

    return MemoryStore(path, load_fields(path, fields=list(channels)).stack(tuple(channels)).float(), channels)


__all__ = ["NetcdfStore", "FramesAsSamples", "MemoryStore", "case_frames", "open_trajectories", "open_samples",
           "time_units"]
