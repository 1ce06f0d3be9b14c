"""Stations at arbitrary (latitude, longitude) on the sphere: the observation operator on lat-lon grids."""

from __future__ import annotations

import math

import pytest
import torch

from funcdiff.guidance.observations import SparseObservation, random_sensors
from funcdiff.sphere import grid_latitudes, grid_longitudes


def smooth(lat_deg: torch.Tensor, lon_deg: torch.Tensor) -> torch.Tensor:
    """A smooth field on the sphere (degrees 1 and 2), evaluated anywhere."""
    lat, lon = torch.deg2rad(lat_deg), torch.deg2rad(lon_deg)
    return torch.cos(lat) * torch.cos(lon) + 0.5 * torch.sin(lat) + 0.3 * torch.cos(lat) ** 2 * torch.sin(2 * lon)


def on_grid(spatial) -> torch.Tensor:
    lat = torch.from_numpy(grid_latitudes(*spatial))[:, None]
    lon = torch.from_numpy(grid_longitudes(spatial[1]))[None, :]
    return smooth(lat, lon)[None, None]  # (1, 1, H, W)


def test_stations_read_grid_values_exactly_and_interpolate_between_them():
    stations = torch.tensor([[-87.1875, 0.0], [30.9375, 118.125], [0.5, -45.0], [61.2, 359.9], [-33.3, 151.2]],
                            dtype=torch.float64)
    obs = SparseObservation(coords=stations, channels=(0,), grid="latlon")
    assert float(obs.coords[2, 1]) == 315.0  # longitudes wrap to [0, 360)
    truth = smooth(obs.coords[:, 0], obs.coords[:, 1])
    errors = []
    for spatial in ((32, 64), (64, 128), (33, 64)):
        read = obs.observe(on_grid(spatial))[0, 0]
        if spatial == (32, 64):
            torch.testing.assert_close(read[:2], truth[:2], rtol=0, atol=1e-12)  # two stations sit on grid points
        errors.append(float((read - truth).abs().max()))
    assert errors[0] < 0.01 and errors[1] < errors[0] / 3  # bilinear: second order in the grid spacing


def test_polar_caps_and_bad_stations():
    obs = SparseObservation(coords=torch.tensor([[90.0, 10.0], [-90.0, 200.0]]), channels=(0,), grid="latlon")
    field = on_grid((32, 64))
    read = obs.observe(field)[0, 0]
    # beyond the outermost rows of a grid without poles the value is that row's interpolated value
    assert abs(float(read[0]) - float(smooth(torch.tensor(87.1875), torch.tensor(10.0)))) < 1e-3
    with pytest.raises(ValueError, match="latitude outside"):
        SparseObservation(coords=torch.tensor([[91.0, 0.0]]), channels=(0,), grid="latlon")
    with pytest.raises(ValueError, match="latitude, longitude"):
        SparseObservation(coords=torch.tensor([[0.1, 0.2, 0.3]]), channels=(0,), grid="latlon")


def test_random_stations():
    g = torch.Generator().manual_seed(0)
    nodes = random_sensors(0.05, (32, 64), grid="latlon", generator=g)
    assert nodes.shape == (round(0.05 * 32 * 64), 2)
    assert set(nodes[:, 0].tolist()) <= set(grid_latitudes(32, 64).tolist())
    anywhere = random_sensors(2000, (32, 64), grid="latlon", on_grid=False, generator=g)
    # uniform in area: sin(latitude) is uniform on [-1, 1] (mean 0, variance 1/3)
    s = torch.sin(torch.deg2rad(anywhere[:, 0]))
    assert abs(float(s.mean())) < 0.05 and abs(float(s.var()) - 1 / 3) < 0.03
    assert float(anywhere[:, 1].min()) >= 0 and float(anywhere[:, 1].max()) < 360
    assert math.isclose(float(SparseObservation(coords=anywhere, channels=(0,), grid="latlon")
                              .observe(torch.ones(1, 1, 32, 64)).mean()), 1.0)


def test_station_guidance_samples_the_exact_posterior_on_the_sphere():
    """Linear-Gaussian oracle on the sphere: prior = diffusion noise = the sphere GRF (exact denoiser x / (1 + σ²)),
    30 stations off the grid with noise 0.05. Guided sampling reaches the exact posterior (dense kriging) up to
    Monte Carlo error, and the posterior variance."""
    from funcdiff.guidance import guided_sample
    from funcdiff.noise_sphere import SphericalGaussianRandomField

    noise = SphericalGaussianRandomField(smoothness=2.0, length_scale=0.3)
    spatial, n_sensors, noise_std, batch = (12, 24), 30, 0.05, 1024
    n = spatial[0] * spatial[1]
    g = torch.Generator().manual_seed(0)
    truth = noise.sample((1, 1, *spatial), generator=g, dtype=torch.float64)
    obs = SparseObservation(random_sensors(n_sensors, spatial, grid="latlon", on_grid=False, generator=g),
                            channels=(0,), noise_std=noise_std, grid="latlon")
    y = obs.observe(truth) + noise_std * torch.randn(1, 1, n_sensors, generator=g, dtype=torch.float64)
    obs = obs.with_values(y)
    cov = noise.apply_cov_power(torch.eye(n, dtype=torch.float64).reshape(n, 1, *spatial), 1.0).reshape(n, n)
    a = obs.observe(torch.eye(n, dtype=torch.float64).reshape(n, 1, *spatial))[:, 0].T  # (sensors, n)
    gain = cov @ a.T @ torch.linalg.inv(a @ cov @ a.T + noise_std**2 * torch.eye(n_sensors, dtype=torch.float64))
    mean, post = gain @ y[0, 0], cov - gain @ a @ cov

    def denoiser(x, sigma):
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, *[1] * (x.ndim - 1))
        return x / (1 + s**2)

    x = guided_sample(denoiser, noise, obs, (batch, 1, *spatial), dtype=torch.float64, seed=1, steps=32,
                      solver="heun")
    monte_carlo = (post.diagonal().sum() / batch).sqrt() / mean.norm()
    error = (x.mean(0).flatten() - mean).norm() / mean.norm()
    assert error < 2 * monte_carlo, (float(error), float(monte_carlo))
    assert abs(float(x.var(0).flatten().sum() / post.diagonal().sum()) - 1) < 0.1
