"""Plots a person would rather look at than read: fields side by side and power spectra.

Uses matplotlib's non-interactive Agg backend; every figure is written atomically (temp file + rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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
