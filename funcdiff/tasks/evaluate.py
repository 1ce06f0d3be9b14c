"""Scores of an ensemble forecast against truth trajectories, per lead time and channel, with reference rows.

Forecast layout (written by ``funcdiff forecast``, :mod:`funcdiff.io.forecast_file`): one variable per channel of
dims ``(init, member, lead_time, x[, y])`` in physical units; coordinates ``lead_time``, ``lead`` (1..L, on
``lead_time``), ``init_time``, ``init_index`` and ``init_frame`` (on ``init``), ``member``; global attrs
``channels`` (JSON list) and ``dt``. Files of funcdiff <= 0.1 (dimension ``init_time``) are read too. Lead ℓ of
initial condition i is compared with frame ``init_frame[i] + ℓ`` of trajectory ``init_index[i]`` of the truth file
(funcdiff HDF5 trajectories ``(N, T, *S)``).

Forecast sources scored (dimension ``forecast_source`` of ``scores.nc``: ``scores.rmse.sel(forecast_source=
"persistence")``): ``forecast`` (the ensemble), ``persistence`` (the initial frame, repeated) and ``climatology``
(the mean field over every trajectory and frame of a climatology file, by default the truth); the two references
are deterministic, so their CRPS is their mean absolute error and their spread and SSR are NaN. Scores in the
channel's units (RMSE, CRPS, spread) carry the channels' units when all channels share them (``"1"`` for the
dimensionless PDE data), else no ``units`` attribute and the units per channel in ``channel_units(channel)``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from funcdiff.errors import UserError
from funcdiff.io.forecast_file import FORECAST_DIMS, ForecastContents, open_layout, read_contents
from funcdiff.metrics import (angular_power_spectrum, crps_ensemble, energy_spectrum, max_spectrum_ratio,
                              rank_histogram, rmse, spectrum_error, spread_skill_ratio, weighted_mean)

METHODS = ("forecast", "persistence", "climatology")  # the values of the scores' `forecast_source` dimension
SOURCE_DIM = "forecast_source"  # not "method": xarray's .sel(method=...) is its own argument
CHANNEL_UNITS = "channel units"  # in SCORE_ATTRS: replaced by the forecast channels' units
SCORES = ("rmse", "rel_l2", "crps", "spread", "ssr", "acc", "spectrum_error", "max_spectrum_ratio")
SCORE_ATTRS = {
    "rmse": ("RMSE of the ensemble mean", "channel units"),
    "rel_l2": ("relative L2 error of the ensemble mean, averaged over initial conditions", "1"),
    "crps": ("fair CRPS (mean absolute error for deterministic methods)", "channel units"),
    "spread": ("sqrt of the mean unbiased ensemble variance", "channel units"),
    "ssr": ("spread-skill ratio, sqrt((M+1)/M) spread / rmse (Fortin et al. 2014)", "1"),
    "acc": ("anomaly correlation of the ensemble mean against the climatology, mean over initial conditions "
            "(WeatherBench 2; NaN for climatology itself)", "1"),
    "spectrum_error": ("RMS over shells k >= 1 of log10(E / E_truth)", "1"),
    "max_spectrum_ratio": ("max over shells k >= 1 of max(E / E_truth, E_truth / E)", "1"),
    "rank_histogram": ("counts of the truth's rank among the members", "1"),
}


def lead_scores(members: Tensor, truth: Tensor, weights: Optional[Tensor] = None, *,
                generator: Optional[torch.Generator] = None, climatology: Optional[Tensor] = None,
                sphere: bool = False) -> dict[str, Tensor]:
    """Every score per channel and lead, averaged over initial conditions and space.

    Args:
        members: ensemble forecast; a deterministic forecast is one member (its CRPS is then its MAE).
        truth: the verifying trajectories.
        weights: spatial (e.g. area) weights broadcastable to ``*S``; normalised to mean 1. The spectra are
            unweighted (periodic grids).
        generator: breaks ties in the rank histogram (default: seeded with 0).
        climatology: the reference of the anomaly correlation ``acc``, broadcastable to ``truth`` (None: acc NaN).
        sphere: the fields lie on a lat-lon grid: spectra are angular power spectra over degree l
            (:func:`funcdiff.metrics.angular_power_spectrum`) instead of 2-D Fourier shells.

    Shapes: members (B, M, C, L, *S), truth (B, C, L, *S) -> ``rmse``, ``rel_l2``, ``crps``, ``spread``,
    ``ssr``, ``spectrum_error``, ``max_spectrum_ratio`` (C, L) and ``rank_histogram`` (C, L, M + 1).
    """
    if members.ndim != truth.ndim + 1 or truth.ndim < 4:
        raise ValueError(f"expected members (B, M, C, L, *S) and truth (B, C, L, *S), got shapes "
                         f"{tuple(members.shape)} and {tuple(truth.shape)}")
    space = tuple(range(3, truth.ndim))
    pooled = (0, *space)
    mean = members.mean(1)
    ssr, spread, _ = spread_skill_ratio(members, truth, 1, weights=weights, dims=pooled)
    sample_l2 = rmse(mean, truth, weights, space) / weighted_mean(truth**2, space, weights).sqrt().clamp_min(1e-30)
    scores = {
        "rmse": rmse(mean, truth, weights, pooled),
        "rel_l2": sample_l2.mean(0),
        "crps": crps_ensemble(members, truth, 1, weights=weights, dims=pooled),
        "spread": spread,
        "ssr": ssr,
        "rank_histogram": rank_histogram(members, truth, 1, weights=weights, dims=pooled, generator=generator),
        "acc": _anomaly_correlation(mean, truth, climatology, weights, space),
    }
    return {**scores, **_spectrum_scores(members, truth, sphere)}


def _anomaly_correlation(mean: Tensor, truth: Tensor, climatology: Optional[Tensor], weights: Optional[Tensor],
                         space: tuple[int, ...]) -> Tensor:
    """ACC of :func:`funcdiff.metrics.acc` (anomalies not re-centred, weighted over space, then the mean over
    initial conditions). Shapes: mean, truth (B, C, L, *S) -> (C, L)."""
    if climatology is None:
        return torch.full(truth.shape[1:3], float("nan"), dtype=truth.dtype)
    f, o = mean - climatology, truth - climatology
    per_case = weighted_mean(f * o, space, weights) / (
        weighted_mean(f * f, space, weights) * weighted_mean(o * o, space, weights)).sqrt()
    return per_case.mean(0)


def _spectrum_scores(members: Tensor, truth: Tensor, sphere: bool = False) -> dict[str, Tensor]:
    """Spectrum error and max ratio of the mean member spectrum against the truth's, per channel and lead.

    Shapes: members (B, M, C, L, *S), truth (B, C, L, *S) -> two tensors (C, L).
    """
    spatial = truth.ndim - 3
    if sphere:
        _, forecast_spectrum = angular_power_spectrum(members)
        _, truth_spectrum = angular_power_spectrum(truth)
    else:
        _, forecast_spectrum = energy_spectrum(members, spatial)
        _, truth_spectrum = energy_spectrum(truth, spatial)
    forecast_spectrum, truth_spectrum = forecast_spectrum.mean((0, 1)), truth_spectrum.mean(0)
    return {"spectrum_error": spectrum_error(forecast_spectrum, truth_spectrum),
            "max_spectrum_ratio": max_spectrum_ratio(forecast_spectrum, truth_spectrum)}


# --- reading and checking the inputs -------------------------------------------------------------------


def load_trajectories(path: str | os.PathLike, channels: Sequence[str], role: str = "truth"):
    """Read ``channels`` of a trajectory file with :func:`funcdiff.data.load_fields` (ValueError -> UserError).

    Shapes: -> FieldData with fields (N, T, *S).
    """
    from funcdiff.data import load_fields

    try:
        data = load_fields(path, fields=list(channels))
    except ValueError as err:
        raise UserError(f"{role} file: {err}") from err
    return data


def check_grid(data, layout: ForecastContents, forecast: xr.Dataset, role: str = "truth") -> None:
    """UserError unless ``data`` holds trajectories on the forecast's grid (sizes and, if stored, coordinates)."""
    field = data.fields[layout.channels[0]]
    sizes = tuple(forecast.sizes[d] for d in layout.spatial)
    if tuple(field.shape[2:]) != sizes or field.ndim != 2 + len(sizes):
        raise UserError(f"grid mismatch: forecast {dict(zip(layout.spatial, sizes))}, {role} fields "
                        f"(N, T, *S) = {tuple(field.shape)} in {data.path}")
    for name in layout.spatial:
        if name in data.coords and name in forecast.coords:
            ours, theirs = forecast[name].values, data.coords[name].double().numpy()
            if not np.allclose(ours, theirs, rtol=0, atol=1e-6):
                raise UserError(f"grid mismatch: forecast {name} in [{ours.min():g}, {ours.max():g}], "
                                f"{role} {name} in [{theirs.min():g}, {theirs.max():g}] ({data.path})")


def scored_leads(layout: ForecastContents, num_trajectories: int, num_frames: int) -> np.ndarray:
    """Indices (into ``lead_time``) of the leads whose truth exists for every initial condition.

    Raises UserError for out-of-range ``init_index``/``init_frame`` or when no lead has a truth; warns when
    some leads are left out.
    """
    bad = layout.init_index[(layout.init_index < 0) | (layout.init_index >= num_trajectories)]
    if bad.size:
        raise UserError(f"forecast init_index {bad.tolist()} out of range: the truth has {num_trajectories} "
                        "trajectories")
    bad = layout.init_frame[(layout.init_frame < 0) | (layout.init_frame >= num_frames)]
    if bad.size:
        raise UserError(f"forecast init_frame {bad.tolist()} out of range: the truth has {num_frames} frames")
    keep = np.flatnonzero(layout.init_frame.max() + layout.lead < num_frames)
    if keep.size == 0:
        raise UserError(f"no forecast lead overlaps the truth: leads {layout.lead.min()}..{layout.lead.max()} "
                        f"from frame {layout.init_frame.max()}, truth has {num_frames} frames")
    if keep.size < layout.lead.size:
        warnings.warn(f"leads {layout.lead[keep[-1]] + 1}..{layout.lead.max()} go beyond the truth's "
                      f"{num_frames} frames and are not scored", UserWarning, stacklevel=3)
    return keep


def check_times(layout: ForecastContents, times: Optional[Tensor]) -> None:
    """Warn when the forecast's lead times differ from the truth's frame times (another frame spacing?)."""
    if times is None or times.numel() < 2:
        return
    t = times.double().numpy()
    frames = np.clip(layout.init_frame[0] + layout.lead, 0, len(t) - 1)
    expected = t[frames] - t[layout.init_frame[0]]
    ok = frames == layout.init_frame[0] + layout.lead
    if not np.allclose(layout.lead_time[ok], expected[ok], rtol=1e-3, atol=1e-9):
        warnings.warn(f"forecast lead_time {layout.lead_time[ok][:3].tolist()}... differs from the truth's "
                      f"frame times {expected[ok][:3].tolist()}...: is the frame spacing the same?",
                      UserWarning, stacklevel=3)


def climatology_field(data, channels: Sequence[str]) -> Tensor:
    """Mean field over every trajectory and frame (a deterministic reference forecast).

    Shapes: data.fields[c] (N, T, *S) -> (C, *S) float64.
    """
    return torch.stack([data.fields[c].double().mean((0, 1)) for c in channels])


# --- scoring --------------------------------------------------------------------------------------------


def score_forecast(forecast: xr.Dataset, truth_path: str | os.PathLike,
                   climatology_path: Optional[str | os.PathLike] = None, *, weights: Optional[Tensor] = None,
                   lead_chunk: int = 16, seed: int = 0) -> xr.Dataset:
    """Scores of ``forecast`` and of the persistence and climatology references against the truth file.

    Leads are read and scored ``lead_chunk`` at a time, so memory does not grow with the number of leads;
    leads without a truth for every initial condition are left out (with a warning).

    Args:
        forecast: dataset in the layout of the module docstring (e.g. ``xr.open_dataset("forecast.nc")``).
        truth_path: funcdiff HDF5 trajectories holding every forecast channel on the forecast's grid.
        climatology_path: trajectories whose mean field is the climatology (default: ``truth_path``).
        weights: spatial weights broadcastable to ``*S`` (see :func:`lead_scores`).
        seed: seeds the generator that breaks rank ties.

    Shapes: -> dataset with variables ``SCORES`` of dims (forecast_source, lead_time, channel) and
    ``rank_histogram`` (forecast_source, lead_time, channel, rank); ``rank`` has M + 1 entries (NaN for the
    deterministic references).
    """
    forecast = open_layout(forecast)
    layout = read_contents(forecast)
    if weights is None and "latitude" in layout.spatial:  # lat-lon forecast: WeatherBench 2 area weights
        from funcdiff.metrics import latitude_weights

        weights = latitude_weights(forecast["latitude"].values)[:, None]
    truth = load_trajectories(truth_path, layout.channels)
    check_grid(truth, layout, forecast)
    trajectories = truth.stack(layout.channels).double()  # (N, C, T, *S)
    keep = scored_leads(layout, trajectories.shape[0], trajectories.shape[2])
    check_times(layout, truth.coords.get("t"))
    clim_data = truth if climatology_path is None else load_trajectories(climatology_path, layout.channels,
                                                                          "climatology")
    check_grid(clim_data, layout, forecast, "climatology")
    climatology = climatology_field(clim_data, layout.channels)
    generator = torch.Generator().manual_seed(seed)
    chunks = [_score_chunk(forecast, layout, trajectories, climatology, keep[i:i + lead_chunk], weights, generator)
              for i in range(0, len(keep), lead_chunk)]
    scores = {m: {k: torch.cat([c[m][k] for c in chunks], dim=1) for k in chunks[0][m]} for m in METHODS}
    attrs = {"truth": str(truth_path), "climatology": str(climatology_path or truth_path),
             "members": forecast.sizes["member"], "initial_conditions": forecast.sizes["init"],
             "dt": forecast.attrs.get("dt", float("nan")),
             "history": str(forecast.attrs.get("history", ""))}  # the forecast's; writing adds evaluate's line
    units = {c: str(forecast[c].attrs.get("units", "1")) for c in layout.channels}
    return scores_to_dataset(scores, layout, keep, attrs, channel_units=units,
                             lead_time_attrs=_lead_time_attrs(forecast))


def _lead_time_attrs(forecast: xr.Dataset) -> dict:
    """CF attributes of the scores' ``lead_time`` (values as :func:`read_contents` gives them: hours for a
    decoded CF duration, else the forecast's own numbers)."""
    from funcdiff.io.netcdf import cf_units

    lead = forecast["lead_time"]
    if np.issubdtype(lead.dtype, np.timedelta64):
        return {"standard_name": "forecast_period", "long_name": "lead time", "units": "hours"}
    attrs = {k: lead.attrs[k] for k in ("standard_name", "long_name", "units") if k in lead.attrs}
    return cf_units({"long_name": "lead time", "units": "1", **attrs})


def _read_members(forecast: xr.Dataset, layout: ForecastContents, leads: np.ndarray) -> Tensor:
    """The forecast at the lead indices ``leads``. Shapes: -> (B, M, C, l, *S) float64."""
    order = (*FORECAST_DIMS, *layout.spatial)
    arrays = [forecast[c].isel(lead_time=leads).transpose(*order).values for c in layout.channels]
    return torch.from_numpy(np.stack(arrays, axis=2)).double()


def _score_chunk(forecast: xr.Dataset, layout: ForecastContents, trajectories: Tensor, climatology: Tensor,
                 leads: np.ndarray, weights: Optional[Tensor],
                 generator: torch.Generator) -> dict[str, dict[str, Tensor]]:
    """:func:`lead_scores` of every method at the lead indices ``leads``.

    Shapes: trajectories (N, C, T, *S), climatology (C, *S) -> method -> score -> (C, l[, M + 1]).
    """
    index = torch.as_tensor(layout.init_index)
    start = torch.as_tensor(layout.init_frame)
    frames = start[:, None] + torch.as_tensor(layout.lead[leads])[None, :]  # (B, l)
    truth = trajectories[index[:, None], :, frames].movedim(1, 2)  # (B, C, l, *S)
    shape = (truth.shape[0], 1, *truth.shape[1:])
    persistence = trajectories[index, :, start][:, None, :, None].expand(shape)
    clim = climatology[None, None, :, None].expand(shape)
    members = _read_members(forecast, layout, leads)
    reference = climatology[None, :, None]
    sphere = layout.spatial == ("latitude", "longitude")
    return {"forecast": lead_scores(members, truth, weights, generator=generator, climatology=reference, sphere=sphere),
            "persistence": lead_scores(persistence, truth, weights, climatology=reference, sphere=sphere),
            "climatology": lead_scores(clim, truth, weights, climatology=reference, sphere=sphere)}


def scores_to_dataset(scores: dict[str, dict[str, Tensor]], layout: ForecastContents, leads: np.ndarray,
                      attrs: dict, *, channel_units: Optional[dict] = None,
                      lead_time_attrs: Optional[dict] = None) -> xr.Dataset:
    """Collect :func:`lead_scores` outputs (per forecast source, each (C, L) or (C, L, M + 1)) into a dataset.

    ``channel_units``: channel -> CF units (default "1"); ``lead_time_attrs``: CF attributes of ``lead_time``."""
    units = [str((channel_units or {}).get(c, "1")) for c in layout.channels]
    common = units[0] if len(set(units)) == 1 else None
    dims = (SOURCE_DIM, "lead_time", "channel")
    data_vars = {}
    for name in SCORES:
        var_attrs = {"long_name": SCORE_ATTRS[name][0], "units": SCORE_ATTRS[name][1]}
        if var_attrs["units"] == CHANNEL_UNITS:
            if common is None:
                del var_attrs["units"]
                var_attrs["comment"] = "in the units of each channel: see channel_units"
            else:
                var_attrs["units"] = common
        data_vars[name] = (dims, np.stack([scores[m][name].T.numpy() for m in METHODS]), var_attrs)
    ranks = scores["forecast"]["rank_histogram"].permute(1, 0, 2).numpy()  # (L, C, M + 1)
    histogram = np.full((len(METHODS), *ranks.shape), np.nan)
    histogram[0] = ranks
    data_vars["rank_histogram"] = ((*dims, "rank"), histogram, {"long_name": SCORE_ATTRS["rank_histogram"][0],
                                                               "units": "1"})
    if common is None:
        data_vars["channel_units"] = (("channel",), units, {"long_name": "units of each channel"})
    coords = {SOURCE_DIM: (SOURCE_DIM, list(METHODS), {"long_name": "source of the scored forecast: the ensemble, "
                                                                    "or the persistence or climatology reference"}),
              "lead_time": ("lead_time", layout.lead_time[leads],
                            lead_time_attrs or {"long_name": "lead time", "units": "1"}),
              "lead": ("lead_time", layout.lead[leads].astype(np.int32), {"long_name": "lead (forecast steps)"}),
              "channel": ("channel", list(layout.channels), {"long_name": "forecast channel"}),
              "rank": ("rank", np.arange(ranks.shape[-1], dtype=np.int32),
                       {"long_name": "rank of the truth among the ensemble members"})}
    import funcdiff

    return xr.Dataset(data_vars, coords=coords, attrs={"title": "funcdiff forecast scores", **attrs,
                                                       "funcdiff_version": funcdiff.__version__,
                                                       "Conventions": "CF-1.8"})


# --- outputs --------------------------------------------------------------------------------------------


def score_rows(scores: xr.Dataset) -> list[dict]:
    """One JSON-ready row per (forecast source, channel, lead): ``{"method", "channel", "lead", "lead_time",
    <scores>}`` (NaN as None; ``method`` is the ``forecast_source``)."""
    rows = []
    for method in scores[SOURCE_DIM].values:
        for channel in scores["channel"].values:
            sel = scores.sel({SOURCE_DIM: method, "channel": channel})
            for i in range(scores.sizes["lead_time"]):
                row = {"method": str(method), "channel": str(channel), "lead": int(sel["lead"][i]),
                       "lead_time": float(sel["lead_time"][i])}
                for name in SCORES:
                    value = float(sel[name][i])
                    row[name] = value if math.isfinite(value) else None
                rows.append(row)
    return rows


SHORT_TITLES = {"rmse": "RMSE of the ensemble mean", "rel_l2": "relative L2 error of the ensemble mean",
                "crps": "fair CRPS", "spread": "ensemble spread", "ssr": "spread-skill ratio (goal: 1)",
                "acc": "anomaly correlation (ACC)", "spectrum_error": "spectrum error (RMS of log10 ratio)",
                "max_spectrum_ratio": "worst spectrum ratio (goal: < 2)"}
UNIT_SCORES = ("rmse", "crps", "spread")


def score_units(scores: xr.Dataset) -> dict[str, str]:
    """channel -> units of its RMSE, CRPS and spread: the ``channel_units`` variable, else the common ``units``
    of ``rmse``; a channel of unknown units is its own group (``"? <channel>"``), so that channels whose units
    may differ never share an axis."""
    channels = [str(c) for c in scores["channel"].values]
    if "channel_units" in scores:
        return dict(zip(channels, (str(u) for u in np.atleast_1d(scores["channel_units"].values))))
    common = scores["rmse"].attrs.get("units")
    if common and common != "channel units":
        return {c: str(common) for c in channels}
    return {c: "1" if len(channels) == 1 else f"? {c}" for c in channels}


def plot_scores(scores: xr.Dataset, path: str | os.PathLike) -> Path:
    """PNG of :func:`scores_figure`; returns ``path``."""
    from funcdiff.io.plots import save_figure

    return save_figure(scores_figure(scores), path)


def scores_figure(scores: xr.Dataset):
    """Matplotlib Figure of every score against lead time and the forecast's rank histogram pooled over leads.

    Scores in a channel's units (RMSE, CRPS, spread) get one panel per unit (z500 never shares an axis with the
    winds); dimensionless scores one panel each with every channel. Colour = channel, line style = forecast source
    (ensemble, persistence, climatology), explained in one legend shared by all panels. The rank histogram's y axis
    starts at 0, so a flat histogram looks flat.
    """
    import matplotlib.pyplot as plt

    from funcdiff.io.plots import units_label

    source_dim = "forecast_source" if "forecast_source" in scores.dims else "method"  # "method" before 0.2
    sources = [str(s) for s in scores[source_dim].values]
    channels = [str(c) for c in scores["channel"].values]
    units = score_units(scores)
    groups = list(dict.fromkeys(units[c] for c in channels))  # each unit once, in channel order
    colour = {c: f"C{i % 10}" for i, c in enumerate(channels)}
    style = dict(zip(METHODS, ("-", "--", ":")))
    unitless = [n for n in SCORES if n not in UNIT_SCORES]
    rows = len(groups) + -(-(len(unitless) + 1) // 3)
    fig, axes = plt.subplots(rows, 3, figsize=(13, 2.9 * rows + 0.7), squeeze=False, layout="constrained")
    lead_time = scores["lead_time"].values
    lead_units = scores["lead_time"].attrs.get("units")
    lead_label = "lead time" + (f" [{lead_units}]" if lead_units and lead_units != "1" else
                                " [model time units]" if lead_units == "1" else "")
    panels = [(name, [c for c in channels if units[c] == u], u) for u in groups for name in UNIT_SCORES]
    panels += [(name, channels, "1") for name in unitless]
    for ax, (name, chans, unit) in zip(axes.flat, panels):
        for source in sources:
            for channel in chans:
                values = scores[name].sel({source_dim: source, "channel": channel}).values
                if np.isfinite(values).any():
                    ax.plot(lead_time, values, style.get(source, "-."), color=colour[channel], marker=".")
        target = {"ssr": 1.0, "max_spectrum_ratio": 2.0}.get(name)  # SSR goal, "spectrum within a factor 2"
        if target is not None:
            ax.axhline(target, color="0.6", lw=0.8)
        if name == "max_spectrum_ratio":
            ax.set_yscale("log")
        title = SHORT_TITLES[name]
        if name in UNIT_SCORES and len(groups) > 1:
            title += f": {', '.join(chans)}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(lead_label, fontsize=8)
        ax.set_ylabel(units_label(name, None if unit.startswith("? ") else unit), fontsize=8)
        ax.tick_params(labelsize=7)
    used = len(panels)
    _plot_rank_histogram(axes.flat[used], scores, source_dim, colour)
    for ax in list(axes.flat)[used + 1:]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="k", ls=style.get(s, "-."), marker=".", label=s) for s in sources]
    handles += [Line2D([], [], color=colour[c], lw=3, label=units_label(c, units[c]) if not units[c].startswith("? ")
                       else c) for c in channels]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 8), fontsize=8, handlelength=4)
    return fig


def _plot_rank_histogram(ax, scores: xr.Dataset, source_dim: str = "forecast_source", colour=None) -> None:
    """Frequencies of the forecast's rank histogram pooled over leads, one step line per channel; y from 0."""
    counts = scores["rank_histogram"].sel({source_dim: "forecast"}).sum("lead_time")
    top = 1 / scores.sizes["rank"]
    for channel in scores["channel"].values:
        freq = counts.sel(channel=channel).values
        freq = freq / max(freq.sum(), 1e-30)
        top = max(top, float(np.nanmax(freq)))
        ax.step(scores["rank"].values, freq, where="mid", label=str(channel),
                color=(colour or {}).get(str(channel)))
    ax.axhline(1 / scores.sizes["rank"], color="0.6", lw=0.8)
    ax.set_ylim(0, 1.1 * top)
    ax.set_title("rank histogram (forecast, all leads; grey: flat)", fontsize=9)
    ax.set_xlabel("rank of the truth among the members", fontsize=8)
    ax.set_ylabel("frequency [dimensionless]", fontsize=8)
    ax.tick_params(labelsize=7)


def save_scores(scores: xr.Dataset, out: str | os.PathLike, json_path: Optional[str | os.PathLike] = None,
                plot_path: Optional[str | os.PathLike] = None) -> list[Path]:
    """Write ``scores`` to netCDF (and optionally JSON rows and a PNG), each atomically; returns the paths."""
    from funcdiff.io.atomic import write_text_atomic
    from funcdiff.io.netcdf import write_netcdf

    paths = [write_netcdf(scores, out)]
    if json_path is not None:
        paths.append(write_text_atomic(json_path, json.dumps(score_rows(scores), indent=1) + "\n"))
    if plot_path is not None:
        paths.append(plot_scores(scores, plot_path))
    return paths
