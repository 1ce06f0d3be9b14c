"""The Well (Ohana et al., NeurIPS 2024 datasets track) HDF5 files, read lazily as one :class:`ArrayStore`.

Layout of a file (as the ``the_well`` package writes and reads it): root attributes ``dataset_name``,
``grid_type``, ``n_spatial_dims``, ``n_trajectories`` and ``simulation_parameters`` (names of root attributes
holding the parameters); groups ``dimensions`` (``time`` and one array per spatial dimension, listed in its
``spatial_dims`` attribute, each possibly per trajectory when ``sample_varying``), ``boundary_conditions``
(one group per condition: ``bc_type``, ``associated_dims``, ``mask``), ``scalars`` and ``t0_fields`` /
``t1_fields`` / ``t2_fields`` (scalar, vector and rank-2 tensor fields named in each group's ``field_names``).
A field is stored ``([n_trajectories,] [n_steps,] *space, [d, [d]])``: the trajectory axis only when
``sample_varying``, the time axis only when ``time_varying``, size-1 spatial axes where ``dim_varying`` is false.

The store is ``(N, C, T, *S)``: N trajectories (of all files of a folder, in file-name order), C channels named
as The Well names them (``pressure``; ``velocity_x``, ``velocity_y``; ``stress_xx``, ``stress_xy``, ...), the
time-varying fields first and then the constant ones (repeated over time; listed in ``attrs["constant_channels"]``),
T time steps, S the spatial grid. Values are in the dataset's units; coordinates ``t`` (time) and one per spatial
dimension (``x``, ``y``, ``z``, or the file's names) are those stored (the first trajectory's when they vary).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from funcdiff.data.fields import FieldData
from funcdiff.data.stores import ArrayStore
from funcdiff.errors import UserError

FIELD_GROUPS = ("t0_fields", "t1_fields", "t2_fields")
SUFFIXES = (".hdf5", ".h5", ".hdf")


@dataclass(frozen=True)
class WellChannel:
    """One channel: a component of a stored field. ``component`` indexes the trailing tensor axes (``()`` for a
    scalar field, ``(i,)`` for vector component i, ``(i, j)`` for a rank-2 tensor)."""

    name: str
    dataset: str
    component: tuple[int, ...]
    time_varying: bool
    sample_varying: bool


def _is_well_h5(path: Path) -> bool:
    try:
        if not (path.is_file() and h5py.is_hdf5(path)):
            return False
        with h5py.File(path, "r") as f:
            return "dimensions" in f and "t1_fields" in f and "n_spatial_dims" in f.attrs
    except OSError:
        return False


def well_files(path: str | os.PathLike) -> list[Path]:
    """The HDF5 files of ``path``: the file itself, or a folder's ``*.hdf5``/``*.h5`` files in name order."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
    return [path]


def is_the_well_file(path: str | os.PathLike) -> bool:
    """True for a file in The Well's layout, or a folder whose first HDF5 file is one (e.g. ``data/train``)."""
    files = well_files(path)
    return bool(files) and _is_well_h5(files[0])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _texts(values: Any) -> list[str]:
    return [_text(v) for v in np.atleast_1d(values)] if values is not None else []


def _plain(value: Any) -> Any:
    """An HDF5 attribute or small array as JSON-friendly Python (numbers, strings, lists)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else [_plain(v) for v in value.tolist()]
    return value.item() if isinstance(value, np.generic) else value


def well_channels(f: h5py.File) -> list[WellChannel]:
    """Channels of an open file in The Well's order: time-varying fields (t0, t1, t2), then constant fields."""
    dims = _texts(f["dimensions"].attrs["spatial_dims"])
    varying, constant = [], []
    for order, group in enumerate(FIELD_GROUPS):
        if group not in f:
            continue
        suffixes = list(itertools.product(range(len(dims)), repeat=order))
        for field in _texts(f[group].attrs.get("field_names", [])):
            attrs = f[group][field].attrs
            for comp in suffixes:
                name = f"{field}_{''.join(dims[i] for i in comp)}" if comp else field
                channel = WellChannel(name, f"{group}/{field}", tuple(comp), bool(attrs["time_varying"]),
                                      bool(attrs["sample_varying"]))
                (varying if channel.time_varying else constant).append(channel)
    return varying + constant


@dataclass(frozen=True)
class _FileInfo:
    trajectories: int
    steps: int
    space: tuple[int, ...]
    names: tuple[str, ...]


def _file_info(f: h5py.File) -> _FileInfo:
    dims = _texts(f["dimensions"].attrs["spatial_dims"])
    space = tuple(int(f["dimensions"][d].shape[-1]) for d in dims)
    return _FileInfo(int(f.attrs["n_trajectories"]), int(f["dimensions"]["time"].shape[-1]), space,
                     tuple(c.name for c in well_channels(f)))


def _first_row(dataset: h5py.Dataset) -> np.ndarray:
    """A coordinate array, the first trajectory's when it is stored per trajectory. Shapes: -> (len,)."""
    values = np.asarray(dataset)
    return values.reshape(-1, values.shape[-1])[0] if values.ndim > 1 else values.reshape(-1)


def _well_attrs(f: h5py.File, channels: Sequence[WellChannel], files: Sequence[Path]) -> dict[str, Any]:
    params = _texts(f.attrs.get("simulation_parameters"))
    scalars = {}
    if "scalars" in f:
        for name in _texts(f["scalars"].attrs.get("field_names")):
            s = f["scalars"][name]
            if not s.attrs.get("time_varying", False) and not s.attrs.get("sample_varying", False):
                scalars[name] = _plain(np.asarray(s))
    bcs = {name: {"bc_type": _text(g.attrs.get("bc_type", "")), "associated_dims": _texts(g.attrs.get(
        "associated_dims"))} for name, g in f.get("boundary_conditions", {}).items()}
    return {"dataset_name": _text(f.attrs.get("dataset_name", "")), "grid_type": _text(f.attrs.get("grid_type", "")),
            "spatial_dims": _texts(f["dimensions"].attrs["spatial_dims"]),
            "params": {p: _plain(f.attrs[p]) for p in params if p in f.attrs}, "scalars": scalars,
            "boundary_conditions": bcs, "constant_channels": [c.name for c in channels if not c.time_varying],
            "files": [str(p) for p in files]}


class _OpenFiles:
    """h5py files opened on first use (one process's handles)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths, self._open = list(paths), {}

    def get(self, index: int) -> h5py.File:
        if index not in self._open:
            self._open[index] = h5py.File(self.paths[index], "r")
        return self._open[index]

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()


class TheWellStore(ArrayStore):
    """A file or folder of The Well as a lazily read ``(N, C, T, *S)`` float32 array (see the module docstring).

    Args:
        path: one HDF5 file, or a folder of them (one split, e.g. ``datasets/active_matter/data/train``).
        fields: channel names to keep, in this order (``velocity_x``, or a field's name for all its
            components, e.g. ``velocity``); ``None`` keeps every channel.

    Shapes:
        shape ``(N, C, T, *S)``; ``coords["t"]`` ``(T,)``, ``coords[dim]`` ``(S_i,)`` for each spatial dim.
    """

    def __init__(self, path: str | os.PathLike, fields: Sequence[str] | None = None) -> None:
        super().__init__(path)
        self.files = well_files(self.path)
        if not self.files:
            raise UserError(f"{self.path}: no HDF5 files (*.hdf5, *.h5) in this folder")
        infos = [self._scan(p) for p in self.files]
        first = infos[0]
        for p, info in zip(self.files[1:], infos[1:]):
            if (info.steps, info.space, info.names) != (first.steps, first.space, first.names):
                raise UserError(f"{p}: does not match {self.files[0]} (steps {info.steps} vs {first.steps}, grid "
                                f"{info.space} vs {first.space}, channels {list(info.names)} vs {list(first.names)})")
        self.offsets = np.cumsum([0] + [i.trajectories for i in infos])
        with h5py.File(self.files[0], "r") as f:
            self.channels = self._select(well_channels(f), fields)
            dims = _texts(f["dimensions"].attrs["spatial_dims"])
            self.coords = {"t": _first_row(f["dimensions"]["time"]),
                           **{d: _first_row(f["dimensions"][d]) for d in dims}}
            self.attrs = _well_attrs(f, self.channels, self.files)
        self.channel_names = tuple(c.name for c in self.channels)
        self.shape = (int(self.offsets[-1]), len(self.channels), first.steps, *first.space)

    def _scan(self, path: Path) -> _FileInfo:
        try:
            with h5py.File(path, "r") as f:
                return _file_info(f)
        except (OSError, KeyError) as err:
            raise UserError(f"{path}: not a readable file of The Well ({type(err).__name__}: {err})") from None

    def _select(self, channels: list[WellChannel], fields: Sequence[str] | None) -> list[WellChannel]:
        if fields is None:
            return channels
        chosen, missing = [], []
        for name in fields:
            match = [c for c in channels if c.name == name] or [c for c in channels if c.dataset.endswith("/" + name)]
            chosen += match
            missing += [] if match else [name]
        if missing:
            raise UserError(f"{self.path}: no field(s) {missing} in this The Well file; available: "
                            f"{[c.name for c in channels]}")
        return chosen

    def _open(self) -> _OpenFiles:
        return _OpenFiles(self.files)

    def _read(self, handle: _OpenFiles, items: np.ndarray, frames: slice | None) -> np.ndarray:
        steps = range(self.shape[2])[frames or slice(None)]
        out = np.empty((len(items), len(self.channels), len(steps), *self.shape[3:]), dtype=np.float32)
        which = np.searchsorted(self.offsets, items, side="right") - 1
        for index in np.unique(which):
            rows = np.flatnonzero(which == index)
            local = (items[rows] - self.offsets[index]).tolist()
            out[rows] = self._read_file(handle.get(int(index)), local, slice(steps.start, steps.stop, steps.step))
        return out

    def _read_file(self, f: h5py.File, local: list[int], frames: slice) -> np.ndarray:
        """Trajectories ``local`` (sorted) of one file, all channels. Shapes: -> (len(local), C, T', *S)."""
        steps = len(range(self.shape[2])[frames])
        out = np.empty((len(local), len(self.channels), steps, *self.shape[3:]), dtype=np.float32)
        cache: dict[str, np.ndarray] = {}
        for c, channel in enumerate(self.channels):
            if channel.dataset not in cache:
                cache[channel.dataset] = self._read_field(f[channel.dataset], channel, local, frames)
            values = cache[channel.dataset][(Ellipsis, *channel.component)]
            out[:, c] = np.broadcast_to(values, out.shape[:1] + out.shape[2:])
        return out

    def _read_field(self, dataset: h5py.Dataset, channel: WellChannel, local: list[int], frames: slice
                    ) -> np.ndarray:
        """One stored field, as ``(n or 1, T' or 1, *S (size 1 where constant), *tensor)``."""
        index: tuple = ((local,) if channel.sample_varying else ()) + ((frames,) if channel.time_varying else ())
        values = np.asarray(dataset[index] if index else dataset[()])
        if not channel.sample_varying:
            values = values[None]
        if not channel.time_varying:
            values = values[:, None]
        space, stored = len(self.shape) - 3, values.ndim - 2 - len(channel.component)
        varying = [bool(v) for v in np.atleast_1d(dataset.attrs.get("dim_varying", [True] * space))]
        if stored != space and stored == sum(varying) and len(varying) == space:  # constant axes left out
            values = np.expand_dims(values, tuple(2 + i for i, v in enumerate(varying) if not v))
        elif stored != space:
            raise ValueError(f"field {dataset.name} has shape {dataset.shape}, expected {space} spatial axes")
        return values


def read_the_well(path: str | os.PathLike, *, max_samples: int | None = None,
                  fields: Sequence[str] | None = None) -> FieldData:
    """A file or folder of The Well in memory: one field per channel ``(N, T, *S)`` (float32), coordinates
    ``t`` and the spatial dimensions (float64), attributes as :class:`TheWellStore`. Reads the first
    ``max_samples`` trajectories at most."""
    import torch

    store = TheWellStore(path, fields=fields)
    try:
        count = len(store) if max_samples is None else min(len(store), int(max_samples))
        values = store.read(np.arange(count))
    finally:
        store.close()
    data = {name: values[:, c].contiguous() for c, name in enumerate(store.channel_names)}
    coords = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in store.coords.items()}
    return FieldData(data, coords, dict(store.attrs), "the_well", str(store.path))


__all__ = ["TheWellStore", "WellChannel", "is_the_well_file", "read_the_well", "well_channels", "well_files"]
