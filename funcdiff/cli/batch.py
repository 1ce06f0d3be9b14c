"""Batch-mode options shared by ``funcdiff solve --cases`` and ``funcdiff forecast --indices/--init-times``.

Not a verb: :mod:`funcdiff.cli.solve` and :mod:`funcdiff.cli.forecast` add these options and hand over to their
own batch runners (``run_solve_batch`` / ``run_forecast_batch``) when they are given; this module imports neither.
The case list, rank split, part files, restart and merge are :mod:`funcdiff.tasks.batch`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# forecast batches: settings that do not change a case's result (where it goes, how it is shown, the device and
# chunking); solve batches sign with their SolveSettings (solve_signature)
NOT_IN_SIGNATURE = ("func", "debug", "threads", "out", "out_dir", "no_plot", "no_progress", "plot", "channel",
                    "device", "cuda_graphs", "batch_size", "cases", "indices", "init_times", "index", "start_frame",
                    "verb")


def add_solve_batch_arguments(p: argparse.ArgumentParser) -> None:
    """``--cases FILE [--indices SPEC] --out-dir DIR`` on the ``solve`` parser."""
    g = p.add_argument_group("batch (many cases; split over torchrun/srun ranks; rerun to continue)")
    g.add_argument("--cases", type=Path, default=None,
                   help="truth file (netCDF or HDF5) whose samples are the cases; sensors come from "
                        "--obs-fraction/--obs-count per case")
    g.add_argument("--indices", default=None, metavar="START:STOP[:STEP]",
                   help="with --cases or forecast: the samples/trajectories to run (default: all); e.g. 0:1000")
    g.add_argument("--out-dir", type=Path, default=None,
                   help="batch output folder: parts/case_<i>.nc per case, then `funcdiff merge DIR`")


def add_forecast_batch_arguments(p: argparse.ArgumentParser) -> None:
    """``--indices SPEC | --init-times START/END/STEP`` and ``--out-dir DIR`` on the ``forecast`` parser."""
    g = p.add_argument_group("batch (many start states; split over torchrun/srun ranks; rerun to continue)")
    g.add_argument("--indices", default=None, metavar="START:STOP[:STEP]",
                   help="one case per trajectory of --initial, started at --start-frame; e.g. 0:100")
    g.add_argument("--init-times", default=None, metavar="START/END[/STEP]",
                   help="one case per start time in the range (END included; numbers in the file's time units, "
                        "or ISO dates with a step like 6h for a datetime coordinate) in each --index trajectory")
    g.add_argument("--out-dir", type=Path, default=None,
                   help="batch output folder: parts/case_<i>_<frame>.nc per case, then `funcdiff merge DIR`")


def signature_of(args: argparse.Namespace, kind: str, **extra) -> dict:
    """The settings that determine every case's result: the command's arguments minus :data:`NOT_IN_SIGNATURE`."""
    items = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in NOT_IN_SIGNATURE}
    return {"kind": kind, **items, **extra}


def finish(result, out_dir: Path) -> int:
    """Print the rank's summary and the next step; return the exit status."""
    print(result.summary())
    if result.exit_status == 0 and result.rank == 0 and not result.stopped_by:
        print(f"when every rank is done: funcdiff merge {out_dir}")
    return result.exit_status


def solve_signature(args: argparse.Namespace, settings, task: str, checkpoint_step) -> dict:
    """The signature of a ``solve --cases`` run: the model, the task and the :class:`SolveSettings` (nothing that
    leaves results unchanged). A folder started before this signature existed (all arguments minus
    :data:`NOT_IN_SIGNATURE`) is continued under its old signature when the command line gives that one."""
    signature = {"kind": "solve", "task": task, "checkpoint": str(args.checkpoint),
                 "checkpoint_step": checkpoint_step, "settings": settings.signature()}
    try:
        old = json.loads((Path(args.out_dir) / "cases.json").read_text())["signature"]
    except (OSError, ValueError, KeyError, TypeError):
        return signature
    legacy = signature_of(args, "solve", checkpoint_step=checkpoint_step)
    same = json.dumps(old, sort_keys=True, default=str) == json.dumps(legacy, sort_keys=True, default=str)
    return legacy if same else signature


def batch_requested(args: argparse.Namespace) -> bool:
    """Whether a solve/forecast command line asks for batch mode."""
    return any(getattr(args, k, None) is not None for k in ("cases", "init_times", "out_dir")) or (
        getattr(args, "indices", None) is not None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("funcdiff.cli.batch is not a verb; use `funcdiff solve --cases` or `funcdiff forecast --indices`")
