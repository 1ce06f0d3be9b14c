"""Readers: PDEBench HDF5, FNO .mat (v7.3 and v5), neuraloperator .pt, format detection and errors."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from funcdiff.data import FieldDataset, detect_format, load_fields



def _shared_dir() -> Path:
    """The neuralop-0.3.0 folder: ``$FUNCDIFF_SHARED_DATA`` (that folder or its parent), else ../shared/data."""
    root = Path(os.environ.get("FUNCDIFF_SHARED_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))
    return root if root.name == "neuralop-0.3.0" else root / "neuralop-0.3.0"


SHARED = _shared_dir()
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared neuralop data not found at {SHARED}")
RNG = np.random.default_rng(0)


def test_pdebench_1d_flat(tmp_path):
    tensor = RNG.standard_normal((3, 4, 10)).astype(np.float32)
    x, t = (np.arange(10) + 0.5) / 10, np.linspace(0, 2, 5)
    with h5py.File(tmp_path / "1D_Advection_Sols_beta0.1.hdf5", "w") as f:
        f["tensor"], f["x-coordinate"], f["t-coordinate"] = tensor, x, t
    data = load_fields(tmp_path / "1D_Advection_Sols_beta0.1.hdf5", dtype=None)
    assert data.source == "pdebench" and list(data.fields) == ["u"]
    np.testing.assert_array_equal(data.fields["u"].numpy(), tensor)
    np.testing.assert_array_equal(data.coords["x"].numpy(), x)
    np.testing.assert_array_equal(data.coords["t"].numpy(), t)  # stored as is (PDEBench's t has T+1 here)


def test_pdebench_2d_sample_groups(tmp_path):
    samples = [RNG.standard_normal((3, 4, 5, 2)) for _ in range(3)]  # (T, X, Y, C)
    with h5py.File(tmp_path / "2D_diff-react.h5", "w") as f:
        for i, s in enumerate(samples):
            g = f.create_group(f"{i:04d}")
            g["data"] = s
            g["grid/x"], g["grid/y"], g["grid/t"] = np.arange(4) / 4, np.arange(5) / 5, np.arange(3) * 0.1
    data = load_fields(tmp_path / "2D_diff-react.h5", max_samples=2)
    assert sorted(data.fields) == ["u0", "u1"] and data.fields["u1"].shape == (2, 3, 4, 5)
    np.testing.assert_allclose(data.fields["u1"][1].numpy(), samples[1][..., 1], rtol=1e-6)
    assert data.fields["u0"].dtype == torch.float32 and data.coords["y"].shape == (5,)
    assert data.stack(["u0", "u1"]).shape == (2, 2, 3, 4, 5)


def test_pdebench_darcy_joint_channels(tmp_path):
    nu, sol = RNG.random((4, 6, 6)) + 1, RNG.random((4, 1, 6, 6))
    with h5py.File(tmp_path / "2D_DarcyFlow_beta1.0.hdf5", "w") as f:
        f["nu"], f["tensor"] = nu, sol
    ds = FieldDataset.from_file(tmp_path / "2D_DarcyFlow_beta1.0.hdf5", channels=("a", "u"))
    assert ds.fields.shape == (4, 2, 6, 6)
    np.testing.assert_allclose(ds.fields[:, 1].numpy(), sol[:, 0], rtol=1e-6)


def test_fno_mat_v73_is_transposed_back(tmp_path):
    a, u, t = RNG.standard_normal((3, 4, 5)), RNG.standard_normal((3, 4, 5, 6)), np.arange(1, 7)[None, :]
    path = tmp_path / "ns_V1e-3_N3_T6.mat"
    with h5py.File(path, "w", userblock_size=512) as f:  # MATLAB v7.3: HDF5 behind a 512-byte header
        f["a"], f["u"], f["t"] = a.T, u.T, t.T  # MATLAB column-major: axes stored reversed
    data = load_fields(path, dtype=torch.float64)
    assert data.source == "fno_mat" and data.fields["u"].shape == (3, 6, 4, 5)  # time moved to axis 1
    np.testing.assert_array_equal(data.fields["a"].numpy(), a)
    np.testing.assert_array_equal(data.fields["u"].numpy(), np.moveaxis(u, -1, 1))
    np.testing.assert_array_equal(data.coords["t"].numpy(), np.arange(1, 7))
    head = load_fields(path, max_samples=2, dtype=torch.float64)  # reads only 2 samples from disk
    np.testing.assert_array_equal(head.fields["u"].numpy(), np.moveaxis(u, -1, 1)[:2])
    assert head.coords["t"].shape == (6,)


def test_fno_mat_v5_darcy_names(tmp_path):
    coeff, sol = RNG.random((2, 7, 7)), RNG.random((2, 7, 7))
    scipy.io.savemat(tmp_path / "piececonst_r7_N2.mat", {"coeff": coeff, "sol": sol, "Kcoeff": coeff})
    assert not h5py.is_hdf5(tmp_path / "piececonst_r7_N2.mat")
    data = load_fields(tmp_path / "piececonst_r7_N2.mat", dtype=None)
    assert sorted(data.fields) == ["a", "u"]
    np.testing.assert_array_equal(data.fields["u"].numpy(), sol)


def test_neuralop_pt_tiny(tmp_path):
    torch.save({"x": torch.rand(5, 4, 4) > 0.5, "y": torch.randn(5, 4, 4), "visc": torch.tensor([[0.01]])},
               tmp_path / "d.pt")
    data = load_fields(tmp_path / "d.pt")
    assert data.fields["a"].dtype == torch.float32 and set(data.fields["a"].unique().tolist()) <= {0.0, 1.0}
    assert data.attrs["visc"] == pytest.approx(0.01)


@pytest.mark.parametrize("name, n", [("darcy_train_16.pt", 1000), ("darcy_test_16.pt", 50)])
@needs_shared
def test_shared_neuralop_darcy(name, n):
    raw = torch.load(SHARED / name, weights_only=True)
    data = load_fields(SHARED / name)
    assert data.fields["a"].shape == data.fields["u"].shape == (n, 16, 16)
    assert data.fields["a"].dtype == torch.float32 and raw["x"].dtype == torch.bool
    torch.testing.assert_close(data.fields["a"], raw["x"].float())
    torch.testing.assert_close(data.fields["u"], raw["y"])
    ds = FieldDataset.from_file(SHARED / name, channels=("a", "u"))
    assert ds[0].shape == (2, 16, 16)
    torch.testing.assert_close(ds.fields.mean(dim=(0, 2, 3)), ds.normalizer.mean.float())


@needs_shared
def test_shared_neuralop_burgers():
    data = load_fields(SHARED / "burgers_lowres.pt", dtype=None)
    assert data.fields["a"].shape == (1200, 16) and data.fields["u"].shape == (1200, 17, 16)
    assert data.fields["u"].dtype == torch.float64 and data.attrs["visc"] == pytest.approx(0.01)
    torch.testing.assert_close(data.fields["u"][:, 0], data.fields["a"])  # frame 0 is the initial condition


def test_unknown_layouts_name_file_and_keys(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["velocity"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"other\.h5: unrecognised HDF5 layout.*found keys \['velocity'\]"):
        load_fields(tmp_path / "other.h5")
    torch.save({"inputs": torch.zeros(2)}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"w\.pt: not a neuraloperator \.pt file.*found keys \['inputs'\]"):
        load_fields(tmp_path / "w.pt")
    scipy.io.savemat(tmp_path / "z.mat", {"K": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"z\.mat: not a FNO \.mat file.*found keys \['K'\]"):
        load_fields(tmp_path / "z.mat")
    torch.save({"x": torch.zeros(2, 3), "y": torch.zeros(2, 3)}, tmp_path / "ok.pt")
    with pytest.raises(ValueError, match=r"missing field\(s\) \['w'\]; available: \['a', 'u'\]"):
        load_fields(tmp_path / "ok.pt", fields=["a", "w"])
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(ValueError, match="unrecognised file type"):
        detect_format(tmp_path / "junk.h5")
    with pytest.raises(FileNotFoundError):
        load_fields(tmp_path / "missing.h5")
