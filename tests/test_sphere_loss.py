"""Latitude-weighted EDM loss: the squared error is weighted by cell area (WeatherBench 2 weights, mean 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from funcdiff.metrics import latitude_weights
from funcdiff.models.precond import EDMPrecond
from funcdiff.noise_sphere import SphericalGaussianRandomField
from funcdiff.sphere import grid_latitudes
from funcdiff.training.loss import EDMLoss
from funcdiff.training.trainer import area_weights


class Zero(nn.Module):
    def forward(self, x, c_noise, cond=None):
        return torch.zeros_like(x)


def test_area_weighted_loss_equals_the_hand_computation():
    denoiser = EDMPrecond(Zero(), sigma_data=1.0)  # D(x; σ) = x / (1 + σ²): a known error field
    noise = SphericalGaussianRandomField(smoothness=2.0, length_scale=0.2)
    x = torch.randn(3, 2, 16, 32, generator=torch.Generator().manual_seed(0))
    loss = EDMLoss(noise)
    weights = area_weights((16, 32), {"grid": {"type": "latlon"}}, torch.device("cpu"))
    assert weights.shape == (16, 1) and abs(float(weights.mean()) - 1) < 1e-6
    torch.testing.assert_close(weights[:, 0], latitude_weights(grid_latitudes(16, 32)).float())
    loss.spatial_weights = weights
    value = loss(denoiser, x, torch.Generator().manual_seed(1))
    sigma, eps = loss.draw(x, torch.Generator().manual_seed(1))  # the same draws
    noisy = x + sigma[:, None, None, None] * eps
    error = (noisy / (1 + sigma[:, None, None, None] ** 2) - x) ** 2
    expected = (denoiser.loss_weight(sigma)[:, None, None, None] * error * weights).mean()
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
    loss.spatial_weights = None
    assert abs(float(loss(denoiser, x, torch.Generator().manual_seed(1))) - float(value)) > 1e-6


def test_latitude_weighting_needs_lat_lon_data():
    with pytest.raises(ValueError, match="lat-lon data"):
        area_weights((32, 32), {"grid": "periodic"}, torch.device("cpu"))
