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


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` atomically and close it."""
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


def _show_field(ax, field: torch.Tensor, title: str, cmap: str = "RdBu_r", vmin=None, vmax=None):
    """Draw one 1-D curve or 2-D image (first spatial slice for 3-D)."""
    field = field.detach().float().cpu().numpy()
    while field.ndim > 2:
        field = field[0]
    if field.ndim == 1:
        ax.plot([i / len(field) for i in range(len(field))], field)
    else:
        im = ax.imshow(field.T, origin="lower", extent=(0, 1, 0, 1), cmap=cmap, vmin=vmin, vmax=vmax)
        bar = plt.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        bar.formatter.set_powerlimits((-2, 3))  # 2.5e-4 as "2.5" with a ×10⁻⁴ offset: no overlapping labels
        bar.ax.tick_params(labelsize=7)
        bar.ax.yaxis.offsetText.set_fontsize(7)
        bar.update_ticks()
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def plot_samples_vs_data(
    rows: Mapping[str, torch.Tensor], path: str | os.PathLike, channel: int = 0, n_show: int = 4,
    channel_name: str = "",
) -> Path:
    """Fields of several batches in rows (e.g. data, samples at 32², samples at 64²) plus their spectra.

    Args:
        rows: name -> (B, C, *S) batch; each row shows ``n_show`` fields of ``channel``.
        path: PNG file to write.
    """
    fig = plt.figure(figsize=(3.0 * n_show + 4.5, 2.7 * len(rows)))
    grid = fig.add_gridspec(len(rows), n_show + 1, width_ratios=[1.0] * n_show + [1.6], wspace=0.35)
    lo = min(float(b[:n_show, channel].min()) for b in rows.values())
    hi = max(float(b[:n_show, channel].max()) for b in rows.values())
    spectrum_ax = fig.add_subplot(grid[:, n_show])
    for r, (name, batch) in enumerate(rows.items()):
        for i in range(min(n_show, batch.shape[0])):
            _show_field(fig.add_subplot(grid[r, i]), batch[i, channel], f"{name} #{i}", vmin=lo, vmax=hi)
        k, p = radial_power_spectrum(batch[:, channel : channel + 1])
        spectrum_ax.loglog(k[1:].numpy(), p[1:].numpy(), label=f"{name} ({'×'.join(map(str, batch.shape[2:]))})")
    spectrum_ax.yaxis.tick_right()  # labels on the far side: clear of the neighbouring colourbar
    spectrum_ax.yaxis.set_label_position("right")
    spectrum_ax.set_xlabel("wavenumber |k|")
    spectrum_ax.set_ylabel("power")
    spectrum_ax.set_title(f"radial power spectrum {channel_name}".strip(), fontsize=9)
    spectrum_ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_panels(panels: Sequence[tuple[str, torch.Tensor]], path: str | os.PathLike, *, cmaps: Sequence[str] = (),
                points: torch.Tensor | None = None, point_panels: Sequence[int] = (),
                shared: Sequence[int] = (), title: str = "") -> Path:
    """One row of named fields (each (*S)), optionally overlaying sensor ``points`` (N, 2) on some panels.

    ``shared``: indices of panels drawn on one colour scale (e.g. truth, observed field and estimate, so that
    they can be compared by eye); ``title``: a line above the row (e.g. how the estimate was made).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0 + 0.3 * bool(title)), squeeze=False)
    limits = {}
    if shared:
        values = [panels[i][1] for i in shared]
        limits = {"vmin": min(float(v.min()) for v in values), "vmax": max(float(v.max()) for v in values)}
    for i, (name, field) in enumerate(panels):
        _show_field(axes[0, i], field, name, cmap=cmaps[i] if i < len(cmaps) else "RdBu_r",
                    **(limits if i in shared else {}))
        if points is not None and i in point_panels:  # black dots with a white rim show on every colour
            axes[0, i].scatter(points[:, 0].cpu().numpy(), points[:, 1].cpu().numpy(), s=10, c="k", marker="o",
                               edgecolors="w", linewidths=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
