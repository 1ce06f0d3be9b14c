"""Random fields of funcdiff.pde.grf: empirical spectra/variances match the specification at every resolution."""

import math

import pytest
import torch

from funcdiff.pde import periodic_grid, sample_cosine_grf, sample_periodic_grf, threshold_coefficient
from funcdiff.utils import fourier_resample

F64 = torch.float64



@pytest.mark.parametrize("n", [16, 32])
def test_periodic_grf_spectrum_matches_specification(n):
    alpha, tau, sigma, samples = 2.5, 7.0, 20.0, 3000
    g = torch.Generator().manual_seed(n)
    u = sample_periodic_grf(samples, n, 2, alpha=alpha, tau=tau, sigma=sigma, generator=g, dtype=F64)
    power = torch.fft.fft2(u[:, 0], norm="forward").abs().pow(2).mean(0)
    for k1, k2 in [(1, 0), (1, 1), (2, 1), (0, 3), (-2, 1)]:
        expected = sigma**2 * (4 * math.pi**2 * (k1**2 + k2**2) + tau**2) ** (-alpha)
        assert abs(float(power[k1, k2]) / expected - 1) < 0.1, (k1, k2)
    assert float(power[0, 0]) < 1e-20  # mean zero
    k = torch.fft.fftfreq(n, 1 / n, dtype=F64)
    ksq = k[:, None] ** 2 + k[None, :] ** 2
    band = (k.abs()[:, None] < n / 2) & (k.abs()[None, :] < n / 2) & (ksq > 0)
    variance = float((sigma**2 * (4 * math.pi**2 * ksq + tau**2) ** (-alpha))[band].sum())
    assert abs(float(u.var()) / variance - 1) < 0.05


@pytest.mark.parametrize("n", [17, 33])
def test_cosine_grf_pointwise_variance(n):
    alpha, tau, samples = 2.0, 3.0, 3000
    g = torch.Generator().manual_seed(n)
    u = sample_cosine_grf(samples, n, alpha=alpha, tau=tau, generator=g, dtype=F64)
    k = torch.arange(n, dtype=F64)
    s2 = (tau ** (alpha - 1)) ** 2 * (math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + tau**2) ** (-alpha)
    s2[0, 0] = 0
    for x, y in [(0.5, 0.5), (0.0, 0.25), (0.75, 1.0)]:
        i, j = round(x * (n - 1)), round(y * (n - 1))
        cx, cy = torch.cos(math.pi * k * x) ** 2, torch.cos(math.pi * k * y) ** 2
        expected = float((s2 * cx[:, None] * cy[None, :]).sum())
        assert abs(float(u[:, 0, i, j].var()) / expected - 1) < 0.1, (x, y)


def test_sampling_is_deterministic_per_generator_and_dtype_independent():
    a = sample_periodic_grf(2, 16, 1, generator=torch.Generator().manual_seed(5))
    b = sample_periodic_grf(2, 16, 1, generator=torch.Generator().manual_seed(5), dtype=F64)
    c = sample_periodic_grf(2, 16, 1, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b.float()) and not torch.equal(a, c)
    d = threshold_coefficient(sample_cosine_grf(2, 9, generator=torch.Generator().manual_seed(1)))
    assert set(d.unique().tolist()) == {3.0, 12.0}


def test_fourier_resample_is_exact_for_band_limited_fields_on_trailing_axes():
    def field(n):
        x, y = periodic_grid(n, 2, dtype=F64)
        return (torch.sin(2 * math.pi * x) * torch.cos(4 * math.pi * y) + 0.3 * torch.cos(6 * math.pi * x))[None]

    assert torch.allclose(fourier_resample(field(16), 40, 2), field(40), atol=1e-13)
    assert torch.allclose(fourier_resample(field(40), 16, 2), field(16), atol=1e-13)
    odd, even = torch.arange(15, dtype=F64) / 15, torch.arange(8, dtype=F64) / 8
    down = fourier_resample(torch.sin(2 * math.pi * odd), 8, 1)
    assert torch.allclose(down, torch.sin(2 * math.pi * even), atol=1e-13)


def test_bad_grf_arguments_raise():
    with pytest.raises(ValueError, match="tau"):
        sample_periodic_grf(1, 8, 2, tau=-1.0)
    with pytest.raises(ValueError, match="num_samples"):
        sample_cosine_grf(0, 8)
