"""Plots a person would rather look at than read: fields side by side and power spectra.

Uses matplotlib's non-interactive Agg backend; every figure is written atomically (temp file + rename).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from funcdiff.io.atomic import atomic_path  # noqa: E402
from funcdiff.metrics import radial_power_spectrum  # noqa: E402


DEFAULT_DPI = 110  # of every PNG the package writes (docs/make_pictures.py lowers it for small pictures)


def save_figure(fig, path: str | os.PathLike, dpi: Optional[int] = None) -> Path:
    """Save ``fig`` to ``path`` atomically (at ``dpi``, default :data:`DEFAULT_DPI`) and close it."""
    dpi = DEFAULT_DPI if dpi is None else dpi
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


SEQUENTIAL, DIVERGING = "viridis", "RdBu_r"
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def colour_scale(*fields, signed: Optional[bool] = None) -> tuple[str, float, float]:
    """(colormap name, vmin, vmax) of one colour scale shared by ``fields`` (tensors or arrays, NaN ignored).

    The rule: a diverging map (``RdBu_r``) centred on 0, from -max|v| to +max|v|, only where 0 means something:
    ``signed=True`` (anomalies, errors, increments), or, with ``signed=None``, data whose range straddles 0 with
    the smaller side at least a tenth of the larger (a signed PDE field such as vorticity, a wind component).
    Otherwise (``signed=False``, or absolute data such as geopotential, temperature, a permeability) a
    sequential map (``viridis``) spanning exactly [min, max], so that the data use the whole colour range.
    """
    values = [np.asarray(torch.as_tensor(f).detach().double().cpu()).ravel() for f in fields if f is not None]
    values = np.concatenate(values) if values else np.zeros(1)
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if signed is None:
        signed = lo < 0 < hi and min(-lo, hi) >= 0.1 * max(-lo, hi)
    if signed:
        top = max(abs(lo), abs(hi)) or 1.0
        return DIVERGING, -top, top
    if hi <= lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1.0), hi + 0.5 * (abs(hi) or 1.0)
    return SEQUENTIAL, lo, hi


def units_label(name: str, units: Optional[str]) -> str:
    """A colour-bar / axis label ``"z500 [m² s⁻²]"``; CF unit ``"1"`` (funcdiff's non-dimensional PDE fields)
    reads ``"[dimensionless]"``, no units at all ``"[units unknown]"``."""
    if units is None or str(units).strip() == "":
        return f"{name} [units unknown]"
    if str(units).strip() == "1":
        return f"{name} [dimensionless]"
    pretty = re.sub(r"(?<=[A-Za-z])(-?\d+)", lambda m: m.group(1).translate(_SUPERSCRIPT), str(units))
    return f"{name} [{pretty}]"


def map_extent(lat, lon) -> tuple[float, float, float, float]:
    """imshow extent (west, east, south, north) in degrees of cells centred on ascending ``lat``/``lon`` (°)."""
    lat, lon = np.sort(np.asarray(lat, dtype=float)), np.asarray(lon, dtype=float)
    dlat = float(lat[1] - lat[0]) if lat.size > 1 else 180.0
    dlon = float(lon[1] - lon[0]) if lon.size > 1 else 360.0
    return (float(lon[0]) - dlon / 2, float(lon[-1]) + dlon / 2,
            max(-90.0, float(lat[0]) - dlat / 2), min(90.0, float(lat[-1]) + dlat / 2))


def draw_map(ax, field, *, grid: str = "periodic", lat=None, lon=None, cmap: str = SEQUENTIAL, vmin=None, vmax=None,
             labels: bool = True):
    """Draw one 2-D field as a map and return the image.

    ``grid="latlon"``: ``field`` is (latitude, longitude); drawn with longitude across, north at the top, axes
    in degrees (``lat``/``lon`` in degrees; default the regular grid of :mod:`funcdiff.sphere`).
    Otherwise ``field`` is (x, y) on the unit domain: x across, y up, extent [0, 1]².
    """
    field = np.asarray(torch.as_tensor(field).detach().float().cpu())
    if grid == "latlon":
        from funcdiff.sphere import grid_latitudes, grid_longitudes

        lat = grid_latitudes(*field.shape) if lat is None else np.asarray(lat, dtype=float)
        lon = grid_longitudes(field.shape[1]) if lon is None else np.asarray(lon, dtype=float)
        if lat.size > 1 and lat[0] > lat[-1]:  # north-to-south rows: flip so that row 0 is the southernmost
            field, lat = field[::-1], lat[::-1]
        extent = map_extent(lat, lon)
        im = ax.imshow(field, origin="lower", extent=extent, cmap=cmap, vmin=vmin, vmax=vmax,
                       aspect="equal", interpolation="nearest")
        ax.set_xticks([t for t in (0, 90, 180, 270, 360) if extent[0] <= t <= extent[1]])
        ax.set_yticks([t for t in (-90, -45, 0, 45, 90) if extent[2] <= t <= extent[3]])
        ax.set_xlim(extent[:2])
        ax.set_ylim(extent[2:])
        if labels:
            ax.set_xlabel("longitude (°E)", fontsize=7)
            ax.set_ylabel("latitude (°N)", fontsize=7)
    else:
        im = ax.imshow(field.T, origin="lower", extent=(0, 1, 0, 1), cmap=cmap, vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
        if labels:
            ax.set_xlabel("x", fontsize=7)
            ax.set_ylabel("y", fontsize=7)
    ax.tick_params(labelsize=6)
    return im


def label_colorbar(bar, label: str) -> None:
    """Set a colour bar's label and keep its tick labels short (×10ⁿ offset for large or small values)."""
    bar.set_label(label, fontsize=7)
    try:
        bar.formatter.set_powerlimits((-2, 4))
    except AttributeError:
        pass
    bar.ax.tick_params(labelsize=6)
    bar.ax.yaxis.offsetText.set_fontsize(6)
    bar.update_ticks()


def _show_field(ax, field: torch.Tensor, title: str, cmap: Optional[str] = None, vmin=None, vmax=None, *,
                label: str = "", grid: str = "periodic", lat=None, lon=None):
    """Draw one 1-D curve or 2-D map (first spatial slice for 3-D) with a labelled colour bar. ``cmap=None``: the
    :func:`colour_scale` rule (then ``vmin``/``vmax`` default to its limits); ``label``: the colour bar's (or the
    curve's y axis) label, e.g. :func:`units_label`; ``grid="latlon"``: a (lat, lon) field as a map in degrees."""
    field = field.detach().float().cpu()
    while field.ndim > 2:
        field = field[0]
    if field.ndim == 1:
        ax.plot([i / len(field) for i in range(len(field))], field.numpy())
        ax.set_xlabel("x", fontsize=7)
        ax.set_ylabel(label, fontsize=7)
    else:
        if cmap is None:
            cmap, lo, hi = colour_scale(field)
            vmin, vmax = (lo if vmin is None else vmin), (hi if vmax is None else vmax)
        im = draw_map(ax, field, grid=grid, lat=lat, lon=lon, cmap=cmap, vmin=vmin, vmax=vmax)
        below = vmin is not None and float(field.min()) < vmin
        above = vmax is not None and float(field.max()) > vmax
        extend = "both" if below and above else "min" if below else "max" if above else "neither"
        label_colorbar(plt.colorbar(im, ax=ax, fraction=0.046, pad=0.04, extend=extend), label)
    ax.set_title(title, fontsize=9)


def plot_samples_vs_data(
    rows: Mapping[str, torch.Tensor], path: str | os.PathLike, channel: int = 0, n_show: int = 4,
    channel_name: str = "", units: Optional[str] = "1", grid: str = "periodic",
) -> Path:
    """Fields of several batches in rows (e.g. data, samples at 32², samples at 64²) plus their spectra, all
    fields on one colour scale (:func:`colour_scale`) whose colour bars carry ``units`` (CF; "1" dimensionless);
    ``grid="latlon"``: (lat, lon) fields drawn as maps, longitude across and north up.

    Args:
        rows: name -> (B, C, *S) batch; each row shows ``n_show`` fields of ``channel``.
        path: PNG file to write.
    """
    fig = plt.figure(figsize=(3.2 * n_show + 4.5, 2.9 * len(rows)))
    sphere = grid == "latlon"
    fig.set_size_inches(fig.get_figwidth() + 2.0 * sphere * n_show, fig.get_figheight())
    layout = fig.add_gridspec(len(rows), n_show + 1, width_ratios=[1.0 + sphere] * n_show + [1.6], wspace=0.5,
                              hspace=0.45)
    cmap, lo, hi = colour_scale(*[b[:n_show, channel] for b in rows.values()])
    label = units_label(channel_name or f"channel {channel}", units)
    spectrum_ax = fig.add_subplot(layout[:, n_show])
    for r, (name, batch) in enumerate(rows.items()):
        for i in range(min(n_show, batch.shape[0])):
            _show_field(fig.add_subplot(layout[r, i]), batch[i, channel], f"{name} #{i}", cmap=cmap, vmin=lo,
                        vmax=hi, label=label, grid=grid)
        k, p = radial_power_spectrum(batch[:, channel : channel + 1])
        spectrum_ax.loglog(k[1:].numpy(), p[1:].numpy(), label=f"{name} ({'×'.join(map(str, batch.shape[2:]))})")
    spectrum_ax.yaxis.tick_right()  # labels on the far side: clear of the neighbouring colourbar
    spectrum_ax.yaxis.set_label_position("right")
    spectrum_ax.set_xlabel("wavenumber |k| (cycles per unit length)")
    spectrum_ax.set_ylabel("power [(" + label.partition(" [")[2].rstrip("]") + ")²]" if units not in (None, "", "1")
                           else "power")
    spectrum_ax.set_title(f"radial power spectrum {channel_name}".strip(), fontsize=9)
    spectrum_ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_panels(panels: Sequence[tuple[str, torch.Tensor]], path: str | os.PathLike, **kwargs) -> Path:
    """Write :func:`panels_figure` (same arguments) as PNG; returns ``path``."""
    return save_figure(panels_figure(panels, **kwargs), path)


def panels_figure(panels: Sequence[tuple[str, torch.Tensor]], *, cmaps: Sequence[Optional[str]] = (),
                  points: torch.Tensor | None = None, point_panels: Sequence[int] = (),
                  shared: Sequence[int] = (), title: str = "", units: Sequence[Optional[str]] = (),
                  grid: str = "periodic", lat=None, lon=None, reference: Optional[int] = None):
    """One row of named fields (each (*S)), optionally overlaying sensor ``points`` on some panels.

    ``shared``: indices of panels drawn on one colour scale chosen by :func:`colour_scale` (e.g. truth, observed
    field and estimate, so that they can be compared by eye), from panel ``reference`` alone if given (the
    truth: estimates beyond its range saturate, marked by arrows on their colour bars); the other panels use ``cmaps[i]`` (e.g. a
    sequential map from 0 for a standard deviation or an absolute error; ``None``: the :func:`colour_scale`
    rule); ``units[i]``: CF units of panel i, written on its colour bar; ``title``: a line above the row (e.g.
    how the estimate was made). ``grid="latlon"``: fields are (lat, lon) maps drawn longitude across, north up,
    and ``points`` are (lat, lon) degrees; otherwise (x, y) on the unit domain and ``points`` (N, 2) are (x, y).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.1 + 0.3 * bool(title)), squeeze=False,
                             layout="constrained")
    limits = {}
    if shared:
        cmap, lo, hi = colour_scale(*[panels[i][1] for i in ([reference] if reference is not None else shared)])
        limits = {"cmap": cmap, "vmin": lo, "vmax": hi}
    for i, (name, field) in enumerate(panels):
        style = limits if i in shared else {"cmap": cmaps[i] if i < len(cmaps) else None}
        if style["cmap"] is not None and i not in shared and style["cmap"] != DIVERGING:
            style = {**style, "vmin": min(0.0, float(field.min()))}  # std, |error|: a sequential scale from 0
        _show_field(axes[0, i], field, name, label=units_label(name, units[i] if i < len(units) else "1"),
                    grid=grid, lat=lat, lon=lon, **style)
        if points is not None and i in point_panels:  # black dots with a white rim show on every colour
            pts = points.detach().double().cpu().numpy()
            across, up = (np.mod(pts[:, 1], 360.0), pts[:, 0]) if grid == "latlon" else (pts[:, 0], pts[:, 1])
            axes[0, i].scatter(across, up, s=10, c="k", marker="o", edgecolors="w", linewidths=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
