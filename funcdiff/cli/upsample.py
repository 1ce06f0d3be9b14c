"""``funcdiff upsample``: refine trajectories 2x, 4x, ... in space and time with a wavelet super-resolution model."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``upsample`` verb."""
    from funcdiff.cli import positive_int
    from funcdiff.cli.choices import DETERMINISTIC_SOLVERS

    parser = subparsers.add_parser(
        "upsample", help="zero-shot super-resolution of trajectories (wavelet details given the coarse grid)",
        description="Refine trajectories by a power of 2 along every axis the model transforms (time and space, or "
                    "space only) with a `forecast.kind: super_resolution` checkpoint, applied once per factor 2 "
                    "beyond its training grid. Input: a forecast netCDF of `funcdiff forecast` (every initial "
                    "state and member) or a trajectory file (HDF5/netCDF, --index). Output: netCDF with time and "
                    "space coordinates.")
    parser.add_argument("--checkpoint", required=True, help="super-resolution checkpoint file or run directory")
    parser.add_argument("--input", required=True, help="forecast netCDF (funcdiff forecast) or trajectory file")
    parser.add_argument("--factor", type=positive_int, default=2, help="refinement per axis: 2, 4, 8, ...")
    parser.add_argument("--index", type=int, action="append", default=None, metavar="I",
                        help="trajectory file: trajectories to refine (repeatable; default all)")
    parser.add_argument("--start-frame", type=int, default=0, help="trajectory file: first frame")
    parser.add_argument("--frames", type=positive_int, default=None,
                        help="trajectory file: frames to refine (default: all from --start-frame)")
    parser.add_argument("--steps", type=positive_int, default=16, help="solver steps per level (Heun: 2·steps-1 NFE)")
    parser.add_argument("--solver", default="heun", choices=DETERMINISTIC_SOLVERS)
    parser.add_argument("--batch-size", type=positive_int, default=16, help="fields per network call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", required=True, help="output netCDF file")
    parser.add_argument("--plot", default=None, help="PNG of the first trajectory (default: <out>.png)")
    parser.add_argument("--no-plot", action="store_true")
    parser.set_defaults(func=run_upsample)


def run_upsample(args: argparse.Namespace) -> int:
    from funcdiff.cli import user_errors
    from funcdiff.tasks.super_resolution import (load_super_resolver, plot_super_resolution, read_coarse,
                                                 super_resolve, upsample_time_coordinate, write_super_resolution)

    sr = load_super_resolver(args.checkpoint, args.device)
    with user_errors():
        coarse, times, source = read_coarse(args.input, sr.channel_names, args.index, args.start_frame, args.frames)
    fine = super_resolve(sr, coarse.to(args.device), args.factor, steps=args.steps, solver=args.solver,
                         seed=args.seed, batch_size=args.batch_size).cpu()
    time_factor = args.factor if sr.coder.time_axis else 1
    fine_times = upsample_time_coordinate(times, time_factor)
    out = write_super_resolution(fine, fine_times, sr.channel_names, args.out,
                                 attrs={"checkpoint": str(args.checkpoint), "source_file": str(args.input),
                                        "factor": args.factor, "time_factor": time_factor, "steps": args.steps,
                                        "solver": args.solver, "seed": args.seed, "samples": source})
    print(f"wrote {out}: {tuple(coarse.shape)} -> {tuple(fine.shape)} (samples, channels, time, space)")
    if not args.no_plot:
        png = plot_super_resolution(coarse[0], fine[0], args.plot or Path(args.out).with_suffix(".png"),
                                    channel_name=sr.channel_names[0], coarse_times=times, fine_times=fine_times)
        print(f"wrote {png}")
    return 0
