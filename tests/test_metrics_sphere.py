"""WeatherBench 2 scores on a lat-lon grid: latitude weights, lat-weighted RMSE and ACC against xarray."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from funcdiff.metrics import acc, lat_weighted_rmse, latitude_weights

LAT = np.linspace(-78.75, 78.75, 8)  # equiangular, points off the poles
DIMS = ("time", "channel", "latitude", "longitude")


def fields(seed: int, shape=(5, 2, 8, 16)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def as_xarray(x: torch.Tensor) -> xr.DataArray:
    return xr.DataArray(x.numpy(), dims=DIMS, coords={"latitude": LAT})


def xr_weights() -> xr.DataArray:
    cos = np.cos(np.deg2rad(LAT))
    return xr.DataArray(cos / cos.mean(), dims="latitude", coords={"latitude": LAT})


def test_latitude_weights_are_cos_latitude_with_mean_one():
    w = latitude_weights(LAT)
    np.testing.assert_allclose(w.numpy(), xr_weights().values, rtol=1e-12)
    assert w.mean().item() == pytest.approx(1.0)
    np.testing.assert_allclose(latitude_weights(LAT[::-1]).numpy(), w.numpy()[::-1], rtol=1e-12)  # any order
    with_poles = latitude_weights(np.linspace(-90, 90, 9))
    assert with_poles[0] > 0 and with_poles[0] < with_poles[1] / 2  # half cell at the pole, not cos = 0


def test_lat_weighted_rmse_equals_xarray_hand_computation():
    pred, truth = fields(0), fields(1)
    mse = ((as_xarray(pred) - as_xarray(truth)) ** 2).weighted(xr_weights()).mean(("latitude", "longitude"))
    expected = np.sqrt(mse.mean("time"))  # square root after the mean over time
    np.testing.assert_allclose(lat_weighted_rmse(pred, truth, LAT).numpy(), expected.values, rtol=1e-12)
    per_time = np.sqrt(mse).mean("time")  # the other convention is different (and smaller)
    assert np.all(per_time.values < expected.values)


def test_lat_weighted_rmse_time_dim_and_weighting():
    pred, truth = fields(2), fields(3)
    moved = lat_weighted_rmse(pred.movedim(0, 1), truth.movedim(0, 1), LAT, time_dim=1)
    np.testing.assert_allclose(moved.numpy(), lat_weighted_rmse(pred, truth, LAT).numpy(), rtol=1e-12)
    error = torch.zeros(1, 1, 8, 16, dtype=torch.float64)
    error[..., 0, :] = 1.0  # an error only in the southernmost row counts with that row's weight
    expected = (latitude_weights(LAT)[0] / 8).sqrt()
    assert lat_weighted_rmse(error, torch.zeros_like(error), LAT).item() == pytest.approx(expected.item())


def test_acc_equals_xarray_hand_computation():
    pred, truth, clim = fields(4), fields(5), fields(6, (1, 2, 8, 16))
    f, o = as_xarray(pred) - as_xarray(clim)[0], as_xarray(truth) - as_xarray(clim)[0]
    w, space = xr_weights(), ("latitude", "longitude")
    per_time = (f * o).weighted(w).mean(space) / np.sqrt((f * f).weighted(w).mean(space)
                                                         * (o * o).weighted(w).mean(space))
    np.testing.assert_allclose(acc(pred, truth, clim, LAT).numpy(), per_time.mean("time").values, rtol=1e-12)
    np.testing.assert_allclose(acc(truth, truth, clim, LAT).numpy(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(acc(2 * truth - clim, truth, clim, LAT).numpy(), 1.0, rtol=1e-12)  # scale-free


@pytest.mark.parametrize("shift", range(16))
def test_constant_in_longitude_scores_the_same_at_every_shift(shift):
    zonal_truth = fields(7, (3, 2, 8, 1)).expand(3, 2, 8, 16)
    pred = fields(8, (3, 2, 8, 16))
    zonal_clim = fields(9, (1, 2, 8, 1))
    reference = (lat_weighted_rmse(pred, zonal_truth, LAT), acc(pred, zonal_truth, zonal_clim, LAT))
    rolled = pred.roll(shift, dims=-1)
    shifted = (lat_weighted_rmse(rolled, zonal_truth.roll(shift, -1), LAT), acc(rolled, zonal_truth, zonal_clim, LAT))
    torch.testing.assert_close(shifted[0], reference[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(shifted[1], reference[1], rtol=1e-12, atol=0)
    zonal_pred = fields(10, (3, 2, 8, 1)).expand(3, 2, 8, 16)
    assert torch.equal(lat_weighted_rmse(zonal_pred.roll(shift, -1), zonal_truth, LAT),
                       lat_weighted_rmse(zonal_pred, zonal_truth, LAT))


def test_angular_power_spectrum_of_a_sphere_grf():
    """The metric's spectrum of sphere-GRF samples is the specified C_l (lat-lon forecasts score spectra with it)."""
    from funcdiff.metrics import angular_power_spectrum
    from funcdiff.noise_sphere import SphericalGaussianRandomField

    noise = SphericalGaussianRandomField(smoothness=2.0, length_scale=0.15, max_degree=12)
    x = noise.sample((300, 1, 32, 64), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    degrees, spectra = angular_power_spectrum(x)
    assert degrees.shape == (16,) and spectra.shape == (300, 1, 16)
    ratio = spectra.mean((0, 1))[:12] / noise.spectrum((32, 64), dtype=torch.float64)
    assert (ratio - 1).abs().max() < 0.2
    assert float(spectra.mean((0, 1))[12:].max()) < 1e-20  # nothing above the band limit
