"""``funcdiff data``: generate PDE datasets into HDF5 (resumable), inspect data files, list problems, and
convert ERA5 (CDS netCDF or WeatherBench 2 zarr) into a regridded zarr store with statistics (``era5``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from funcdiff.cli.choices import DATA_DTYPES  # names only: building the parser imports no torch
from funcdiff.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` with sub-commands ``generate``, ``info``, ``list`` and ``era5``."""
    from funcdiff.cli import positive_int

    parser = subparsers.add_parser("data", help="generate, inspect and list datasets")
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    gen = commands.add_parser("generate", help="generate a dataset into our HDF5 layout (resumable)")
    gen.add_argument("pde", help="problem name (see `funcdiff data list`; - and _ are the same)")
    gen.add_argument("--num-samples", type=positive_int, required=True)
    gen.add_argument("--resolution", type=positive_int, required=True, help="grid points per spatial axis")
    gen.add_argument("--out", type=Path, default=None, help="output .h5 (default datasets/<pde>_<res>.h5)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--batch-size", type=positive_int, default=32)
    gen.add_argument("--dtype", choices=DATA_DTYPES, default="float32")
    gen.add_argument("--set", dest="overrides", action="append", default=[], metavar="PARAM=VALUE",
                     help="override a problem parameter (value parsed as YAML); repeatable")
    gen.add_argument("--overwrite", action="store_true", help="discard an existing file or partial run")
    gen.add_argument("--no-progress", action="store_true")
    gen.set_defaults(func=run_generate)
    info = commands.add_parser("info", help="print what a data file holds, or a checkpoint's training data")
    info.add_argument("file", type=Path, nargs="?", help="data file (HDF5, netCDF, zarr store)")
    info.add_argument("--checkpoint", type=Path, default=None,
                      help="checkpoint file or run directory: print its training data and held-out indices")
    info.set_defaults(func=run_info)
    lst = commands.add_parser("list", help="list the problems `generate` knows, with default parameters")
    lst.set_defaults(func=run_list)
    _register_era5(commands)
    _register_shallow_water(commands)


def parse_overrides(items: list[str]) -> dict:
    """``["nu=1e-3", "steps=10"]`` -> ``{"nu": 0.001, "steps": 10}`` (values parsed with yaml.safe_load)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects PARAM=VALUE, got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    return params


def problem_name(name: str) -> str:
    """The registered name of a data problem, accepting ``-`` for ``_`` (``navier-stokes`` -> ``navier_stokes``);
    UserError listing every valid name (``synthetic`` included) otherwise."""
    from funcdiff.data.hdf5 import available_problems

    names = available_problems()
    for candidate in (name, name.strip().lower().replace("-", "_")):
        if candidate in names:
            return candidate
    raise UserError(f"unknown problem {name!r}; valid: {', '.join(sorted(names))}")


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from funcdiff.cli import user_errors
    from funcdiff.data.hdf5 import generate_to_hdf5, resolve_problem

    name = problem_name(args.pde)
    out = args.out or Path("datasets") / f"{name}_{args.resolution}.h5"
    existed = out.exists() and not args.overwrite
    with user_errors():  # bad --set values and a file made with other arguments are the user's
        result = generate_to_hdf5(resolve_problem(name), out, num_samples=args.num_samples,
                                  resolution=args.resolution, seed=args.seed, batch_size=args.batch_size,
                                  params=parse_overrides(args.overrides), device=args.device,
                                  dtype=getattr(torch, args.dtype), overwrite=args.overwrite, progress=not args.no_progress)
    if existed and result == out:
        print(f"{out} is already complete with these arguments: nothing to do (--overwrite regenerates it)")
    else:
        print(f"wrote {result}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from funcdiff.errors import UserError

    if (args.file is None) == (args.checkpoint is None):
        raise UserError("give a data file or --checkpoint RUN (one of them)")
    if args.checkpoint is not None:
        print(describe_checkpoint_data(args.checkpoint))
        return 0
    from funcdiff.data.readers import describe_file

    print(describe_file(args.file))
    return 0


def describe_checkpoint_data(path: Path) -> str:
    """Lines: the run, its step, channels and grid, the training data file and the held-out indices."""
    from funcdiff.io.checkpoint import read_checkpoint, read_meta, resolve_checkpoint, training_split

    resolved = resolve_checkpoint(path)
    meta = read_meta(read_checkpoint(resolved), resolved)
    data = meta.config.get("data", {})
    lines = [f"checkpoint {resolved}: run {meta.task!r} at step {meta.step}",
             f"channels {list(meta.channel_names)} on a {list(meta.resolution)} grid",
             f"training data: {data.get('path') or data.get('source', '?')}"]
    split = training_split(meta)
    if split is None:
        lines.append("held out: not recorded (checkpoint made before funcdiff 0.2 recorded its split)")
    else:
        unit = {"sample": "samples", "trajectory": "trajectories"}.get(split["unit"], split["unit"])
        lines.append(f"held out for validation ({unit} of {split['count']}): {split['held_out']}")
    return "\n".join(lines)


def run_list(args: argparse.Namespace) -> int:
    from funcdiff.cli.choices import DATA_PROBLEMS  # the registry's names and defaults, without importing torch

    for name, (kind, fields, defaults, description) in DATA_PROBLEMS.items():
        print(f"{name:28s} {kind:10s} fields={list(fields)} defaults={defaults}")
        print(f"{'':28s} {description}")
    return 0


def _register_era5(commands: argparse._SubParsersAction) -> None:
    """``data era5``: ERA5 files or a WeatherBench 2 zarr -> one regridded zarr store with statistics."""
    era5 = commands.add_parser("era5", help="convert ERA5 (CDS netCDF or WeatherBench 2 zarr) to a zarr store")
    era5.add_argument("--source", nargs="+", required=True, metavar="FILES_OR_ZARR",
                      help="netCDF files, zarr stores or quoted glob patterns (several are combined)")
    era5.add_argument("--variables", required=True, help="channels, e.g. z500,t850,t2m,u10,v10")
    era5.add_argument("--start", default=None, help="first time (e.g. 1979-01-01; default: the first held)")
    era5.add_argument("--end", default=None, help="last time, inclusive (2017-12-31 keeps that whole day)")
    era5.add_argument("--step", default="6h", help="time step; every such time must be in the data (default 6h)")
    era5.add_argument("--grid", default="native",
                      help="target spacing, e.g. 5.625deg, 2.8125deg, 1.5deg (conservative), or native")
    era5.add_argument("--segment", default="365D",
                      help="duration of the trajectories training and scoring cut the series into (e.g. 365D for "
                           "years, 10D); stored as an attribute (default 365D)")
    era5.add_argument("--out", type=Path, default=Path("datasets/era5.zarr"))
    era5.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    era5.set_defaults(func=run_era5)


def run_era5(args: argparse.Namespace) -> int:
    from funcdiff.data.era5 import parse_grid, read_era5, segment_frames, write_era5_zarr

    res = parse_grid(args.grid)
    state = read_era5(args.source, args.variables, start=args.start, end=args.end, step=args.step)
    attrs = {"source": [str(s) for s in args.source], "grid": args.grid, "step": args.step,
             "regridding": "first-order conservative (area-weighted)" if res else "none", "segment": args.segment}
    segment_frames(state.indexes["time"], args.segment)  # a bad --segment fails before the data are read
    written = write_era5_zarr(state, args.out, res=res, overwrite=args.overwrite, attrs=attrs)
    print(f"wrote {args.out}: {state.sizes['time']} times, channels {', '.join(written['state_stats'])}, "
          f"grid {args.grid}; statistics in its attributes")
    return 0


def _register_shallow_water(commands: argparse._SubParsersAction) -> None:
    """``data shallow-water``: ERA5-like files (CDS netCDF and WB2 zarr) from the shallow-water equations."""
    from funcdiff.cli import positive_int

    swe = commands.add_parser("shallow-water", help="write ERA5-like files (z500, u500, v500) from the shallow-water "
                                                    "equations on the sphere (needs the sphere extra)")
    swe.add_argument("--out", type=Path, default=Path("datasets/swe"), help="folder for cds/*.nc and wb2.zarr")
    swe.add_argument("--layout", choices=("cds", "wb2", "both"), default="both")
    swe.add_argument("--start", default="2000-01-01", help="time of the first frame")
    swe.add_argument("--days", type=float, default=30.0, help="days after the first frame")
    swe.add_argument("--step-hours", type=float, default=6.0, help="hours between frames (default 6)")
    swe.add_argument("--nlat", type=positive_int, default=65,
                     help="rows with poles (odd: 33 = 5.625 deg, 65 = 2.8125 deg, 121 = 1.5 deg); 2 (nlat - 1) columns")
    swe.add_argument("--spinup-days", type=float, default=10.0, help="days simulated before the first frame")
    swe.add_argument("--mach", type=float, default=0.5, help="amplitude of the random perturbation of the jet")
    swe.add_argument("--seed", type=int, default=0)
    swe.add_argument("--overwrite", action="store_true")
    swe.add_argument("--no-progress", action="store_true")
    swe.set_defaults(func=run_shallow_water)


def run_shallow_water(args: argparse.Namespace) -> int:
    from funcdiff.cli import user_errors
    from funcdiff.tasks.era5_synthetic import CHANNELS, write_shallow_water_era5
    from funcdiff.pde.shallow_water import ShallowWaterRun

    with user_errors():
        run = ShallowWaterRun(nlat=args.nlat, step_hours=args.step_hours, spinup_days=args.spinup_days,
                              seed=args.seed, mach=args.mach)
    written = write_shallow_water_era5(args.out, run, start=args.start, days=args.days, layout=args.layout,
                                       overwrite=args.overwrite, progress=not args.no_progress)
    for layout, paths in written.items():
        shown = paths if isinstance(paths, Path) else f"{len(paths)} file(s) under {paths[0].parent}"
        print(f"wrote {layout}: {shown}")
    source = written.get("wb2") or f"{args.out / 'cds'}/*.nc"
    print(f"next: funcdiff data era5 --source {source} --variables {','.join(CHANNELS)} --grid 5.625deg "
          f"--out datasets/swe_5.625deg.zarr")
    return 0
