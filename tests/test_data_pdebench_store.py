"""PDEBench HDF5 read lazily (funcdiff.data.pdebench.PDEBenchStore): the same channels and values as the in-memory
reader (``read_pdebench``) for the flat, Darcy and per-sample-group layouts."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from store_checks import check_pickle_and_workers, check_reads, corrupt_first_chunk

from funcdiff.data.pdebench import PDEBenchStore
from funcdiff.data.readers import read_pdebench
from funcdiff.errors import UserError

RNG = np.random.default_rng(0)


def _in_memory(path, names):
    data = read_pdebench(path)
    assert list(data.fields) == list(names)
    return np.stack([data.fields[k].numpy() for k in names], axis=1)


def test_flat_cfd_arrays_and_coordinates(tmp_path):
    path = tmp_path / "2D_CFD.hdf5"
    with h5py.File(path, "w") as f:
        for key in ("density", "pressure", "Vx", "Vy"):
            f.create_dataset(key, data=RNG.standard_normal((3, 4, 5, 6)).astype("f4"), chunks=(1, 4, 5, 6),
                             compression="gzip")
        f["x-coordinate"], f["t-coordinate"] = np.arange(5) / 5, np.linspace(0, 1, 5)
    store = PDEBenchStore(path)
    assert store.channel_names == ("density", "pressure", "Vx", "Vy") and store.shape == (3, 4, 4, 5, 6)
    check_reads(store, _in_memory(path, store.channel_names))
    np.testing.assert_array_equal(store.coords["x"], np.arange(5) / 5)
    picked = PDEBenchStore(path, fields=["Vy", "density"])
    np.testing.assert_array_equal(picked.read([2]).numpy(), _in_memory(path, store.channel_names)[[2]][:, [3, 0]])
    with pytest.raises(UserError, match="no field"):
        PDEBenchStore(path, fields=["u"])
    corrupt_first_chunk(path, "Vx")
    with pytest.raises(UserError, match=r"2D_CFD\.hdf5.*item"):
        store.read([0])


def test_darcy_pairs_are_a_field_store(tmp_path):
    path = tmp_path / "2D_DarcyFlow_beta1.0.hdf5"
    with h5py.File(path, "w") as f:
        f["nu"], f["tensor"] = RNG.random((4, 6, 6)) + 1, RNG.random((4, 1, 6, 6))
    store = PDEBenchStore(path)
    assert store.channel_names == ("a", "u") and store.shape == (4, 2, 6, 6)
    check_reads(store, _in_memory(path, ("a", "u")), frames=None)


def test_sample_groups_pickle_and_read_in_workers(tmp_path):
    path = tmp_path / "2D_diff-react.h5"
    with h5py.File(path, "w") as f:
        for i in range(3):
            f[f"{i:04d}/data"] = RNG.standard_normal((4, 5, 6, 2)).astype("f4")  # (T, X, Y, C)
            f[f"{i:04d}/grid/x"], f[f"{i:04d}/grid/t"] = np.arange(5) / 5, np.arange(4) * 0.1
    store = PDEBenchStore(path)
    expected = _in_memory(path, ("u0", "u1"))
    assert store.shape == (3, 2, 4, 5, 6) and set(store.coords) == {"x", "t"}
    check_reads(store, expected)
    check_pickle_and_workers(store, expected)
    data = path.read_bytes()
    path.write_bytes(data[:200])
    with pytest.raises(UserError, match=r"2D_diff-react\.h5"):
        PDEBenchStore(path)
