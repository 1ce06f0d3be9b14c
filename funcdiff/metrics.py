"""Metrics on fields (B, C, *S): relative L2 error, misclassification rate, power spectra; probabilistic scores
of ensembles (fair CRPS, spread-skill ratio, rank histogram), RMSE and energy-spectrum errors.

Grid means are used throughout (not sums), so a metric means the same at every resolution.

Reductions of the ensemble scores follow one rule: ``dims`` names dimensions of the *truth* (negative allowed);
``None`` averages over all of them, ``()`` keeps every point. Optional ``weights`` (e.g. area weights on a
lat-lon grid) broadcast against the truth and are normalised to mean 1 over the reduced dimensions, so constant
weights change nothing.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Union

import torch

Dims = Optional[Union[int, Sequence[int]]]


def _check_same_shape(pred: torch.Tensor, truth: torch.Tensor) -> None:
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from truth shape {tuple(truth.shape)}")


def relative_l2(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Relative L2 error ||pred - truth|| / ||truth|| per sample and channel (the FunDPS metric).

    Shapes: pred, truth (B, C, *S) -> (B, C).
    """
    _check_same_shape(pred, truth)
    dims = tuple(range(2, pred.ndim))
    return torch.linalg.vector_norm(pred - truth, dim=dims) / torch.linalg.vector_norm(truth, dim=dims).clamp_min(1e-30)


def misclassification_rate(pred: torch.Tensor, truth: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fraction of grid points on the wrong side of ``threshold`` (binary fields, e.g. the Darcy coefficient).

    Shapes: pred, truth (B, C, *S) -> (B, C).
    """
    _check_same_shape(pred, truth)
    dims = tuple(range(2, pred.ndim))
    return ((pred > threshold) != (truth > threshold)).float().mean(dims)


def radial_power_spectrum(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially (shell-) averaged power spectrum of periodic fields on [0, 1)^d.

    Power of mode k is |x̂_k|² with x̂ = FFT(x)/N (so a unit-amplitude cosine has power 1/4 in each of ±k);
    shells are |k| rounded to the nearest integer, summed over the shell, averaged over batch and channels,
    up to the largest wavenumber resolved in every direction.

    Shapes: x (B, C, *S) -> (wavenumbers (K,), power (K,)), K = min(S) // 2 + 1.
    """
    dims = tuple(range(2, x.ndim))
    power = (torch.fft.fftn(x.double(), dim=dims, norm="forward").abs() ** 2).mean((0, 1))
    shells, n_shells = _radial_shells(x.shape[2:], x.device)
    spectrum = torch.bincount(shells, power.flatten(), minlength=n_shells)[:n_shells]
    return torch.arange(n_shells, dtype=torch.float64), spectrum


def _radial_shells(shape: Sequence[int], device=None) -> tuple[torch.Tensor, int]:
    """Shell index round(|k|) of every FFT mode of a periodic grid, flattened, and the number of shells kept.

    Shapes: shape = S -> (shells (prod S,) int64, K = min(S) // 2 + 1).
    """
    k2 = torch.zeros(tuple(shape), dtype=torch.float64, device=device)
    for axis, n in enumerate(shape):
        view = [1] * len(shape)
        view[axis] = n
        k2 = k2 + (torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64, device=device) ** 2).reshape(view)
    return k2.sqrt().round().long().flatten(), min(shape) // 2 + 1


def log_spectrum_distance(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Root-mean-square difference of log10 radial power spectra, ignoring the mean (k = 0) shell.

    Shapes: x (B, C, *S), reference (B', C, *S') -> float; compared on the shells both resolve.
    """
    _, p = radial_power_spectrum(x)
    _, q = radial_power_spectrum(reference)
    n = min(len(p), len(q))
    return float(spectrum_error(p[:n], q[:n]))


# --- ensemble and deterministic scores ----------------------------------------------------------------


def _reduce_dims(dims: Dims, ndim: int) -> tuple[int, ...]:
    """``dims`` of a tensor with ``ndim`` dimensions as sorted non-negative ints; ``None`` means all."""
    if dims is None:
        return tuple(range(ndim))
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    return tuple(sorted({d % ndim for d in dims}))


def weighted_mean(x: torch.Tensor, dims: Dims = None, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of ``x`` over ``dims`` (``None``: all), weighted by ``weights`` normalised over those dims.

    Weights are broadcast to ``x`` and divided by their mean over ``dims``, so a constant weight is no weight.

    Shapes: x (*D), weights broadcastable to x -> x without ``dims``.
    """
    dims = _reduce_dims(dims, x.ndim)
    if weights is None:
        return x.mean(dims) if dims else x
    if not dims:
        return x
    weights = torch.broadcast_to(weights.to(x), x.shape)
    return (x * weights).sum(dims) / weights.sum(dims)


def _split_members(members: torch.Tensor, truth: torch.Tensor, member_dim: int) -> torch.Tensor:
    """``members`` with the member axis moved last, checked against ``truth``.

    Shapes: members = truth's shape with M inserted at ``member_dim`` -> (*truth.shape, M).
    """
    member_dim = member_dim % members.ndim
    moved = members.movedim(member_dim, -1)
    if moved.shape[:-1] != truth.shape:
        raise ValueError(f"members shape {tuple(members.shape)} (member dim {member_dim}) does not match "
                         f"truth shape {tuple(truth.shape)}")
    return moved


def crps_ensemble(members: torch.Tensor, truth: torch.Tensor, member_dim: int = 1, *, weights=None,
                  fair: bool = True, dims: Dims = None) -> torch.Tensor:
    """Continuous ranked probability score of an ensemble (lower is better; units of the data).

    CRPS = mean_i |X_i - y| - c Σ_{i,j} |X_i - X_j| with c = 1/(2M(M-1)) for the fair (unbiased) estimator
    (Ferro 2014, eq. 3; Zamo & Naveau 2018, "CRPS_Fair") and c = 1/(2M²) for the standard ("energy")
    estimator (Gneiting & Raftery 2007, eq. 21). The pair sum is computed from sorted members,
    Σ_{i,j} |X_i - X_j| = 2 Σ_i (2i - M - 1) X_(i), in O(M log M) time and O(M) memory per point.
    A one-member ensemble (M = 1) scores its absolute error under both estimators (the fair estimator's
    0/0 pair term is defined as 0).

    Shapes: members = truth's shape with M at ``member_dim``; truth (*D); weights broadcastable to (*D)
    -> (*D) reduced over ``dims`` (``None``: all, ``()``: pointwise).
    """
    ens = _split_members(members, truth, member_dim)
    m = ens.shape[-1]
    skill = (ens - truth.unsqueeze(-1)).abs().mean(-1)
    if m > 1:
        rank = torch.arange(1, m + 1, dtype=ens.dtype, device=ens.device)
        pair_sum = 2 * (torch.sort(ens, dim=-1).values * (2 * rank - m - 1)).sum(-1)
        skill = skill - pair_sum / (2 * m * (m - 1) if fair else 2 * m * m)
    return weighted_mean(skill, dims, weights)


def rmse(pred: torch.Tensor, truth: torch.Tensor, weights: Optional[torch.Tensor] = None,
         dims: Dims = None) -> torch.Tensor:
    """Root-mean-square error, sqrt(weighted mean over ``dims`` of (pred - truth)²).

    For an ensemble pass its mean, ``members.mean(member_dim)`` (the "skill" of :func:`spread_skill_ratio`).

    Shapes: pred, truth (*D); weights broadcastable to (*D) -> (*D) without ``dims``.
    """
    _check_same_shape(pred, truth)
    return weighted_mean((pred - truth) ** 2, dims, weights).sqrt()


class SpreadSkill(NamedTuple):
    """Spread-skill ratio with its parts (tensors of the same shape)."""

    ssr: torch.Tensor
    spread: torch.Tensor
    skill: torch.Tensor


def spread_skill_ratio(members: torch.Tensor, truth: torch.Tensor, member_dim: int = 1, *,
                       weights: Optional[torch.Tensor] = None, dims: Dims = None) -> SpreadSkill:
    """Spread-skill ratio with the finite-ensemble correction (Fortin et al. 2014, eq. 15).

    spread = sqrt(weighted mean of the unbiased (ddof = 1) ensemble variance), skill = RMSE of the ensemble
    mean, SSR = sqrt((M + 1) / M) · spread / skill; SSR ≈ 1 for a calibrated ensemble of any size M.
    With M = 1 the spread (and SSR) is NaN.

    Shapes: members = truth's shape with M at ``member_dim``; truth (*D) -> three tensors (*D) reduced
    over ``dims`` (``None``: all).
    """
    ens = _split_members(members, truth, member_dim)
    m = ens.shape[-1]
    variance = ens.var(-1, correction=1) if m > 1 else torch.full_like(truth, float("nan"))
    spread = weighted_mean(variance, dims, weights).sqrt()
    skill = rmse(ens.mean(-1), truth, weights, dims)
    return SpreadSkill(math.sqrt((m + 1) / m) * spread / skill, spread, skill)


def rank_histogram(members: torch.Tensor, truth: torch.Tensor, member_dim: int = 1, *,
                   weights: Optional[torch.Tensor] = None, dims: Dims = None,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Counts of the truth's rank among the members (Talagrand/rank histogram; Hamill 2001).

    Rank r in 0..M = number of members below the truth plus, for ties, a uniform draw from 0..(number of
    members equal to it) using ``generator`` (default: a fresh generator seeded with 0, so the result is
    deterministic). A calibrated ensemble has a flat histogram. With weights, each point counts its
    normalised weight, so the counts still sum to the number of points.

    Shapes: members = truth's shape with M at ``member_dim``; truth (*D) -> (*D without ``dims``, M + 1).
    """
    ens = _split_members(members, truth, member_dim)
    m = ens.shape[-1]
    below = (ens < truth.unsqueeze(-1)).sum(-1)
    ties = (ens == truth.unsqueeze(-1)).sum(-1)
    if bool((ties > 0).any()):
        if generator is None:
            generator = torch.Generator(device=truth.device).manual_seed(0)
        u = torch.rand(truth.shape, generator=generator, device=truth.device, dtype=torch.float64)
        below = below + (u * (ties + 1)).floor().long()
    one_hot = torch.nn.functional.one_hot(below, m + 1).double()
    reduce = _reduce_dims(dims, truth.ndim)
    weights = None if weights is None else weights.unsqueeze(-1)
    return weighted_mean(one_hot, reduce, weights) * math.prod(truth.shape[d] for d in reduce)


# --- spectra -----------------------------------------------------------------------------------------


def energy_spectrum(x: torch.Tensor, spatial_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shell-summed power spectrum of each periodic field in ``x`` (no averaging over the leading dims).

    Same normalisation and shells as :func:`radial_power_spectrum` (x̂ = FFT(x)/N, |x̂_k|² summed over
    round(|k|), so the shells sum to the mean of x²; a velocity field's kinetic energy is half of that),
    for 1-D, 2-D (or 3-D) fields; average the result over samples/members as needed.

    Shapes: x (*lead, *S) with len(S) = spatial_dims -> (wavenumbers (K,), spectra (*lead, K)),
    K = min(S) // 2 + 1; float64.
    """
    if not 1 <= spatial_dims <= x.ndim:
        raise ValueError(f"spatial_dims must be in 1..{x.ndim}, got {spatial_dims}")
    spatial = x.shape[x.ndim - spatial_dims:]
    dims = tuple(range(x.ndim - spatial_dims, x.ndim))
    power = torch.fft.fftn(x.double(), dim=dims, norm="forward").abs() ** 2
    shells, n_shells = _radial_shells(spatial, x.device)
    lead = power.shape[: x.ndim - spatial_dims]
    summed = torch.zeros(*lead, int(shells.max()) + 1, dtype=torch.float64, device=x.device)
    summed.index_add_(-1, shells, power.flatten(x.ndim - spatial_dims))
    return torch.arange(n_shells, dtype=torch.float64), summed[..., :n_shells]


def angular_power_spectrum(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Angular power spectrum C_l = Σ_m |a_lm|² / (2l + 1) of fields on a regular lat-lon grid (latitude ascending,
    :mod:`funcdiff.sphere`), for degrees l < H/2 (where the grid's quadrature is exact for band-limited fields):
    the sphere's counterpart of :func:`energy_spectrum`, used to score lat-lon forecasts.

    Shapes: x (..., H, W) -> (degrees (L,), spectra (..., L)), float64.
    """
    from funcdiff.sphere import GridSHT, angular_power

    degrees = x.shape[-2] // 2
    coeffs = GridSHT().sht(x.double(), s=(degrees, min(degrees, x.shape[-1] // 2)))
    return torch.arange(degrees, dtype=torch.float64), angular_power(coeffs)


def _log10_spectrum_ratio(spectrum: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """log10(E / E_ref) on the shells k ≥ 1 (powers floored at 1e-30). Shapes: (..., K) -> (..., K - 1)."""
    if spectrum.shape[-1] != reference.shape[-1]:
        raise ValueError(f"spectra have {spectrum.shape[-1]} and {reference.shape[-1]} shells")
    return torch.log10(spectrum[..., 1:].clamp_min(1e-30)) - torch.log10(reference[..., 1:].clamp_min(1e-30))


def spectrum_error(spectrum: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over shells k ≥ 1 of log10(E / E_ref) (0 when equal; 0.301 is a uniform factor 2).

    Shapes: spectrum, reference (..., K) (broadcastable) -> (...).
    """
    return (_log10_spectrum_ratio(spectrum, reference) ** 2).mean(-1).sqrt()


def max_spectrum_ratio(spectrum: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """max over shells k ≥ 1 of max(E / E_ref, E_ref / E): the worst factor by which the spectrum is off
    (1 when equal; "within a factor 2 of the data's" means ≤ 2).

    Shapes: spectrum, reference (..., K) (broadcastable) -> (...).
    """
    return 10.0 ** _log10_spectrum_ratio(spectrum, reference).abs().amax(-1)


# --- WeatherBench 2 scores on a lat-lon grid -------------------------------------------------------------


def latitude_weights(lat) -> torch.Tensor:
    """Area weights of a lat-lon grid's rows, normalised to mean 1 (WeatherBench 2, Rasp et al. 2024).

    Relative cell area sin(upper edge) - sin(lower edge) with edges at the midpoints and ±90°, which is exactly
    ∝ cos(latitude) on equiangular grids whose points avoid the poles (the WB2 5.625°/1.40625° grids); on grids
    with pole points the pole rows get their half cell instead of 0. Latitudes in degrees, any order.

    Shapes: lat (H,) -> (H,) float64.
    """
    import numpy as np

    from funcdiff.sphere import cell_area_weights

    lat = np.array(lat.detach().cpu() if torch.is_tensor(lat) else lat, dtype=np.float64)
    order = np.argsort(lat)
    weights = np.empty_like(lat)
    weights[order] = cell_area_weights(lat[order])
    return torch.from_numpy(weights)


def _row_weights(lat, like: torch.Tensor) -> torch.Tensor:
    """:func:`latitude_weights` as a (H, 1) tensor on ``like``'s device, broadcasting over (..., H, W)."""
    weights = latitude_weights(lat).to(like.device)
    if weights.shape[0] != like.shape[-2]:
        raise ValueError(f"{weights.shape[0]} latitudes for fields with {like.shape[-2]} rows")
    return weights[:, None]


def lat_weighted_rmse(pred: torch.Tensor, truth: torch.Tensor, lat, time_dim: int = 0) -> torch.Tensor:
    """Latitude-weighted RMSE in the WeatherBench 2 convention: the square root *after* the mean over time,

        RMSE = sqrt( mean_t  sum_{i,j} w_i (pred - truth)²_{t,i,j} / sum_{i,j} w_i ),

    w = :func:`latitude_weights`: the RMSE of the WeatherBench 2 paper (Rasp et al. 2024), i.e. WB2's ``MSE``
    averaged over time with the square root taken last. The mean over time of per-time RMSEs (WB2's
    ``RMSESqrtBeforeTimeAvg``) is smaller or equal. Units of the data.

    Shapes: pred, truth (..., H, W) with time at ``time_dim``; lat (H,) -> the remaining dims (e.g. (T, C, H, W)
    -> (C,)).
    """
    _check_same_shape(pred, truth)
    dims = _reduce_dims((time_dim, -2, -1), pred.ndim)
    return rmse(pred, truth, _row_weights(lat, pred), dims)


def acc(pred: torch.Tensor, truth: torch.Tensor, climatology: torch.Tensor, lat,
        time_dim: int = 0) -> torch.Tensor:
    """Anomaly correlation coefficient in the WeatherBench 2 convention (Rasp et al. 2024; WB2's ``ACC``).

    With anomalies f' = pred - climatology and o' = truth - climatology (not re-centred), at every time

        ACC_t = sum w f' o' / sqrt(sum w f'² · sum w o'²)      (sums over latitude and longitude),

    then the mean over time. 1 is perfect; climatology itself scores NaN (0/0). ``climatology`` is the mean
    state for each valid time (WB2: per day of year and hour, from the training years), broadcastable.

    Shapes: pred, truth (..., H, W) with time at ``time_dim``; climatology broadcastable to them; lat (H,)
    -> the remaining dims.
    """
    _check_same_shape(pred, truth)
    f, o = pred - climatology, truth - climatology
    weights = _row_weights(lat, pred)
    space = (-2, -1)
    per_time = weighted_mean(f * o, space, weights) / (
        weighted_mean(f * f, space, weights) * weighted_mean(o * o, space, weights)).sqrt()
    return per_time.mean(time_dim % pred.ndim)
