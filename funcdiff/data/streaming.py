"""Training items streamed from a store on disk: which slices of an :class:`~funcdiff.data.stores.ArrayStore` make
the items (:class:`ItemIndex`: whole samples, or windows of a trajectory that never cross a gap in its time axis),
a map-style torch Dataset that reads a batch of them in one call (:class:`StoreItems`), per-channel normalisation
statistics from one chunked float64 pass (:func:`streaming_normalizer`), and the dispatcher :func:`open_store`.

The items and their order are those of the in-memory path (:class:`~funcdiff.data.FieldDataset` over the same
samples, :func:`~funcdiff.data.windows.trajectory_windows` over the same trajectories), so a streamed run and an
in-memory run see the same batches. The store opens its file in each process that reads (DataLoader workers
included), so the dataset is fork- and spawn-safe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from funcdiff.data.normalization import Normalizer
from funcdiff.data.stores import ArrayStore, Era5ZarrStore, HDF5Store, XarrayStore
from funcdiff.errors import UserError


# ----------------------------------------------------------------------------------------------- opening
def open_store(path: str | os.PathLike, channels: Sequence[str]) -> ArrayStore:
    """The :class:`ArrayStore` of ``path`` with channels ``channels``, by what it is: The Well HDF5
    (:class:`funcdiff.data.the_well.TheWellStore`), an anemoi-datasets zarr (:class:`funcdiff.data.anemoi.AnemoiStore`),
    a ``funcdiff data era5`` store (:class:`~funcdiff.data.stores.Era5ZarrStore`), WB2/ARCO zarr or CDS netCDF files
    or a glob of them (:class:`~funcdiff.data.stores.XarrayStore`), PDEBench HDF5
    (:class:`funcdiff.data.pdebench.PDEBenchStore`), or HDF5 with one dataset per channel
    (:class:`~funcdiff.data.stores.HDF5Store`: ours).

    UserError for a path that does not exist or is none of these."""
    text, p = str(path), Path(path)
    if any(ch in text for ch in "*?[") or p.suffix.lower() in (".nc", ".nc4", ".netcdf"):
        return XarrayStore(text, channels)
    if not p.exists():
        raise UserError(f"no such data file or store: {p}")
    from funcdiff.data.anemoi import AnemoiStore, is_anemoi_store
    from funcdiff.data.the_well import TheWellStore, is_the_well_file

    if is_the_well_file(p):
        return TheWellStore(p, channels)
    if is_anemoi_store(p):
        return AnemoiStore(p, channels)
    if p.is_dir():
        from funcdiff.data.era5 import is_era5_store

        return Era5ZarrStore(p, channels) if is_era5_store(p) else XarrayStore(text, channels)
    import h5py

    if h5py.is_hdf5(p):
        from funcdiff.data.pdebench import PDEBenchStore
        from funcdiff.data.readers import detect_format

        return PDEBenchStore(p, channels) if detect_format(p) == "pdebench" else HDF5Store(p, channels)
    raise UserError(f"{p}: cannot stream this file (streamed formats: HDF5, zarr stores, netCDF); "
                    "set data.stream: false to read it whole")


# ----------------------------------------------------------------------------------------------- items
@dataclass(frozen=True)
class ItemIndex:
    """Training item ``i`` is store item ``items[i]``, whole (``length == 0``), or its frames
    ``starts[i] + frame_step·(0..length-1)`` (a window). Arrays are int64 ``(M,)``."""

    items: np.ndarray
    starts: np.ndarray | None = None
    length: int = 0
    frame_step: int = 1
    squeeze: bool = False  # one-frame windows read as fields (C, *S): every frame of a trajectory store a sample

    def __len__(self) -> int:
        return int(self.items.size)

    def subset(self, rows: Sequence[int] | Tensor) -> "ItemIndex":
        """The items ``rows`` of this index, in that order."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        starts = None if self.starts is None else self.starts[rows]
        return ItemIndex(self.items[rows], starts, self.length, self.frame_step, self.squeeze)

    def frames(self, i: int) -> slice | None:
        """The frames of item ``i`` as a slice of the store's time axis (None: the whole item)."""
        if self.length == 0:
            return None
        start = int(self.starts[i])
        return slice(start, start + (self.length - 1) * self.frame_step + 1, self.frame_step)


def field_index(items: Sequence[int] | Tensor) -> ItemIndex:
    """Whole store items ``items`` (e.g. the training split of a field dataset) as training items."""
    return ItemIndex(np.asarray(items, dtype=np.int64).reshape(-1))


def frame_times(store: ArrayStore) -> np.ndarray | None:
    """The times ``(N, T)`` of every frame of a trajectory store from its ``coords["time"]`` (``(N·T,)`` or ``(T,)``
    with N = 1), or None when it has none."""
    time = store.coords.get("time")
    if time is None or len(store.shape) < 4:
        return None
    n, steps = store.shape[0], store.shape[2]
    time = np.asarray(time)
    return time.reshape(n, steps) if time.size == n * steps else None


def valid_steps(times: np.ndarray) -> np.ndarray:
    """``ok[t]``: the step from frame t to t+1 is the nominal step (the most common one). Shapes: (T,) -> (T-1,)."""
    steps = np.diff(times)
    if steps.size == 0:
        return np.ones(0, dtype=bool)
    values, counts = np.unique(steps, return_counts=True)
    return steps == values[np.argmax(counts)]


def window_index(store: ArrayStore, trajectories: Sequence[int] | Tensor, length: int, stride: int = 1,
                 frame_step: int = 1, squeeze: bool = False) -> ItemIndex:
    """Windows of ``length`` frames spaced ``frame_step`` of the trajectories ``trajectories`` (store items), starting
    every ``stride`` frames, trajectory-major: the windows (and order) of
    :func:`funcdiff.data.windows.trajectory_windows`, less any window that crosses a gap of the store's time axis
    (a step other than the nominal one, :func:`valid_steps`). ``squeeze`` (``length == 1``): items are the frames
    as fields ``(C, *S)``. UserError when no window fits."""
    steps, span = store.shape[2], (length - 1) * frame_step + 1
    if length < 1 or stride < 1 or frame_step < 1 or span > steps:
        raise UserError(f"a window of {length} frames spaced {frame_step} apart needs {span} frames (stride "
                        f"{stride}); the trajectories of {store.path} have {steps}")
    starts = np.arange(0, steps - span + 1, stride, dtype=np.int64)
    times = frame_times(store)
    items, firsts = [], []
    for n in np.asarray(trajectories, dtype=np.int64).reshape(-1):
        keep = starts
        if times is not None:
            bad = np.concatenate([[0], np.cumsum(~valid_steps(times[n]))])  # gaps before frame t
            keep = starts[bad[starts + span - 1] == bad[starts]]
        items.append(np.full(keep.size, n, dtype=np.int64))
        firsts.append(keep)
    index = ItemIndex(np.concatenate(items), np.concatenate(firsts), int(length), int(frame_step), squeeze)
    if not len(index):
        raise UserError(f"{store.path}: no window of {length} frames fits between the gaps of its time axis")
    return index


# ----------------------------------------------------------------------------------------------- dataset
@dataclass(frozen=True)
class ReadFailure:
    """A read that failed in a DataLoader worker, carried to the main process as data (its one-line message)."""

    message: str


class StoreItems(Dataset):
    """A map-style dataset of the raw (physical, float32) items ``(C, *rest)`` of ``store`` selected by ``index``.

    ``__getitems__`` reads a whole batch in one call ``(b, C, *rest)`` (torch's DataLoader uses it with a batch
    sampler): fields as one read of the sorted items, windows one read each. A chunk that cannot be read, or that
    holds NaN/Inf (a missing zarr chunk reads as its NaN fill value), gives a :class:`ReadFailure` naming the file
    and the store items instead of raising in a worker.
    """

    def __init__(self, store: ArrayStore, index: ItemIndex) -> None:
        self.store, self.index = store, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Tensor:
        return self.read([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> Tensor | ReadFailure:
        try:
            return self.read(indices)
        except UserError as err:
            return ReadFailure(str(err))

    def read(self, indices: Sequence[int] | Tensor) -> Tensor:
        """Items ``indices`` ``(b, C, *rest)``; UserError naming the file and the store items on a bad chunk."""
        rows = np.asarray(indices, dtype=np.int64).reshape(-1)
        items = self.index.items[rows]
        if self.index.length == 0:
            x = self.store.read(items)
        else:
            x = torch.cat([self.store.read([n], self.index.frames(int(r))) for n, r in zip(items, rows)])
            x = x[:, :, 0] if self.index.squeeze else x
        if not bool(torch.isfinite(x).all()):
            raise UserError(f"{self.store.path}: item(s) {sorted(set(items.tolist()))} hold NaN or Inf values (a "
                            "missing or corrupt chunk?)")
        return x


def pass_through(batch: Any) -> Any:
    """The DataLoader's ``collate_fn`` for :meth:`StoreItems.__getitems__` (which already returns the batch)."""
    return batch


# ----------------------------------------------------------------------------------------------- statistics
def frame_weights(index: ItemIndex, steps: int) -> dict[int, np.ndarray]:
    """For each store item of ``index``: how many of its windows contain each of its frames, ``(T,)`` int64."""
    order = np.argsort(index.items, kind="stable")
    items, firsts = np.unique(index.items[order], return_index=True)
    out = {}
    for item, starts in zip(items.tolist(), np.split(index.starts[order], firsts[1:])):
        weights = np.zeros(steps, dtype=np.int64)
        for k in range(index.length):
            np.add.at(weights, starts + k * index.frame_step, 1)
        out[item] = weights
    return out


class _Moments:
    """Per-channel weighted count, mean and sum of squared deviations in float64, merged chunk by chunk
    (Chan, Golub & LeVeque 1979, the pairwise update)."""

    def __init__(self, channels: int) -> None:
        self.n = np.zeros(channels)
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)

    def add(self, x: np.ndarray, weights: np.ndarray) -> None:
        """``x`` ``(k, C, *S)`` with weights ``(k,)`` (per frame or sample)."""
        x = x.astype(np.float64)
        w = weights.astype(np.float64).reshape(-1, 1, *[1] * (x.ndim - 2))
        points = int(np.prod(x.shape[2:]))
        n_b = float(weights.sum()) * points
        if n_b == 0:
            return
        axes = (0, *range(2, x.ndim))
        mean_b = (w * x).sum(axis=axes) / n_b
        m2_b = (w * (x - mean_b.reshape(1, -1, *[1] * (x.ndim - 2))) ** 2).sum(axis=axes)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta ** 2 * self.n * n_b / n
        self.n = n


def streaming_normalizer(items: StoreItems, channel_names: Sequence[str], chunk_bytes: int = 1 << 26,
                         eps: float = 1e-12) -> Normalizer:
    """Mean and population std per channel over every value of every training item of ``items`` — a frame in
    several windows counts once per window, as :meth:`Normalizer.fit` over the in-memory windows counts it — read
    in chunks of about ``chunk_bytes`` and accumulated in float64 (:class:`_Moments`). A std below ``eps`` is 1."""
    store, index = items.store, items.index
    moments = _Moments(store.num_channels)
    per_item = 4 * int(np.prod(store.shape[1:]))
    if index.length == 0:
        rows, counts = np.unique(index.items, return_counts=True)
        size = max(1, chunk_bytes // per_item)
        for start in range(0, rows.size, size):
            moments.add(_checked(items, rows[start:start + size]).numpy(), counts[start:start + size])
    else:
        steps = store.shape[2]
        size = max(1, chunk_bytes // max(1, per_item // steps))
        for n, weights in frame_weights(index, steps).items():
            for start in range(0, steps, size):
                w = weights[start:start + size]
                if w.any():
                    block = _checked(items, [n], slice(start, start + w.size))[0].movedim(1, 0)  # (k, C, *S)
                    moments.add(block.numpy(), w)
    std = np.sqrt(moments.m2 / moments.n)
    std = np.where(std > eps, std, 1.0)
    return Normalizer(torch.from_numpy(moments.mean), torch.from_numpy(std), tuple(channel_names))


def _checked(items: StoreItems, store_items: Sequence[int] | np.ndarray, frames: slice | None = None) -> Tensor:
    x = items.store.read(store_items, frames)
    if not bool(torch.isfinite(x).all()):
        raise UserError(f"{items.store.path}: item(s) {list(np.asarray(store_items).tolist())} hold NaN or Inf values "
                        "(a missing or corrupt chunk?)")
    return x


# ----------------------------------------------------------------------------------------------- what a kind returns
@dataclass
class StreamedDataset:
    """A streamed training or validation set: the items, their normaliser, channel names and the file's ``source``
    attributes (as :class:`~funcdiff.data.FieldDataset` has them; checkpoints record them)."""

    items: StoreItems
    normalizer: Normalizer
    channel_names: tuple[str, ...]
    source: dict

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_channels(self) -> int:
        return self.items.store.num_channels


__all__ = ["ItemIndex", "ReadFailure", "StoreItems", "StreamedDataset", "field_index", "frame_times", "frame_weights",
           "open_store", "pass_through", "streaming_normalizer", "valid_steps", "window_index"]
