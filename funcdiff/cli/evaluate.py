"""``funcdiff evaluate``: score an ensemble forecast against truth trajectories.

Example::

    funcdiff evaluate --forecast forecast.nc --truth datasets/kolmogorov_64.h5 --out scores.nc \\
        --json scores.json --plot scores.png

writes, per lead time and channel, the ensemble-mean RMSE and relative L2, the fair CRPS, the spread and the
spread-skill ratio, the rank histogram and the energy-spectrum error, for the forecast and for the persistence
and climatology references (see :mod:`funcdiff.tasks.evaluate`).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` verb."""
    p = subparsers.add_parser("evaluate", help="score an ensemble forecast against truth trajectories",
                              description=__doc__.splitlines()[0])
    p.add_argument("--forecast", required=True, type=Path, help="forecast netCDF file or .zarr store written by `funcdiff forecast` or `funcdiff merge`")
    p.add_argument("--truth", required=True, type=Path, help="truth trajectories (funcdiff HDF5, or an ERA5 store of "
                   "`funcdiff data era5`: scores are then area-weighted)")
    p.add_argument("--out", required=True, type=Path, help="scores netCDF (dims method, lead_time, channel, rank)")
    p.add_argument("--json", type=Path, default=None, help="also write the scores as JSON rows")
    p.add_argument("--plot", type=Path, default=None, help="also write a PNG of every score against lead time")
    p.add_argument("--climatology", type=Path, default=None,
                   help="trajectories whose mean field is the climatology reference (default: --truth)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rank histogram's tie breaking")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Score ``--forecast``, write the outputs, print a one-line summary per method; warnings as one line."""
    from funcdiff.tasks.evaluate import save_scores, score_forecast

    forecast = open_forecast(args.forecast)
    line = truth_training_warning(forecast, args.truth)
    if line:
        print(f"funcdiff evaluate: warning: {line}", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        scores = score_forecast(forecast, args.truth, args.climatology, seed=args.seed)
    for warning in caught:
        print(f"funcdiff evaluate: warning: {warning.message}", file=sys.stderr)
    paths = save_scores(scores, args.out, args.json, args.plot)
    print(summary(scores))
    print("wrote " + ", ".join(map(str, paths)))
    return 0


def truth_training_warning(forecast, truth: Path) -> str | None:
    """The warning line when the forecast's initial states (``init_index``) are trajectories of ``truth`` that
    the forecaster was trained on (the split the forecast file recorded), else None."""
    import json

    from funcdiff.io.checkpoint import training_data_warning

    try:
        split = json.loads(forecast.attrs.get("training_split", "null"))
    except (TypeError, ValueError):
        return None
    if not isinstance(split, dict) or "init_index" not in forecast.variables:
        return None
    return training_data_warning(split, truth, forecast["init_index"].values.ravel().tolist(), "trajectory")


def open_forecast(path: Path):
    """A forecast netCDF file or zarr store (``.zarr``, WeatherBench 2 names on the sphere) opened with xarray in
    the netCDF layout (missing or unreadable: UserError)."""
    from funcdiff.errors import UserError
    from funcdiff.io.forecast_zarr import open_forecast_dataset

    if not path.exists():
        raise UserError(f"no such forecast file: {path}")
    try:
        return open_forecast_dataset(path)
    except (OSError, ValueError, KeyError) as err:
        kind = "a zarr store" if path.is_dir() else "netCDF"
        raise UserError(f"cannot read forecast {path} as {kind} ({err})") from err


def summary(scores) -> str:
    """Lines ``forecast_source channel: RMSE, CRPS, SSR at the first and last scored lead``."""
    lines = []
    for method in scores["forecast_source"].values:
        for channel in scores["channel"].values:
            sel = scores.sel({"forecast_source": method, "channel": channel}).isel(lead_time=[0, -1])
            leads = sel["lead"].values
            parts = [f"{name} {sel[name].values[0]:.4g} -> {sel[name].values[1]:.4g}" for name in ("rmse", "crps",
                                                                                                     "ssr")]
            lines.append(f"{method:>11} {channel} leads {leads[0]}->{leads[1]}: " + ", ".join(parts))
    return "\n".join(lines)
