"""Ensemble scores against scoringrules and numpy references; calibration properties; weights; spectra."""

import math

import numpy as np
import pytest
import scoringrules
import torch
from scipy.stats import chi2

from funcdiff.metrics import (crps_ensemble, energy_spectrum, log_spectrum_distance, max_spectrum_ratio,
                              radial_power_spectrum, rank_histogram, rmse, spectrum_error, spread_skill_ratio,
                              weighted_mean)
from funcdiff.utils import grid_coordinates


def random_ensemble(m: int, seed: int = 0, shape=(3, 2, 5, 4)):
    """members (B, M, C, *S) and truth (B, C, *S), float64."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(shape, generator=g, dtype=torch.float64)
    members = 0.5 + 1.3 * torch.randn(shape[0], m, *shape[1:], generator=g, dtype=torch.float64)
    return members, truth


def calibrated_ensemble(m: int, points: int, scale: float = 1.0, seed: int = 0):
    """Truth and members drawn from the same N(mu, 1) per point (scale < 1: an under-dispersed ensemble).

    Shapes: members (points, M), truth (points,).
    """
    g = torch.Generator().manual_seed(seed)
    mu = 3 * torch.randn(points, 1, generator=g, dtype=torch.float64)
    truth = (mu + torch.randn(points, 1, generator=g, dtype=torch.float64))[:, 0]
    members = mu + scale * torch.randn(points, m, generator=g, dtype=torch.float64)
    return members, truth


@pytest.mark.parametrize("m", [2, 5, 16])
@pytest.mark.parametrize("fair, estimator", [(True, "fair"), (False, "nrg")])
def test_crps_matches_scoringrules(m, fair, estimator):
    members, truth = random_ensemble(m, seed=m)
    ours = crps_ensemble(members, truth, member_dim=1, fair=fair, dims=())
    ref = scoringrules.crps_ensemble(truth.numpy(), members.movedim(1, -1).numpy(), estimator=estimator,
                                     backend="numpy")
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-6)
    assert ours.shape == truth.shape
    # member axis anywhere; default reduction is the mean over every point
    last = crps_ensemble(members.movedim(1, -1), truth, member_dim=-1, fair=fair)
    assert last.item() == pytest.approx(float(ref.mean()), abs=1e-12)


def test_fair_crps_is_unbiased_for_the_infinite_ensemble_score():
    """E[fair CRPS of M members] equals the CRPS of the forecast distribution itself (standard normal here):
    the standard estimator is biased upward for small M, the fair one is not."""
    members, truth = calibrated_ensemble(3, 40000, seed=1)
    fair = crps_ensemble(members, truth, member_dim=1).item()
    standard = crps_ensemble(members, truth, member_dim=1, fair=False).item()
    expected = 1 / math.sqrt(math.pi)  # E|X - y| - E|X - X'| / 2 with X, X', y iid N(mu, 1)
    assert fair == pytest.approx(expected, rel=0.03)
    assert standard > fair * 1.1


@pytest.mark.parametrize("fair", [True, False])
def test_one_member_crps_is_absolute_error(fair):
    members, truth = random_ensemble(1)
    crps = crps_ensemble(members, truth, fair=fair, dims=())
    assert torch.allclose(crps, (members[:, 0] - truth).abs(), atol=0, rtol=0)


def test_spread_skill_against_numpy():
    members, truth = random_ensemble(6, seed=3)
    ens, obs = members.movedim(1, -1).numpy(), truth.numpy()
    spread = np.sqrt(np.var(ens, axis=-1, ddof=1).mean())
    skill = np.sqrt(((ens.mean(-1) - obs) ** 2).mean())
    ssr, our_spread, our_skill = spread_skill_ratio(members, truth)
    assert our_spread.item() == pytest.approx(spread, abs=1e-12)
    assert our_skill.item() == pytest.approx(skill, abs=1e-12)
    assert ssr.item() == pytest.approx(np.sqrt(7 / 6) * spread / skill, abs=1e-12)
    assert our_skill.item() == pytest.approx(rmse(members.mean(1), truth).item(), abs=1e-15)
    per_channel = spread_skill_ratio(members, truth, dims=(0, 2, 3))
    assert per_channel.ssr.shape == (2,)


@pytest.mark.parametrize("m", [2, 8])
def test_ssr_is_one_for_a_calibrated_ensemble(m):
    members, truth = calibrated_ensemble(m, 40000, seed=m)
    ssr = spread_skill_ratio(members, truth).ssr.item()
    assert ssr == pytest.approx(1.0, abs=0.03)  # without the finite-M factor it would be sqrt(M / (M + 1))
    narrow = spread_skill_ratio(*calibrated_ensemble(m, 40000, scale=0.5, seed=m)).ssr.item()
    assert narrow < 0.7


def test_ssr_of_one_member_is_nan():
    members, truth = random_ensemble(1)
    result = spread_skill_ratio(members, truth)
    assert math.isnan(result.ssr.item()) and math.isnan(result.spread.item()) and result.skill.item() > 0


def test_rank_histogram_is_flat_for_a_calibrated_ensemble():
    m, points = 9, 6000
    members, truth = calibrated_ensemble(m, points, seed=5)
    counts = rank_histogram(members, truth)
    assert counts.shape == (m + 1,) and counts.sum().item() == points
    expected = points / (m + 1)
    statistic = float(((counts - expected) ** 2 / expected).sum())
    assert statistic < chi2.ppf(0.999, m)
    u_shaped = rank_histogram(*calibrated_ensemble(m, points, scale=0.5, seed=5))
    assert u_shaped[0] > 2 * expected and u_shaped[-1] > 2 * expected


def test_rank_histogram_ties_are_spread_and_reproducible():
    truth = torch.zeros(4000)
    members = torch.zeros(4000, 3)  # every member ties with the truth
    counts = rank_histogram(members, truth)
    assert torch.equal(counts, rank_histogram(members, truth))  # default generator is seeded
    assert counts.sum().item() == 4000 and counts.min().item() > 900
    other = rank_histogram(members, truth, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(counts, other)
    kept = rank_histogram(members[:, None].expand(4000, 2, 3), truth[:, None].expand(4000, 2), 2, dims=0)
    assert kept.shape == (2, 4)


def test_constant_weights_change_nothing():
    members, truth = random_ensemble(4, seed=7)
    w = torch.full((5, 4), 3.7, dtype=torch.float64)
    assert torch.allclose(crps_ensemble(members, truth, weights=w), crps_ensemble(members, truth))
    assert torch.allclose(rmse(members[:, 0], truth, w, dims=(2, 3)), rmse(members[:, 0], truth, dims=(2, 3)))
    for a, b in zip(spread_skill_ratio(members, truth, weights=w), spread_skill_ratio(members, truth)):
        assert torch.allclose(a, b)
    assert torch.allclose(rank_histogram(members, truth, weights=w), rank_histogram(members, truth))


def test_weights_along_an_axis_where_the_field_is_constant():
    """Area-like weights varying along y leave the score of a field constant in y unchanged, and a shift of
    the field along x (periodic) changes nothing; weights that vanish on half the grid score the other half."""
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(2, 1, 8, 1, generator=g, dtype=torch.float64).expand(2, 1, 8, 6)
    members = torch.randn(2, 5, 1, 8, 1, generator=g, dtype=torch.float64).expand(2, 5, 1, 8, 6)
    w_y = torch.cos(torch.linspace(-1.2, 1.2, 6, dtype=torch.float64))  # (y,) like cos(latitude)
    plain = crps_ensemble(members, truth)
    weighted = crps_ensemble(members, truth, weights=w_y)
    shifted = crps_ensemble(members.roll(3, -2), truth.roll(3, -2), weights=w_y)
    assert weighted.item() == pytest.approx(plain.item(), abs=1e-12)
    assert shifted.item() == pytest.approx(plain.item(), abs=1e-12)
    half = torch.cat([torch.ones(4), torch.zeros(4)]).to(torch.float64)[:, None]  # (x, 1)
    assert crps_ensemble(members, truth, weights=half).item() == pytest.approx(
        crps_ensemble(members[..., :4, :], truth[..., :4, :]).item(), abs=1e-12)
    assert weighted_mean(torch.arange(4.0), weights=torch.tensor([0.0, 0, 1, 1])).item() == 2.5


def test_rmse_by_hand():
    pred, truth = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.zeros(2, 2)
    assert rmse(pred, truth).item() == pytest.approx(math.sqrt(30 / 4))
    assert torch.allclose(rmse(pred, truth, dims=1), torch.tensor([math.sqrt(2.5), math.sqrt(12.5)]))
    with pytest.raises(ValueError, match="shape"):
        rmse(pred, truth[:1])


@pytest.mark.parametrize("shape", [(32,), (16, 12)])
def test_energy_spectrum_agrees_with_the_radial_spectrum(shape):
    x = torch.randn(3, 2, 4, *shape, generator=torch.Generator().manual_seed(0))
    k, spectra = energy_spectrum(x, len(shape))
    assert spectra.shape == (3, 2, 4, min(shape) // 2 + 1)
    k_ref, ref = radial_power_spectrum(x.reshape(1, -1, *shape))
    assert torch.equal(k, k_ref) and torch.allclose(spectra.mean((0, 1, 2)), ref, rtol=1e-12)


def test_energy_spectrum_of_a_cosine_and_the_spectrum_errors():
    x = grid_coordinates((64,), dtype=torch.float64)[0]
    field = torch.cos(2 * math.pi * 5 * x) + 0.5 * torch.sin(2 * math.pi * 11 * x)
    _, e = energy_spectrum(field, 1)
    assert e[5].item() == pytest.approx(0.5) and e[11].item() == pytest.approx(0.125)
    _, e2 = energy_spectrum(math.sqrt(2) * field, 1)
    assert max_spectrum_ratio(e2, e).item() == pytest.approx(2.0)
    assert max_spectrum_ratio(e, e2).item() == pytest.approx(2.0)
    assert max_spectrum_ratio(e, e).item() == 1.0 and spectrum_error(e, e).item() == 0.0
    noisy = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, p = energy_spectrum(noisy, 2)
    assert spectrum_error(2 * p, p).allclose(torch.tensor(math.log10(2), dtype=torch.float64))
    assert log_spectrum_distance(2 ** 0.5 * noisy, noisy) == pytest.approx(math.log10(2))
