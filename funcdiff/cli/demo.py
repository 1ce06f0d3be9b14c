"""``funcdiff demo``: train a small model on built-in data, sample at two resolutions, reconstruct from sensors."""

from __future__ import annotations

import argparse
import json

from funcdiff.cli import positive_int
from funcdiff.cli.choices import DEMO_SETTINGS
from funcdiff.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="end-to-end demo on built-in synthetic data (minutes on a CPU; --quick: "
                                           "seconds)",
                              description=__doc__)
    p.add_argument("--out-dir", default="funcdiff-demo", help="where outputs go (default: ./funcdiff-demo)")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds), for CI and smoke tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-progress", action="store_true")
    for name, kind, default in DEMO_SETTINGS:  # DemoSettings' fields, without importing torch
        p.add_argument(f"--{name.replace('_', '-')}", type=positive_int if kind is int else float, default=None,
                       help=f"(default {default}; with --quick a smaller value)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from funcdiff.tasks.demo import DemoSettings, run_demo

    overrides = {f.name: getattr(args, f.name) for f in fields(DemoSettings) if getattr(args, f.name) is not None}
    if not 0.0 < overrides.get("obs_fraction", 0.5) <= 1.0:
        raise UserError(f"--obs-fraction must be in (0, 1], got {overrides['obs_fraction']}")
    settings = DemoSettings.quick(**overrides) if args.quick else DemoSettings(**overrides)
    summary = run_demo(settings, args.out_dir, progress=not args.no_progress)
    print(json.dumps(summary, indent=1))
    print(f"outputs in {args.out_dir}/: samples_*.nc, samples.png, posterior.nc, reconstruction.png, run/")
    return 0
