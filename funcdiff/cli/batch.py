"""Batch-mode options shared by ``funcdiff solve --cases`` and ``funcdiff forecast --indices/--init-times``.

Not a verb: :mod:`funcdiff.cli.solve` and :mod:`funcdiff.cli.forecast` add these options and hand over to
:func:`run_solve_batch` / :func:`run_forecast_batch` when they are given (the single-case paths are unchanged).
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
                    "device", "batch_size", "cases", "indices", "init_times", "index", "start_frame", "verb")


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


def run_solve_batch(args: argparse.Namespace, settings) -> int:
    """``funcdiff solve --cases FILE ...`` with ``settings`` (SolveSettings): one posterior part per case, this
    rank's share."""
    from funcdiff.cli import user_errors
    from funcdiff.cli.solve import task_name
    from funcdiff.errors import UserError
    from funcdiff.tasks import check_compatible, get_task, load_model
    from funcdiff.tasks.batch import BatchRun, index_cases, read_case_fields, solve_cases

    if args.cases is None:
        raise UserError("--indices/--out-dir are batch options: give the case file with --cases")
    if args.out_dir is None:
        raise UserError("--cases needs --out-dir (the folder of per-case parts)")
    if args.observations is not None or args.truth is not None:
        raise UserError("with --cases the truth of each case is its sample in the case file and its sensors come "
                        "from --obs-fraction/--obs-count; drop --observations/--truth")
    with user_errors():
        task = get_task(task_name(args.task))
        model = load_model(args.checkpoint, args.device)
        check_compatible(task, model[1], settings.method)
        fields = read_case_fields(args.cases, task.channels, task.name)
        cases = index_cases(args.indices, fields.shape[0], str(args.cases))
    run = BatchRun(args.out_dir, cases, solve_signature(args, settings, task.name, model[1].step), "solve")
    print(f"rank {run.rank}/{run.world}: {len(run.mine)} of {len(cases)} cases of {args.cases} -> {args.out_dir}",
          flush=True)
    result = solve_cases(model, task, fields, run, settings, batch_size=args.batch_size, device=args.device,
                         progress=not args.no_progress)
    return finish(result, args.out_dir)


def run_forecast_batch(args: argparse.Namespace) -> int:
    """``funcdiff forecast --indices/--init-times ... --out-dir DIR``: one forecast part per start state."""
    from funcdiff.cli import user_errors
    from funcdiff.errors import UserError
    from funcdiff.tasks.batch import BatchRun, forecast_cases, run_forecast_cases
    from funcdiff.tasks.forecast import load_forecaster
    from funcdiff.tasks.forecast_io import read_trajectories

    if args.out_dir is None:
        raise UserError("--indices/--init-times need --out-dir (the folder of per-case parts)")
    if args.observations:
        raise UserError("--observations hold the sensors of one start state; in batch mode use --sensor-fraction")
    if args.indices is not None and args.index:
        raise UserError("--indices selects the trajectories; --index goes with --init-times")
    fc = load_forecaster(args.checkpoint, args.device)
    f = fc.forecast
    with user_errors():
        traj, times = read_trajectories(args.initial, fc.channel_names)
        cases = forecast_cases(traj.shape, times.numpy() if times is not None else None, str(args.initial),
                               history=f.history, frame_step=f.frame_step, indices=args.indices,
                               init_times=args.init_times, trajectories=args.index, start_frame=args.start_frame)
    sensors = None
    if args.sensor_fraction is not None:
        from funcdiff.cli.forecast import twin_sensors

        def sensors(initial, truth, seed, trajectory, frame):
            return twin_sensors(args, fc, [trajectory], [(initial, truth, frame, None)], seed=seed, quiet=True)[0]
    run = BatchRun(args.out_dir, cases, signature_of(args, "forecast", forecaster=fc.name), "forecast")
    print(f"rank {run.rank}/{run.world}: {len(run.mine)} of {len(cases)} start states of {args.initial} -> "
          f"{args.out_dir}", flush=True)
    result = run_forecast_cases(fc, traj, times, str(args.initial), run, lead_steps=args.lead_steps,
                                members=args.members, seed=args.seed, sensors=sensors,
                                steps_per_frame=args.steps_per_frame, solver=args.solver, batch_size=args.batch_size,
                                attrs={"checkpoint": str(args.checkpoint), "source_file": str(args.initial),
                                       "seed": args.seed, "kind": f.kind,
                                       "config": {"forecast": vars(f), "members": args.members}},
                                progress=not args.no_progress)
    return finish(result, args.out_dir)


def batch_requested(args: argparse.Namespace) -> bool:
    """Whether a solve/forecast command line asks for batch mode."""
    return any(getattr(args, k, None) is not None for k in ("cases", "init_times", "out_dir")) or (
        getattr(args, "indices", None) is not None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("funcdiff.cli.batch is not a verb; use `funcdiff solve --cases` or `funcdiff forecast --indices`")
