"""Gaussian random fields: spectrum, cross-resolution consistency, reproducibility, operators."""

import math

import pytest
import torch

from funcdiff.noise import GaussianRandomField, make_generators


def empirical_mode_variance(x: torch.Tensor) -> torch.Tensor:
    """E|x̂_k|² / N over batch and channels (ortho FFT), comparable to ``GaussianRandomField.spectrum``."""
    dims = tuple(range(2, x.ndim))
    n_points = math.prod(x.shape[2:])
    return (torch.fft.fftn(x.double(), dim=dims, norm="ortho").abs() ** 2).mean((0, 1)) / n_points


@pytest.mark.parametrize("n", [32, 64, 128])
def test_empirical_spectrum_matches_specification(n):
    grf = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.05)
    x = grf.sample((4096 * 16 // n, 1, n, n), generator=torch.Generator().manual_seed(n))
    spec = grf.spectrum((n, n), dtype=torch.float64)
    ratio = empirical_mode_variance(x) / spec
    # Each mode's estimate has relative std ~ sqrt(1/B) (Hermitian pairs share a draw); average over modes.
    assert abs(ratio.mean().item() - 1) < 0.02
    # Shell averages (64 modes or more per shell beyond the first few) are accurate to a few per cent.
    k = torch.fft.fftfreq(n, 1 / n)
    kk = (k[:, None] ** 2 + k[None, :] ** 2).sqrt().round()
    for shell in (2, 5, n // 4):
        assert abs(ratio[kk == shell].mean().item() - 1) < 0.08
    assert abs(x.var().item() - 1.0) < 0.03  # pointwise variance = amplitude² at every resolution


def test_restriction_to_coarse_grid_has_the_coarse_law():
    """A 128² sample on the even 64² sub-grid has the covariance of a 64² sample."""
    grf = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.05)
    fine = grf.spectrum((128, 128), dtype=torch.float64)
    aliased = fine.reshape(2, 64, 2, 64).sum((0, 2))  # spectrum of the sub-sampled field
    coarse = grf.spectrum((64, 64), dtype=torch.float64)
    assert torch.allclose(aliased, coarse, rtol=1e-2, atol=0)  # alias-sum truncation: 5.5e-3 here
    x = grf.sample((1024, 1, 128, 128), generator=torch.Generator().manual_seed(0))[..., ::2, ::2]
    assert abs((empirical_mode_variance(x) / coarse).mean().item() - 1) < 0.03


@pytest.mark.parametrize("dim,shape", [(1, (257,)), (1, (256,)), (3, (12, 16, 9))])
def test_other_dimensions_and_odd_sizes(dim, shape):
    grf = GaussianRandomField(dim=dim, smoothness=dim / 2 + 1.0, length_scale=0.1, amplitude=2.0)
    x = grf.sample((512, 1, *shape), generator=torch.Generator().manual_seed(1))
    assert x.shape == (512, 1, *shape)
    assert abs(x.var().item() / 4.0 - 1) < 0.05
    ratio = empirical_mode_variance(x) / grf.spectrum(shape, dtype=torch.float64)
    assert abs(ratio.mean().item() - 1) < 0.05


def test_white_noise_is_iid_unit_variance():
    grf = GaussianRandomField(dim=2)
    x = grf.sample((64, 2, 32, 32), generator=torch.Generator().manual_seed(0))
    assert abs(x.var().item() - 1) < 0.02
    ratio = empirical_mode_variance(x) / grf.spectrum((32, 32), dtype=torch.float64)
    assert abs(ratio.mean().item() - 1) < 0.02


def test_reproducible_by_seed_and_per_sample_generators_ignore_batching():
    grf = GaussianRandomField(dim=2, smoothness=1.5, length_scale=0.1)
    a = grf.sample((4, 1, 16, 16), generator=torch.Generator().manual_seed(7))
    b = grf.sample((4, 1, 16, 16), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    whole = grf.sample((4, 1, 16, 16), generator=make_generators(3, range(4)))
    part = grf.sample((2, 1, 16, 16), generator=make_generators(3, range(2, 4)))
    assert torch.equal(whole[2:], part)
    assert not torch.equal(whole[0], whole[1])


def test_covariance_powers_are_inverse_and_match_sampling():
    grf = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)
    x = torch.randn(3, 2, 24, 20, dtype=torch.float64)
    back = grf.apply_cov_power(grf.apply_cov_power(x, 0.5), -0.5)
    assert torch.allclose(back, x, atol=1e-10)
    twice = grf.apply_cov_power(grf.apply_cov_power(x, 0.5), 0.5)
    assert torch.allclose(twice, grf.apply_cov_power(x, 1.0), atol=1e-10)
    g = torch.Generator().manual_seed(0)
    xi = torch.randn(2, 1, 16, 16, generator=g)
    assert torch.allclose(grf.sample((2, 1, 16, 16), generator=torch.Generator().manual_seed(0)),
                          grf.apply_cov_power(xi, 0.5))


def test_tau_convention_matches_length_scale():
    a = GaussianRandomField.from_tau(2, alpha=2.5, tau=7.0)
    assert a.length_scale == pytest.approx(1 / 7) and a.smoothness == 2.5


@pytest.mark.parametrize("kwargs,match", [
    ({"dim": 4}, "dim"),
    ({"dim": 2, "smoothness": 1.0}, "trace-class"),
    ({"dim": 2, "smoothness": 2.0, "length_scale": 0.0}, "positive"),
])
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianRandomField(**kwargs)


def test_wrong_spatial_rank_raises():
    with pytest.raises(ValueError, match="dim=2"):
        GaussianRandomField(dim=2).sample((1, 1, 16))
