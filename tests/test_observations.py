"""Sparse observation operators: exactness on the grid, interpolation accuracy off it, errors, netCDF I/O."""

import math
import os

import pytest
import torch

from funcdiff.guidance import (SparseObservation, load_observation, observation_covariance, random_sensors,
                               save_observation)
from funcdiff.noise import GaussianRandomField


def smooth(coords: torch.Tensor) -> torch.Tensor:
    """A smooth periodic test function f(x, y) = sin(2πx) cos(2πy) + 0.5 cos(2π(x + 2y))."""
    x, y = coords[..., 0], coords[..., 1]
    return torch.sin(2 * math.pi * x) * torch.cos(2 * math.pi * y) + 0.5 * torch.cos(2 * math.pi * (x + 2 * y))


def grid_field(n: int, grid: str) -> torch.Tensor:
    axis = torch.arange(n, dtype=torch.float64) / (n if grid == "periodic" else n - 1)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    return smooth(torch.stack([xx, yy], -1))[None, None]


@pytest.mark.parametrize("grid", ["periodic", "node"])
@pytest.mark.parametrize("n", [12, 17])
def test_on_grid_sensors_read_grid_values_exactly(grid, n):
    g = torch.Generator().manual_seed(n)
    field = torch.randn(3, 2, n, n, generator=g, dtype=torch.float64)
    coords = random_sensors(30, (n, n), grid=grid, generator=g)
    obs = SparseObservation(coords, channels=(1,), grid=grid)
    scale = n if grid == "periodic" else n - 1
    idx = torch.round(coords * scale).long()
    assert torch.equal(obs.observe(field)[:, 0], field[:, 1, idx[:, 0], idx[:, 1]])


@pytest.mark.parametrize("grid", ["periodic", "node"])
def test_off_grid_sensors_agree_across_resolutions_to_interpolation_accuracy(grid):
    coords = random_sensors(200, (64, 64), grid=grid, on_grid=False, generator=torch.Generator().manual_seed(0))
    obs = SparseObservation(coords, grid=grid)
    exact = smooth(coords)
    errors = {n: (obs.observe(grid_field(n, grid))[0, 0] - exact).abs().max().item() for n in (33, 65, 129)}
    coarse_vs_fine = (obs.observe(grid_field(33, grid)) - obs.observe(grid_field(129, grid))).abs().max()
    # bilinear interpolation: error O(h²) (|f''| ≲ (2π)²·2.5, h = 1/32: bound ≈ 0.025), ~4× less per halving
    assert errors[33] < 0.03 and coarse_vs_fine < 0.03
    assert 3.0 < errors[33] / errors[65] < 5.0 and 3.0 < errors[65] / errors[129] < 5.0, errors


def test_periodic_interpolation_wraps_around():
    field = torch.zeros(1, 1, 8)
    field[0, 0, 0], field[0, 0, 7] = 1.0, 3.0
    obs = SparseObservation(torch.tensor([[15 / 16]]), grid="periodic")  # halfway between x=7/8 and x=1≡0
    assert obs.observe(field).item() == pytest.approx(2.0)


def test_random_sensors_are_distinct_and_inside():
    g = torch.Generator().manual_seed(1)
    on = random_sensors(0.25, (10, 12), grid="node", generator=g)
    assert on.shape == (30, 2) and len(torch.unique(on, dim=0)) == 30
    assert bool(((on >= 0) & (on <= 1)).all())
    off = random_sensors(50, (10, 12), on_grid=False, generator=g)
    assert bool(((off >= 0) & (off < 1)).all())
    again = random_sensors(0.25, (10, 12), grid="node", generator=torch.Generator().manual_seed(1))
    assert torch.equal(on, again)


def test_observation_covariance_matches_dense_adjoint():
    n = 8
    noise = GaussianRandomField(2, smoothness=2.0, length_scale=0.15, amplitude=1.3)
    obs = SparseObservation(random_sensors(10, (n, n), on_grid=False, generator=torch.Generator().manual_seed(2)))
    eye = torch.eye(n * n, dtype=torch.float64).reshape(n * n, 1, n, n)
    a = obs.observe(eye)[:, 0].T  # (N, n²): column j = A e_j
    cov = noise.apply_cov_power(eye, 1.0).reshape(n * n, n * n)
    assert torch.allclose(observation_covariance(obs, noise, (n, n)), a @ cov @ a.T / 1.3**2, atol=1e-10)


def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"2 of 3 sensors lie outside .*e\.g\. \[1\.0, 0\.5\]"):
        SparseObservation(torch.tensor([[1.0, 0.5], [0.2, 0.2], [0.1, -0.1]]), grid="periodic")
    SparseObservation(torch.tensor([[1.0, 0.5]]), grid="node")  # the node grid includes x = 1
    coords = torch.rand(4, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="NaN"):
        SparseObservation(coords, values=torch.tensor([[[0.0, float("nan"), 1.0, 2.0]]]))
    with pytest.raises(ValueError, match=r"valid channel names: \['a', 'u'\]"):
        SparseObservation.for_channels(coords, ["pressure"], ["a", "u"])
    with pytest.raises(ValueError, match=r"shape \(B, 1, 4\)"):
        SparseObservation(coords, values=torch.zeros(1, 1, 5))
    obs = SparseObservation(coords, channels=(2,), values=torch.zeros(2, 1, 4))
    with pytest.raises(ValueError, match="only 2 channels"):
        obs.observe(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="2 spatial dims"):
        obs.observe(torch.zeros(1, 3, 8))
    with pytest.raises(ValueError, match="2 samples"):
        obs.residual(torch.zeros(3, 3, 8, 8))
    with pytest.raises(ValueError, match="grid convention"):
        SparseObservation(coords, grid="spherical")


def test_netcdf_round_trip_is_atomic(tmp_path):
    coords = random_sensors(7, (9, 9), grid="node", on_grid=False, generator=torch.Generator().manual_seed(3))
    values = torch.randn(3, 2, 7, dtype=torch.float64)
    obs = SparseObservation.for_channels(coords, ["u", "a"], ["a", "u"], values=values, noise_std=(0.1, 0.0),
                                         grid="node")
    path = save_observation(obs, tmp_path / "sub" / "obs.nc")
    assert sorted(os.listdir(path.parent)) == ["obs.nc"]  # no temporary file left behind
    back = load_observation(path)
    assert back.channels == (1, 0) and back.channel_names == ("u", "a") and back.grid == "node"
    assert torch.equal(back.coords, obs.coords) and torch.equal(back.values, values)
    assert torch.equal(back.noise_std_per_channel(), torch.tensor([0.1, 0.0], dtype=torch.float64))
    field = torch.randn(3, 2, 9, 9, dtype=torch.float64)
    assert torch.equal(back.observe(field), obs.observe(field))


def test_relative_misfit_is_zero_for_the_truth_and_one_for_zero():
    g = torch.Generator().manual_seed(5)
    truth = torch.randn(1, 2, 12, 12, generator=g, dtype=torch.float64)
    obs = SparseObservation(random_sensors(20, (12, 12), generator=g), channels=(1,))
    obs = obs.with_values(obs.observe(truth))
    batch = torch.cat([truth, torch.zeros_like(truth), 2 * truth])
    torch.testing.assert_close(obs.relative_misfit(batch), torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
