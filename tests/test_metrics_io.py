"""Metrics against hand-computed values; netCDF output round trip; plots are written."""

import math

import pytest
import torch
import xarray as xr

from funcdiff.io.netcdf import dataset_to_fields, fields_to_dataset, write_netcdf
from funcdiff.io.plots import plot_samples_vs_data
from funcdiff.metrics import log_spectrum_distance, misclassification_rate, radial_power_spectrum, relative_l2
from funcdiff.utils import fourier_resample, grid_coordinates


def test_relative_l2_and_misclassification():
    truth = torch.ones(2, 1, 4, 4)
    assert torch.allclose(relative_l2(1.1 * truth, truth), torch.full((2, 1), 0.1))
    pred = truth.clone()
    pred[0, 0, 0, :2] = -1
    assert torch.allclose(misclassification_rate(pred, truth, 0.0), torch.tensor([[2 / 16], [0.0]]))
    with pytest.raises(ValueError, match="shape"):
        relative_l2(truth, truth[:1])


def test_radial_spectrum_of_a_cosine():
    x, y = grid_coordinates((32, 32))
    field = torch.cos(2 * math.pi * 3 * x)[None, None]
    k, p = radial_power_spectrum(field)
    assert p[3].item() == pytest.approx(0.5)  # power 1/4 in each of k = ±3
    assert p.sum().item() == pytest.approx(0.5)
    assert log_spectrum_distance(field, field) == 0.0


def test_fourier_resample_is_exact_for_band_limited_fields():
    x, y = grid_coordinates((24, 24), dtype=torch.float64)
    f = lambda x, y: torch.sin(2 * math.pi * (2 * x + y)) + 0.3 * torch.cos(2 * math.pi * 5 * y)
    coarse = f(x, y)[None, None]
    x2, y2 = grid_coordinates((40, 40), dtype=torch.float64)
    assert torch.allclose(fourier_resample(coarse, 40), f(x2, y2)[None, None], atol=1e-12)
    assert torch.allclose(fourier_resample(fourier_resample(coarse, 40), 24), coarse, atol=1e-12)


def test_netcdf_round_trip(tmp_path):
    fields = torch.randn(3, 2, 8, 6)
    ds = fields_to_dataset(fields, ["a", "u"], {"resolution": 8, "config": {"lr": 1e-3}}, grid="nodes",
                           extra={"std": fields.abs()})
    path = write_netcdf(ds, tmp_path / "out" / "samples.nc")
    back = xr.open_dataset(path)
    assert torch.equal(dataset_to_fields(back, ["a", "u"]), fields)
    assert back["x"].values[-1] == 1.0 and back.attrs["grid"] == "node"  # "nodes" is read as "node"
    assert "lr" in back.attrs["config"] and "u_std" in back
    assert not list(tmp_path.glob("out/.*"))  # no temporary file left behind
    with pytest.raises(ValueError, match="lacks variables"):
        dataset_to_fields(back, ["w"])
    with pytest.raises(ValueError, match="channel names"):
        fields_to_dataset(fields, ["a"])


def test_plot_is_written(tmp_path):
    path = plot_samples_vs_data({"data": torch.randn(2, 1, 16, 16), "samples": torch.randn(3, 1, 32, 32)},
                                tmp_path / "cmp.png")
    assert path.stat().st_size > 1000


def test_atomic_path_replaces_only_on_success(tmp_path):
    from funcdiff.io.atomic import atomic_path, write_text_atomic

    target = write_text_atomic(tmp_path / "sub" / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]  # the temporary file is gone
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt"
        tmp.write_text("new")
    assert target.read_text() == "new"
