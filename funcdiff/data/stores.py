"""Data on disk, read lazily: the one interface every streamed source implements (:class:`ArrayStore`).

A store presents a file or folder as an array ``(N, C, *rest)`` — ``rest`` is ``(*S)`` for fields and
``(T, *S)`` for trajectories (one continuous time axis, as in an ERA5 store, is ``N = 1`` trajectory) — and reads
only the items (and frames) asked for. It holds no open handle when pickled: h5py, netCDF and zarr handles are not
fork-safe, so each process (DataLoader worker, rank) opens its own on first read.
"""

from __future__ import annotations

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


__all__ = ["ArrayStore"]
