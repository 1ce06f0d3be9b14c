"""Checks every lazily read store (:class:`funcdiff.data.stores.ArrayStore`) must pass, shared by the reader tests:
reads equal the values written (items in any order, repeated, a frames slice), pickling drops the open handle, and
DataLoader worker processes read the same values."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class StoreItems(Dataset):
    """Item i of a store, ``(C, *rest)``, as a DataLoader reads it in a worker."""

    def __init__(self, store) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.store.read([index])[0]


def check_reads(store, expected: np.ndarray, frames: slice | None = slice(1, 3)) -> None:
    """``expected`` is the whole array ``(N, C, *rest)`` as written; ``frames`` cuts axis 2 (None: fields)."""
    assert store.shape == expected.shape
    items = [len(store) - 1, 0, len(store) - 1, 0]
    got = store.read(items, frames=frames)
    want = expected[items] if frames is None else expected[items][:, :, frames]
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), want.astype(np.float32))
    np.testing.assert_array_equal(store.read(np.arange(len(store))).numpy(), expected.astype(np.float32))


def check_pickle_and_workers(store, expected: np.ndarray) -> None:
    """A store with an open handle pickles without it, and two DataLoader workers read every item."""
    store.read([0])
    clone = pickle.loads(pickle.dumps(store))
    assert clone._handle is None
    np.testing.assert_array_equal(clone.read([0]).numpy(), expected[:1].astype(np.float32))
    loader = DataLoader(StoreItems(clone), batch_size=1, num_workers=2, shuffle=False)
    got = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    store.close()
    clone.close()


def corrupt_first_chunk(path, dataset: str) -> None:
    """Overwrite the bytes of a chunked, compressed HDF5 dataset's first chunk with garbage (metadata intact)."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset)
        raw.write(b"\xff" * info.size)
