"""``funcdiff merge``: join the per-case parts of a batch run into one netCDF file with a ``case`` coordinate."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``merge`` verb."""
    p = subparsers.add_parser(
        "merge", help="join the parts of a batch solve/forecast run into one netCDF file",
        description="Join <dir>/parts/case_*.nc of a finished `solve --cases` or `forecast --indices/--init-times` "
                    "run into one file (solve: a `case` dimension; forecast: along init with a `case` "
                    "coordinate). Refuses while cases are missing.")
    p.add_argument("out_dir", type=Path, help="the --out-dir of the batch run")
    p.add_argument("--out", type=Path, default=None, help="merged file (default: <out_dir>/merged.nc)")
    p.add_argument("--seed", type=int, default=0, help="unused (merging is deterministic); accepted for uniformity")
    p.set_defaults(func=run_merge)


def run_merge(args: argparse.Namespace) -> int:
    from funcdiff.tasks.batch import merge_parts, read_manifest

    cases = len(read_manifest(args.out_dir)["cases"])
    path = merge_parts(args.out_dir, args.out)
    print(f"wrote {path} ({cases} cases)")
    return 0
