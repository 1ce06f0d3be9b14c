"""Isotropic Gaussian random fields on the sphere (funcdiff.noise_sphere) and the grid SHT (funcdiff.sphere)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre

from funcdiff.noise import GaussianRandomField, make_generators, noise_from_dict
from funcdiff.noise_sphere import SphericalGaussianRandomField
from funcdiff.sphere import (GridSHT, angular_power, grid_kind, grid_latitudes, grid_longitudes, legendre_table,
                             quadrature_weights)


def covariance_function(noise: SphericalGaussianRandomField, spatial, gamma: np.ndarray) -> np.ndarray:
    """k(γ) = Σ_l C_l (2l+1)/(4π) P_l(cos γ): the isotropic covariance the spectrum specifies."""
    c = noise.spectrum(spatial, dtype=torch.float64).numpy()
    l = np.arange(len(c))
    return legendre.legval(np.cos(gamma), c * (2 * l + 1) / (4 * math.pi))


def unit_vectors(spatial) -> np.ndarray:
    lat = np.deg2rad(grid_latitudes(*spatial))[:, None]
    lon = np.deg2rad(grid_longitudes(spatial[1]))[None, :]
    xyz = np.stack(np.broadcast_arrays(np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)), -1)
    return xyz.reshape(-1, 3)


def test_grids_and_quadrature():
    assert grid_kind(32, 64) == "midpoint" and grid_kind(721, 1440) == "poles"
    with pytest.raises(ValueError, match="not a regular lat-lon grid"):
        grid_kind(32, 60)
    np.testing.assert_allclose(grid_latitudes(32, 64)[[0, -1]], [-87.1875, 87.1875])
    for spatial in ((32, 64), (33, 64)):  # exact for polynomials of degree < H in sin(latitude)
        x = np.sin(np.deg2rad(grid_latitudes(*spatial)))
        w = quadrature_weights(*spatial)
        for degree in range(spatial[0]):
            exact = 0.0 if degree % 2 else 2.0 / (degree + 1)
            assert abs(w @ x**degree - exact) < 1e-12


def test_sht_round_trip_and_agreement_across_grids():
    """Analysis inverts synthesis for band-limited fields, and one set of coefficients is one function."""
    g = torch.Generator().manual_seed(0)
    coeffs = torch.tril(torch.complex(torch.randn(3, 12, 12, generator=g, dtype=torch.float64),
                                      torch.randn(3, 12, 12, generator=g, dtype=torch.float64)))
    coeffs[..., 0] = coeffs[..., 0].real.to(coeffs.dtype)
    sht = GridSHT()
    for spatial in ((32, 64), (33, 64), (65, 128)):
        back = sht.sht(sht.isht(coeffs, s=spatial), s=(12, 12))
        assert (back - coeffs).abs().max() < 1e-12
    coarse, fine = sht.isht(coeffs, s=(33, 64)), sht.isht(coeffs, s=(65, 128))
    assert (fine[:, ::2, ::2] - coarse).abs().max() < 1e-12


def test_addition_theorem_makes_the_law_isotropic():
    """The covariance of the sampler's expansion, Σ_lm C_l Y_lm(p) Y_lm(q), equals k(angle(p, q)) exactly: the
    law is invariant under every rotation, not only those along longitude."""
    noise = SphericalGaussianRandomField(smoothness=2.0, length_scale=0.2)
    spatial = (17, 32)
    c = noise.spectrum(spatial, dtype=torch.float64).numpy()
    L = len(c)
    table = legendre_table(L, L, *spatial)  # (m, l, H)
    lon = np.deg2rad(grid_longitudes(spatial[1]))
    cov = np.zeros((spatial[0] * spatial[1],) * 2)
    for m in range(L):  # real orthonormal harmonics: P̄_l^0, sqrt(2) P̄_l^m cos(mφ), sqrt(2) P̄_l^m sin(mφ)
        for trig in ((np.cos, np.sin) if m else (np.cos,)):
            scale = math.sqrt(2.0) if m else 1.0
            f = (scale * table[m].T[:, None, :] * trig(m * lon)[None, :, None]).reshape(-1, L)  # (H W, L)
            cov += (f * c) @ f.T
    xyz = unit_vectors(spatial)
    gamma = np.arccos(np.clip(xyz @ xyz.T, -1, 1))
    np.testing.assert_allclose(cov, covariance_function(noise, spatial, gamma), atol=1e-10)


def test_covariance_matrix_applied_exactly():
    """apply_cov_power(x, 1) is the samples' covariance matrix: column j is k(angle(p_i, p_j)); and the
    transpose of the synthesis is its transpose (<v, S a> = <S^T v, a>)."""
    noise = SphericalGaussianRandomField(smoothness=2.0, length_scale=0.2, amplitude=1.5)
    spatial = (16, 32)
    eye = torch.eye(16 * 32, dtype=torch.float64).reshape(-1, 1, *spatial)
    cov = noise.apply_cov_power(eye, 1.0).reshape(16 * 32, -1).numpy()
    xyz = unit_vectors(spatial)
    model = covariance_function(noise, spatial, np.arccos(np.clip(xyz @ xyz.T, -1, 1)))
    np.testing.assert_allclose(cov, model, atol=1e-10)
    assert abs(model[0, 0] - 1.5**2) < 1e-12
    g = torch.Generator().manual_seed(3)
    v = torch.randn(16, 32, generator=g, dtype=torch.float64)
    a = torch.tril(torch.complex(torch.randn(8, 8, generator=g, dtype=torch.float64),
                                 torch.randn(8, 8, generator=g, dtype=torch.float64)))
    sht = GridSHT()
    lhs = float((v * sht.isht(a, s=spatial)).sum())
    t = sht.isht_transpose(v, 8, 8)
    rhs = float((t.real * a.real + t.imag * a.imag)[:, 1:].sum() + (t.real * a.real)[:, 0].sum())
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_samples_have_the_specified_angular_power_spectrum():
    noise = SphericalGaussianRandomField(smoothness=2.0, length_scale=0.15, amplitude=2.0, max_degree=10)
    n = 400
    x = noise.sample((n, 1, 32, 64), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    empirical = angular_power(GridSHT().sht(x, s=(10, 10))).mean((0, 1))
    spec = noise.spectrum((32, 64), dtype=torch.float64)
    ratio = (empirical / spec).numpy()
    standard_error = np.sqrt(2.0 / ((2 * np.arange(10) + 1) * n))  # chi-square with (2l+1) n dof
    assert np.all(np.abs(ratio - 1) < 4.5 * standard_error), ratio
    assert abs(float(((2 * torch.arange(10) + 1) * spec).sum()) / (4 * math.pi) - 4.0) < 1e-12  # variance = amp²


def test_empirical_covariance_is_rotation_invariant():
    """Sample covariances of every pair of grid points match k(angle) (any position, any orientation)."""
    noise = SphericalGaussianRandomField(smoothness=2.5, length_scale=0.25)
    spatial, n = (9, 16), 6000
    x = noise.sample((n, 1, *spatial), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    flat = x.reshape(n, -1).numpy()
    empirical = flat.T @ flat / n
    xyz = unit_vectors(spatial)
    model = covariance_function(noise, spatial, np.arccos(np.clip(xyz @ xyz.T, -1, 1)))
    var = np.diag(model)
    standard_error = np.sqrt((np.outer(var, var) + model**2) / n)
    z = (empirical - model) / standard_error
    assert np.abs(z).max() < 6.0 and abs(z.mean()) < 0.5


def test_fixed_band_limit_gives_the_same_law_at_every_resolution():
    """With max_degree set, a fine sample restricted to the coarse grid's points *is* the coarse sample."""
    noise = SphericalGaussianRandomField(smoothness=2.0, length_scale=0.1, max_degree=24)
    fine = noise.sample((2, 3, 65, 128), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    coarse = noise.sample((2, 3, 33, 64), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert (fine[..., ::2, ::2] - coarse).abs().max() < 1e-12
    with pytest.raises(ValueError, match="resolves degrees"):
        noise.sample((1, 1, 17, 32))


def test_grid_band_limit_restriction_keeps_the_law_within_the_tail():
    """Default (every degree the grid resolves): covariances of a restricted fine sample and of a coarse sample
    differ by at most 2τ·amplitude² (τ = tail_fraction, 7e-3 here: 17x32 keeps l < 16, 33x64 l < 32)."""
    noise = SphericalGaussianRandomField(smoothness=3.0, length_scale=0.2)
    coarse, fine = (17, 32), (33, 64)
    tau = noise.tail_fraction(coarse, fine)
    assert tau < 1e-2
    gamma = np.linspace(0, math.pi, 200)
    assert np.abs(covariance_function(noise, fine, gamma) - covariance_function(noise, coarse, gamma)).max() <= 2 * tau
    n = 3000
    a = noise.sample((n, 1, *fine), generator=torch.Generator().manual_seed(6), dtype=torch.float64)[..., ::2, ::2]
    b = noise.sample((n, 1, *coarse), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for x in (a, b):  # pointwise variance 1 and lag-1 covariance along longitude, at every latitude
        assert abs(float(x.var()) - 1) < 0.05
    lag_a = (a * a.roll(1, -1)).mean((0, 1, 3))
    lag_b = (b * b.roll(1, -1)).mean((0, 1, 3))
    assert (lag_a - lag_b).abs().max() < 4 * math.sqrt(2 / n) + 2 * tau


def test_interface_matches_the_torus_grf():
    noise = SphericalGaussianRandomField(smoothness=2.0, length_scale=0.1, amplitude=0.5)
    assert noise_from_dict(noise.as_dict()) == noise
    assert isinstance(noise_from_dict(GaussianRandomField(dim=2, smoothness=2.0).as_dict()), GaussianRandomField)
    gens = make_generators(0, [0, 1, 2])
    batch = noise.sample((3, 2, 32, 64), generator=gens)
    alone = noise.sample((1, 2, 32, 64), generator=make_generators(0, [2]))
    torch.testing.assert_close(batch[2:], alone)
    smooth = noise.apply_cov_power(torch.randn(4, 1, 32, 64), 1.0)
    assert smooth.shape == (4, 1, 32, 64) and torch.isfinite(smooth).all()
    white = SphericalGaussianRandomField(smoothness=0.0, amplitude=3.0)
    assert abs(float(white.sample((64, 1, 32, 64)).std()) - 3.0) < 0.05
    with pytest.raises(ValueError, match="trace-class"):
        SphericalGaussianRandomField(smoothness=1.0)
