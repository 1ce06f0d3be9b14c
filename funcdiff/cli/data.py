"""``funcdiff data``: generate PDE datasets into HDF5 (resumable), inspect data files, list problems."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` with sub-commands ``generate``, ``info`` and ``list``."""
    parser = subparsers.add_parser("data", help="generate, inspect and list datasets")
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    gen = commands.add_parser("generate", help="generate a dataset into our HDF5 layout (resumable)")
    gen.add_argument("pde", help="problem name (see `funcdiff data list`)")
    gen.add_argument("--num-samples", type=int, required=True)
    gen.add_argument("--resolution", type=int, required=True, help="grid points per spatial axis")
    gen.add_argument("--out", type=Path, default=None, help="output .h5 (default datasets/<pde>_<res>.h5)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--batch-size", type=int, default=32)
    gen.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    gen.add_argument("--set", dest="overrides", action="append", default=[], metavar="PARAM=VALUE",
                     help="override a problem parameter (value parsed as YAML); repeatable")
    gen.add_argument("--overwrite", action="store_true", help="discard an existing file or partial run")
    gen.add_argument("--no-progress", action="store_true")
    gen.set_defaults(func=run_generate)
    info = commands.add_parser("info", help="print what a data file holds")
    info.add_argument("file", type=Path)
    info.set_defaults(func=run_info)
    lst = commands.add_parser("list", help="list the problems `generate` knows, with default parameters")
    lst.set_defaults(func=run_list)


def parse_overrides(items: list[str]) -> dict:
    """``["nu=1e-3", "steps=10"]`` -> ``{"nu": 0.001, "steps": 10}`` (values parsed with yaml.safe_load)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects PARAM=VALUE, got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    return params


def run_generate(args: argparse.Namespace) -> int:
    from funcdiff.data.hdf5 import generate_to_hdf5, resolve_problem

    problem = resolve_problem(args.pde)
    out = args.out or Path("datasets") / f"{args.pde}_{args.resolution}.h5"
    result = generate_to_hdf5(problem, out, num_samples=args.num_samples, resolution=args.resolution,
                              seed=args.seed, batch_size=args.batch_size, params=parse_overrides(args.overrides),
                              device=args.device, dtype=DTYPES[args.dtype], overwrite=args.overwrite,
                              progress=not args.no_progress)
    print(f"wrote {result}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from funcdiff.data.readers import describe_file

    print(describe_file(args.file))
    return 0


def run_list(args: argparse.Namespace) -> int:
    from funcdiff.data.hdf5 import available_problems

    for name, problem in available_problems().items():
        print(f"{name:28s} {problem.kind:10s} fields={list(problem.fields)} defaults={problem.defaults}")
        print(f"{'':28s} {problem.description}")
    return 0
