"""Wavelet and identity transforms: exact inverse, Parseval, whiteness, layout, normalisation, sampler oracle."""

import json
import math

import pytest
import torch

pytest.importorskip("ptwt")

from funcdiff.errors import UserError  # noqa: E402
from funcdiff.sampling import sample_heun, sigmas_karras  # noqa: E402
from funcdiff.transforms import (  # noqa: E402
    IdentityTransform, WaveletTransform, build_transform, transform_from_state_dict,
)

# (axes, grid): 1-D, 2-D and space-time; odd lengths only where a level fits (24 = 8·3, 12 = 4·3, 40 = 8·5).
GRIDS = [(("x",), (32,)), (("x",), (24,)), (("x", "y"), (16, 12)), (("time", "x"), (8, 16)),
         (("time", "x"), (40, 12)), (("time", "x", "y"), (8, 8, 4))]


def _cases():
    for axes, grid in GRIDS:
        deepest = WaveletTransform("haar", 1, axes).max_levels(grid)
        for levels in range(1, deepest + 1):
            for boundary in (("periodization", "boundary") if "time" in axes else ("periodization",)):
                yield axes, grid, levels, boundary


def _field(grid, batch=3, channels=2, seed=0):
    return torch.randn(batch, channels, *grid, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("axes,grid,levels,boundary", list(_cases()))
def test_round_trip_is_exact_in_float32_at_every_level_the_grid_allows(axes, grid, levels, boundary):
    x = _field(grid)
    for wavelet in ("db4", "haar"):
        w = WaveletTransform(wavelet, levels, axes, time_boundary=boundary)
        z = w.forward(x)
        coarse = tuple(n // 2**levels for n in grid)
        assert z.shape == (3, 2 * 2 ** (len(axes) * levels), *coarse)
        assert (w.inverse(z) - x).abs().max() <= 1e-6 * x.abs().max()
        assert (z.norm() / x.norm() - 1).abs() < 1e-5  # Parseval: orthogonal families preserve energy


def test_biorthogonal_families_are_exact_but_not_energy_preserving():
    x = _field((32,), batch=64, channels=1).double()
    w = WaveletTransform("bior4.4", 3, ("x",))
    z = w.forward(x)
    assert (w.inverse(z) - x).abs().max() < 1e-12
    ratio = (z.norm() / x.norm()).item()
    assert abs(ratio - 1) > 0.01, ratio
    with pytest.raises(UserError, match="biorthogonal"):
        WaveletTransform("bior4.4", 1, ("time", "x"), time_boundary="boundary")


def _empirical_covariance(w, grid, n=4096):
    eps = torch.randn(n, 1, *grid, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = w.forward(eps).flatten(1)
    return z.T @ z / n


@pytest.mark.parametrize("wavelet", ["db4", "sym3"])
def test_orthogonal_families_keep_white_noise_white(wavelet):
    # 64 coefficients from n = 4096 draws: each covariance entry has standard error 1/sqrt(n) ≈ 0.016 (diagonal
    # sqrt(2/n) ≈ 0.022); 0.09 is > 4 standard errors for every entry even taking the maximum over 2080 entries.
    w = WaveletTransform(wavelet, 2, ("time", "x"), time_boundary="boundary")
    cov = _empirical_covariance(w, (8, 8))
    assert (cov - torch.eye(64, dtype=cov.dtype)).abs().max() < 0.09


def test_biorthogonal_families_colour_white_noise():
    # The exact covariance of the coefficients of white noise is A Aᵀ (A the analysis matrix); for bior2.2 its
    # diagonal ranges far from 1 by subband, so white noise does not stay white.
    w = WaveletTransform("bior2.2", 2, ("x",))
    eye = torch.eye(32, dtype=torch.float64).reshape(32, 1, 32)
    a = w.forward(eye).flatten(1).T  # column i = coefficients of e_i
    variances = torch.diag(a @ a.T)
    assert variances.max() / variances.min() > 1.5, variances


def test_too_deep_decomposition_names_the_maximum_level():
    w = WaveletTransform("db4", 4, ("time", "x"))
    with pytest.raises(UserError, match=r"maximum level is 2"):
        w.forward(torch.zeros(1, 1, 12, 32))
    with pytest.raises(UserError, match=r"maximum level is 0"):
        WaveletTransform("haar", 1, ("x",)).forward(torch.zeros(1, 1, 17))


def test_bad_options_are_user_errors_listing_the_valid_ones():
    with pytest.raises(UserError, match="db4"):
        WaveletTransform("db99", 1, ("x",))
    with pytest.raises(UserError, match="time"):
        WaveletTransform("db4", 1, ("t", "x"))
    with pytest.raises(UserError, match="identity"):
        build_transform("fourier")
    with pytest.raises(UserError, match="name 1 dimension"):
        WaveletTransform("db4", 1, ("x",)).forward(torch.zeros(1, 1, 8, 8))
    with pytest.raises(UserError, match=r"C·4"):
        WaveletTransform("db4", 1, ("x", "y")).inverse(torch.zeros(1, 3, 4, 4))


def test_layout_keeps_locality_and_orders_bands_coarse_to_fine():
    # A single spike at fine position q lands in coarse cell q // 2^levels of every band it touches (haar).
    w = WaveletTransform("haar", 2, ("x",))
    x = torch.zeros(1, 1, 16)
    x[..., 9] = 1.0
    z = w.forward(x)[0]  # (4 channels: a2, d2, d1 at sub-position 0, d1 at sub-position 1), 4 coarse cells
    assert z.shape == (4, 4)
    assert torch.nonzero(z.abs() > 1e-6)[:, 1].unique().tolist() == [9 // 4]
    assert w.band_names((16,)) == ["a2", "d2:d", "d1:d"]


def test_periodization_matches_pywavelets():
    pywt = pytest.importorskip("pywt")
    x = _field((32,), batch=1, channels=1).double()
    w = WaveletTransform("db4", 1, ("x",))
    approx, detail = pywt.dwt(x[0, 0].numpy(), "db4", mode="periodization")
    z = w.forward(x)[0]
    assert torch.allclose(z[0], torch.tensor(approx)) and torch.allclose(z[1], torch.tensor(detail))


def test_documented_time_boundary_measurement():
    # The module docstring's numbers: db4, one level, 32 samples of a ramp, energy fraction in the details.
    t = torch.linspace(0, 1, 32, dtype=torch.float64).reshape(1, 1, 32)
    fractions = {}
    for boundary in ("periodization", "boundary"):
        z = WaveletTransform("db4", 1, ("time",), time_boundary=boundary).forward(t)[0]
        fractions[boundary] = (z[1].square().sum() / z.square().sum()).item()
    assert fractions["periodization"] == pytest.approx(7.4e-3, rel=0.02)
    assert fractions["boundary"] == pytest.approx(2.3e-1, rel=0.02)


def test_fit_normalises_every_subband_and_survives_json():
    scales = torch.tensor([3.0, 0.5]).reshape(1, 2, 1, 1)
    x = _field((16, 16), batch=64) * scales + 2.0
    w = WaveletTransform("db4", 2, ("time", "x"))
    stats = w.fit(x)
    assert len(stats.mean) == 2 and len(stats.mean[0]) == 7  # 2 channels × (1 approximation + 2·3 details)
    z = w.forward(x).reshape(64, 2, 16, 4, 4)
    band_of = w.band_ids((16, 16))
    assert band_of.tolist() == [0, 1, 2, 3] + [b for b in (4, 5, 6) for _ in range(4)]
    for b in range(7):
        band = z[:, :, band_of == b].transpose(0, 1).flatten(1)
        assert torch.allclose(band.mean(1), torch.zeros(2), atol=1e-5)
        assert torch.allclose(band.std(1, correction=0), torch.ones(2), atol=1e-5)
    restored = transform_from_state_dict(json.loads(json.dumps(w.state_dict())))
    assert torch.equal(restored.forward(x), w.forward(x))
    assert (restored.inverse(z.flatten(1, 2)) - x).abs().max() <= 1e-6 * x.abs().max()


def test_identity_transform_is_the_same_tensor():
    x = torch.randn(2, 1, 8)
    t = transform_from_state_dict(IdentityTransform().state_dict())
    assert t.forward(x) is x and t.inverse(x) is x and t.fit(x) is None


def test_heun_reproduces_coefficient_variances_of_gaussian_data_diagonal_in_the_wavelet_basis():
    # Data: x = W⁻¹(sqrt(v) ⊙ ε) with variance v_b per subband, so its coefficients are independent N(0, v_b).
    # With white diffusion noise in coefficient space the exact denoiser is E[z0 | z] = v / (v + σ²) · z.
    w = WaveletTransform("db4", 2, ("time", "x"), time_boundary="boundary")
    grid, batch = (16, 16), 2048
    band_var = torch.tensor([4.0, 1.0, 1.0, 0.5, 0.25, 0.25, 0.1], dtype=torch.float64)
    names = w.band_names(grid)
    band_of = w.band_ids(grid)
    v = band_var[band_of].reshape(1, 16, 1, 1)

    def oracle(z, sigma):
        return v / (v + sigma.reshape(-1, 1, 1, 1).double() ** 2) * z

    sigmas = sigmas_karras(32, 0.002, 80.0).double()
    z_T = 80.0 * torch.randn(batch, 16, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z0 = sample_heun(oracle, z_T, sigmas)
    x0 = w.inverse(z0)
    exact_pointwise = w.inverse(torch.eye(256, dtype=torch.float64).reshape(256, 16, 4, 4) * v.sqrt())
    exact_var = exact_pointwise.square().sum(0)[0]  # Σ_k (W⁻¹ e_k)² v_k, not uniform in space-time
    # 2048 samples per point: relative standard error sqrt(2/2048) ≈ 0.031; 0.15 is > 4.5 of them.
    assert ((x0.var(0, correction=0)[0] / exact_var - 1).abs().max() < 0.15)
    stats = w.fit(x0)  # per-subband variances of the generated trajectories, measured back through forward
    measured = torch.tensor(stats.std[0], dtype=torch.float64) ** 2
    # Each band holds ≥ 16·2048 coefficients: relative standard error of a variance ≤ sqrt(2/32768) ≈ 0.008.
    assert names[0] == "a2" and len(names) == 7
    assert ((measured / band_var) - 1).abs().max() < 0.05, measured
    # Orthogonal W: the total physical variance equals the total coefficient variance.
    assert math.isclose(exact_var.mean().item(), v.expand(1, 16, 4, 4).mean().item(), rel_tol=1e-9)


def test_inverse_is_differentiable_for_guidance_through_the_transform():
    # Guidance differentiates an observation of the physical field with respect to the coefficients.
    w = WaveletTransform("db2", 1, ("time", "x"), time_boundary="boundary")
    z = torch.randn(1, 4, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: w.inverse(c)[..., 1, ::3], (z,))
