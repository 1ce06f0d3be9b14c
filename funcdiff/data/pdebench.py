"""PDEBench HDF5 files read lazily as one :class:`ArrayStore` (the layouts :func:`funcdiff.data.readers.read_pdebench`
reads in memory, with the same field names).

* Flat arrays: ``tensor`` (N, T, *S) -> ``u``; CFD ``density``/``pressure``/``Vx``/``Vy``/``Vz`` (N, T, *S);
  Darcy ``nu`` (N, *S) -> ``a`` with ``tensor`` (N, 1, *S) -> ``u`` (N, *S): a field store ``(N, C, *S)``.
* One group per sample: ``0000/data`` (T, *S, C) -> ``u`` (C = 1) or ``u0`` ... ``u{C-1}``: ``(N, C, T, *S)``.

Coordinates are those stored (``x-coordinate`` ... or ``<sample>/grid/x`` ...), keyed ``x``, ``y``, ``z``, ``t``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import h5py
import numpy as np

from funcdiff.data.readers import PDEBENCH_FIELDS, _attr_value, _is_sample_group
from funcdiff.data.stores import ArrayStore
from funcdiff.errors import UserError

AXES = ("x", "y", "z", "t")


@dataclass(frozen=True)
class PDEBenchChannel:
    """A flat-layout channel: the HDF5 dataset ``key``, with its axis 1 dropped when ``squeeze`` (Darcy ``u``)."""

    name: str
    key: str
    squeeze: bool = False


def _flat_channels(f: h5py.File) -> list[PDEBenchChannel]:
    """The flat layout's channels, in :func:`~funcdiff.data.readers.read_pdebench`'s order (``a`` and ``u`` last)."""
    squeeze = "nu" in f and "tensor" in f and f["tensor"].ndim == f["nu"].ndim + 1 and f["tensor"].shape[1] == 1
    channels = [PDEBenchChannel(k, k) for k in PDEBENCH_FIELDS if k in f and k not in ("tensor", "nu")]
    if "nu" in f:
        channels.append(PDEBenchChannel("a", "nu"))
    if "tensor" in f:
        channels.append(PDEBenchChannel("u", "tensor", squeeze))
    return channels


class PDEBenchStore(ArrayStore):
    """A PDEBench HDF5 file as a lazily read float32 array ``(N, C, T, *S)`` (trajectories) or ``(N, C, *S)``
    (Darcy pairs), channels named as :func:`funcdiff.data.readers.read_pdebench` names its fields.

    Args:
        path: the ``.h5``/``.hdf5`` file.
        fields: channel names to keep, in this order (``None``: all).
    """

    def __init__(self, path: str | os.PathLike, fields: Sequence[str] | None = None) -> None:
        super().__init__(path)
        try:
            with h5py.File(self.path, "r") as f:
                self._describe(f)
        except (OSError, KeyError) as err:
            raise UserError(f"{self.path}: not a readable PDEBench file ({type(err).__name__}: {err})") from None
        if fields is not None:
            missing = [k for k in fields if k not in self._all_names]
            if missing:
                raise UserError(f"{self.path}: no field(s) {missing}; available: {list(self._all_names)}")
            self.selected = [self._all_names.index(k) for k in fields]
            self.channel_names = tuple(fields)
            self.shape = (self.shape[0], len(fields), *self.shape[2:])

    def _describe(self, f: h5py.File) -> None:
        self.attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
        self.groups: list[str] = []
        self.flat: list[PDEBenchChannel] = []
        if any(k in f for k in PDEBENCH_FIELDS):
            self.flat = _flat_channels(f)
            shapes = {c.name: f[c.key].shape[:1] + f[c.key].shape[1 + c.squeeze:] for c in self.flat}
            if len(set(shapes.values())) != 1:
                raise UserError(f"{self.path}: fields of different shapes {shapes}; choose fields of one shape")
            names, rest = [c.name for c in self.flat], next(iter(shapes.values()))
            self.coords = {c: np.asarray(f[f"{c}-coordinate"]) for c in AXES if f"{c}-coordinate" in f}
            self.trajectories = not any(c.key == "nu" for c in self.flat)
        else:
            self.groups = sorted(k for k in f if _is_sample_group(f, k))
            if not self.groups:
                raise UserError(f"{self.path}: not a PDEBench file: expected datasets {list(PDEBENCH_FIELDS)} or "
                                f"sample groups '0000/data'; found keys {sorted(f)}")
            data, grid = f[self.groups[0]]["data"], f[self.groups[0]].get("grid")
            names = ["u"] if data.shape[-1] == 1 else [f"u{c}" for c in range(data.shape[-1])]
            rest = (len(self.groups), *data.shape[:-1])
            self.coords = {c: np.asarray(grid[c]) for c in AXES if grid is not None and c in grid}
            self.attrs["sample_groups"] = self.groups
            self.trajectories = True
        self._all_names = tuple(names)
        self.selected = list(range(len(names)))
        self.channel_names = tuple(names)
        self.shape = (rest[0], len(names), *rest[1:])

    def _open(self) -> h5py.File:
        return h5py.File(self.path, "r")

    def _read(self, handle: h5py.File, items: np.ndarray, frames: slice | None) -> np.ndarray:
        frames = frames if self.trajectories and frames is not None else slice(None)
        if not len(items):
            rest = list(self.shape[2:])
            rest[0] = len(range(rest[0])[frames]) if self.trajectories else rest[0]
            return np.empty((0, self.shape[1], *rest), dtype=np.float32)
        if self.groups:
            block = np.stack([np.moveaxis(np.asarray(handle[self.groups[i]]["data"][frames]), -1, 0)
                              for i in items.tolist()])
            return block[:, self.selected]
        rows = items.tolist()
        out = []
        for c in self.selected:
            channel = self.flat[c]
            index: tuple[Any, ...] = (rows, 0) if channel.squeeze else (rows,)
            out.append(np.asarray(handle[channel.key][index + ((frames,) if self.trajectories else ())]))
        return np.stack(out, axis=1)


__all__ = ["PDEBenchChannel", "PDEBenchStore"]
