"""``funcdiff observe``: draw random sensors of a task's observed channels from a ground-truth sample.

Example::

    funcdiff observe --truth datasets/darcy_64.h5 --index 3 --task darcy-inverse --fraction 0.03 \\
        --noise-std 0.001 --seed 0 --out obs.nc
    funcdiff solve --checkpoint runs/darcy-64 --task darcy-inverse --observations obs.nc --out posterior.nc

The file has the layout of :mod:`funcdiff.guidance.io`, the same layout in which ``solve`` and the demo write
their sensors, so a posterior file is a valid ``--observations`` input too.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``observe`` verb."""
    from funcdiff.cli import non_negative_float, positive_int
    from funcdiff.cli.choices import TASKS

    p = subparsers.add_parser("observe", help="draw sensors from a ground-truth sample into an observation file",
                              description=__doc__.splitlines()[0])
    p.add_argument("--truth", required=True, type=Path, help="ground truth: our HDF5 layout or netCDF")
    p.add_argument("--index", type=int, default=0, help="sample index in --truth")
    p.add_argument("--task", required=True, metavar="TASK", help=f"one of {', '.join(TASKS)}")
    how_many = p.add_mutually_exclusive_group(required=True)
    how_many.add_argument("--fraction", type=float, help="observe this fraction of the grid's points, in (0, 1]")
    how_many.add_argument("--count", type=positive_int, help="observe this many grid points")
    p.add_argument("--noise-std", type=non_negative_float, default=0.0,
                   help="Gaussian measurement noise added to the values (physical units)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sensor positions and the noise")
    p.add_argument("--out", required=True, type=Path, help="output netCDF file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from funcdiff.cli import user_errors
    from funcdiff.cli.solve import task_name
    from funcdiff.guidance import save_observation
    from funcdiff.tasks import get_task, load_truth, make_observation

    with user_errors():
        task = get_task(task_name(args.task))
        truth = load_truth(args.truth, task.channels, args.index)
    observation = make_observation(task, truth, fraction=args.fraction, count=args.count, seed=args.seed,
                                   noise_std=args.noise_std)
    path = save_observation(observation, args.out)
    print(f"wrote {observation.num_sensors} sensors of {list(task.observed)} ({task.grid} grid, "
          f"noise std {args.noise_std:g}) from sample {args.index} of {args.truth} to {path}")
    return 0
