"""The Well HDF5 files read lazily (funcdiff.data.the_well): files written to the layout the ``the_well`` package
reads (and, when it is installed, by the package's own writer and checked against its own reader)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from store_checks import check_pickle_and_workers, check_reads, corrupt_first_chunk

from funcdiff.data import detect_format, load_fields
from funcdiff.data.the_well import TheWellStore, is_the_well_file
from funcdiff.errors import UserError

N, T, X, Y = 3, 5, 4, 6


def _dataset(group, name, values, sample, time, chunked=False, dim_varying=(True, True)):
    kwargs = {"chunks": True, "compression": "gzip"} if chunked else {}
    d = group.create_dataset(name, data=values, **kwargs)
    d.attrs["sample_varying"], d.attrs["time_varying"], d.attrs["dim_varying"] = sample, time, list(dim_varying)
    return d


def write_well(path, n=N, seed=0):
    """A 2-D file of The Well: pressure (t0), velocity (t1), stress (t2), a constant mask (shared by every
    trajectory) and a per-trajectory viscosity constant along y (stored (n, X, 1)). Returns the expected array
    (n, C, T, X, Y) and its channel names."""
    rng = np.random.default_rng(seed)
    p, v = rng.random((n, T, X, Y), "f4"), rng.random((n, T, X, Y, 2), "f4")
    s, mask, visc = rng.random((n, T, X, Y, 2, 2), "f4"), rng.random((X, Y), "f4"), rng.random((n, X, 1), "f4")
    with h5py.File(path, "w") as f:
        f.attrs.update({"dataset_name": "tiny", "grid_type": "cartesian", "n_spatial_dims": 2, "n_trajectories": n,
                        "simulation_parameters": ["Re"], "Re": 100.0})
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = ["x", "y"]
        for key, values in (("time", np.linspace(0, 1, T)), ("x", np.arange(X) / X), ("y", np.arange(Y) / Y)):
            dims.create_dataset(key, data=values).attrs["sample_varying"] = False
        bc = f.create_group("boundary_conditions").create_group("x_periodic")
        bc.attrs.update({"bc_type": "PERIODIC", "associated_dims": ["x"], "sample_varying": False,
                         "time_varying": False})
        scalars = f.create_group("scalars")
        scalars.attrs["field_names"] = ["Re"]
        _dataset(scalars, "Re", np.array(100.0), False, False)
        t0, t1, t2 = (f.create_group(f"t{i}_fields") for i in range(3))
        t0.attrs["field_names"], t1.attrs["field_names"], t2.attrs["field_names"] = ["pressure", "mask", "visc"], \
            ["velocity"], ["stress"]
        _dataset(t0, "pressure", p, True, True, chunked=True)
        _dataset(t0, "mask", mask, False, False)
        _dataset(t0, "visc", visc, True, False, dim_varying=(True, False))
        _dataset(t1, "velocity", v, True, True)
        _dataset(t2, "stress", s, True, True)
    channels = [p, v[..., 0], v[..., 1], *(s[..., i, j] for i in range(2) for j in range(2)),
                np.broadcast_to(mask, p.shape), np.broadcast_to(visc[:, None], p.shape)]
    names = ["pressure", "velocity_x", "velocity_y", "stress_xx", "stress_xy", "stress_yx", "stress_yy", "mask",
             "visc"]
    return np.stack(channels, axis=1), names


def test_store_reads_every_kind_of_field(tmp_path):
    expected, names = write_well(tmp_path / "tiny.hdf5")
    store = TheWellStore(tmp_path / "tiny.hdf5")
    assert is_the_well_file(tmp_path / "tiny.hdf5") and store.channel_names == tuple(names)
    check_reads(store, expected)
    np.testing.assert_allclose(store.coords["t"], np.linspace(0, 1, T))
    np.testing.assert_allclose(store.coords["y"], np.arange(Y) / Y)
    assert store.attrs["constant_channels"] == ["mask", "visc"] and store.attrs["params"] == {"Re": 100.0}
    assert store.attrs["boundary_conditions"]["x_periodic"]["bc_type"] == "PERIODIC"
    picked = TheWellStore(tmp_path / "tiny.hdf5", fields=["velocity", "pressure"])
    assert picked.channel_names == ("velocity_x", "velocity_y", "pressure")
    np.testing.assert_array_equal(picked.read([1]).numpy(), expected[[1]][:, [1, 2, 0]])
    with pytest.raises(UserError, match="no field"):
        TheWellStore(tmp_path / "tiny.hdf5", fields=["density"])


def test_folder_of_files_pickles_and_reads_in_workers(tmp_path):
    first, _ = write_well(tmp_path / "a.hdf5", n=2, seed=1)
    second, _ = write_well(tmp_path / "b.hdf5", n=1, seed=2)
    store = TheWellStore(tmp_path)
    assert is_the_well_file(tmp_path) and detect_format(tmp_path) == "the_well" and len(store) == 3
    check_pickle_and_workers(store, np.concatenate([first, second]))


def test_load_fields_returns_every_channel(tmp_path):
    expected, names = write_well(tmp_path / "tiny.h5")
    assert detect_format(tmp_path / "tiny.h5") == "the_well"
    data = load_fields(tmp_path / "tiny.h5", max_samples=2)
    assert data.source == "the_well" and list(data.fields) == names
    for c, name in enumerate(names):
        np.testing.assert_array_equal(data.fields[name].numpy(), expected[:2, c])
    assert set(data.coords) == {"t", "x", "y"}
    velocity = load_fields(tmp_path / "tiny.h5", fields=["velocity"], dtype=None)
    assert list(velocity.fields) == ["velocity_x", "velocity_y"]
    np.testing.assert_array_equal(velocity.fields["velocity_y"].numpy(), expected[:, 2])


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    path = tmp_path / "tiny.hdf5"
    write_well(path)
    store = TheWellStore(path)
    corrupt_first_chunk(path, "t0_fields/pressure")
    with pytest.raises(UserError, match=r"tiny\.hdf5.*item"):
        store.read([0])
    store.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match=r"tiny\.hdf5"):
        TheWellStore(path)
    with pytest.raises(UserError, match=r"tiny\.hdf5: not a readable HDF5 file"):
        detect_format(path)


def test_the_well_package_writer_and_reader_agree(tmp_path):
    dummy = pytest.importorskip("the_well.utils.dummy_data")
    datasets = pytest.importorskip("the_well.data.datasets")
    dummy.write_dummy_data(str(tmp_path / "dummy.hdf5"))
    well = datasets.WellDataset(path=str(tmp_path), use_normalization=False, full_trajectory_mode=True,
                                n_steps_input=1)
    store = TheWellStore(tmp_path / "dummy.hdf5")
    varying = [n for names in well.metadata.field_names.values() for n in names]
    constant = [n for names in well.metadata.constant_field_names.values() for n in names]
    assert store.channel_names == tuple(varying + constant) and len(store) == len(well)
    for i in range(len(well)):
        item, ours = well[i], store.read([i])[0].numpy()
        trajectory = np.concatenate([item["input_fields"], item["output_fields"]]).transpose(3, 0, 1, 2)
        np.testing.assert_array_equal(ours[: len(varying)], trajectory)
        np.testing.assert_array_equal(ours[len(varying):, 0], np.asarray(item["constant_fields"]).transpose(2, 0, 1))
