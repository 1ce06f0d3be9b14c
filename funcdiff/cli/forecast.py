"""``funcdiff forecast``: an ensemble rollout of a trained forecaster, streamed to netCDF, resumable, with sensors."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``forecast`` verb."""
    from funcdiff.cli import non_negative_float, positive_int
    from funcdiff.cli.choices import DETERMINISTIC_SOLVERS

    parser = subparsers.add_parser(
        "forecast", help="ensemble forecast of a trajectory with a trained forecaster (netCDF, resumable)",
        description="Roll a trained forecaster (autoregressive or rolling diffusion) forward from the frames of a "
                    "trajectory file. Rerun the same command after a kill to continue where it stopped.")
    parser.add_argument("--checkpoint", required=True, help="forecaster checkpoint file or run directory")
    parser.add_argument("--initial", required=True, help="trajectory file (funcdiff HDF5, or an ERA5 store of "
                        "`funcdiff data era5`) holding the initial frames")
    parser.add_argument("--index", type=int, action="append", default=None, metavar="I",
                        help="trajectory to start from (repeatable: one initial state each; default 0)")
    parser.add_argument("--start-frame", type=int, default=None,
                        help="frame of the initial state (lead 0; default: the first with enough history)")
    parser.add_argument("--lead-steps", type=positive_int, required=True, help="frames to forecast")
    parser.add_argument("--members", type=positive_int, default=8, help="ensemble members")
    parser.add_argument("--observations", default=None, help="timed sensors (netCDF with an obs_time coordinate)")
    parser.add_argument("--sensor-fraction", type=float, default=None,
                        help="twin experiment: observe this fraction of the grid in the --initial file's truth")
    parser.add_argument("--sensor-every", type=positive_int, default=None,
                        help="with --sensor-fraction: every N leads (default 4)")
    parser.add_argument("--sensor-noise", type=non_negative_float, default=0.0, help="sensor noise std (field units)")
    parser.add_argument("--steps-per-frame", type=positive_int, default=None,
                        help="solver steps per emitted frame (default: the config's forecast.steps_per_frame)")
    parser.add_argument("--solver", default="heun", choices=DETERMINISTIC_SOLVERS)
    parser.add_argument("--batch-size", type=positive_int, default=None, help="members per chunk (bounds memory)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="replay the network's calls from CUDA graphs (a CUDA --device; the same forecast, less "
                             "host overhead per call)")
    parser.add_argument("--out", default=None, help="output file: netCDF (.nc) or a zarr store (.zarr; WeatherBench 2 names on the sphere, one "
                        "chunk per initial state and lead); required unless --out-dir (batch mode)")
    parser.add_argument("--plot", default=None, help="PNG of the first initial state (default: <out>.png)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--channel", action="append", default=None, metavar="NAME",
                        help="channel to draw in the PNG (repeatable; default: every channel)")
    parser.add_argument("--no-progress", action="store_true")
    from funcdiff.cli.batch import add_forecast_batch_arguments

    add_forecast_batch_arguments(parser)
    parser.set_defaults(func=run_forecast)


def run_forecast(args: argparse.Namespace) -> int:
    from funcdiff.cli import user_errors
    from funcdiff.errors import UserError
    from funcdiff.tasks.forecast import Forecast
    from funcdiff.tasks.case_store import case_frames, open_trajectories
    from funcdiff.cli.batch import batch_requested

    check_sensor_flags(args)
    if batch_requested(args):
        if args.channel or args.plot:
            raise UserError("a batch of forecasts (--indices/--init-times/--out-dir) writes no PNG: drop "
                            "--channel/--plot")
        return run_forecast_batch(args)
    if args.out is None:
        raise UserError("--out is required (or --indices/--init-times with --out-dir for a batch of start states)")
    fc = load_graphed_forecaster(args)
    f = fc.forecast
    indices = args.index or [0]
    with user_errors():  # reading the user's files: a ValueError there is a problem of the input
        traj, times = open_trajectories(args.initial, fc.channel_names)  # metadata; each start reads its frames
        starts = [case_frames(traj, times, args.initial, i, args.start_frame, f.history, f.frame_step)
                  for i in indices]
    check_plot_flags(args, fc.channel_names)
    warn_training_data(fc, args.initial, indices)
    observations = None
    if args.observations:
        from funcdiff.guidance.timed import load_timed_observations

        observations = load_timed_observations(args.observations, grid=fc.grid).for_starts(
            [(i, s[2]) for i, s in zip(indices, starts)], args.observations)
    if args.sensor_fraction is not None:
        observations = twin_sensors(args, fc, indices, starts)
    import torch

    run = Forecast(fc, torch.stack([s[0] for s in starts]), args.lead_steps, members=args.members, seed=args.seed,
                   steps_per_frame=args.steps_per_frame, solver=args.solver, observations=observations,
                   batch_size=args.batch_size, init_index=indices, init_frame=[s[2] for s in starts],
                   init_time=[s[3] for s in starts],
                   attrs={"checkpoint": str(args.checkpoint), "source_file": str(args.initial), "seed": args.seed,
                          "kind": f.kind, "config": {"forecast": vars(f), "members": args.members},
                          "training_split": fc.training_split})
    out = run.save(args.out, progress=not args.no_progress)
    print(f"wrote {out} ({len(starts)} initial state(s) x {args.members} members x {args.lead_steps} leads, "
          f"{run.nfe_per_frame:g} network evaluations per frame)")
    if not args.no_plot:
        truth = starts[0][1]
        png = run.plot(args.plot or Path(args.out).with_suffix(".png"), truth=truth if truth.shape[1] else None,
                       channels=args.channel)
        print(f"wrote {png}")
    return 0


def load_graphed_forecaster(args: argparse.Namespace):
    """The ``--checkpoint``'s forecaster on ``--device``, with CUDA graphs under ``--cuda-graphs`` (UserError, before
    loading anything, unless the device is a CUDA one)."""
    from funcdiff.cli import check_cuda_graphs
    from funcdiff.tasks.forecast import load_forecaster, with_cuda_graphs

    check_cuda_graphs(args.cuda_graphs, args.device)
    fc = load_forecaster(args.checkpoint, args.device)
    return with_cuda_graphs(fc) if args.cuda_graphs else fc


def check_plot_flags(args: argparse.Namespace, channel_names) -> None:
    """--channel names channels of the model and needs a picture: UserError before any work otherwise."""
    from funcdiff.errors import UserError

    if not args.channel:
        return
    if args.no_plot:
        raise UserError("--channel chooses what the PNG draws: drop --no-plot or --channel")
    unknown = [c for c in args.channel if c not in channel_names]
    if unknown:
        raise UserError(f"--channel {unknown[0]}: the forecaster's channels are {list(channel_names)}")


def warn_training_data(fc, initial, indices) -> None:
    """One warning line when an initial state is a trajectory the forecaster was trained on."""
    import sys

    from funcdiff.io.checkpoint import training_data_warning

    line = training_data_warning(fc.training_split, initial, indices, "trajectory")
    if line:
        print(f"funcdiff forecast: warning: {line}", file=sys.stderr)


def check_sensor_flags(args: argparse.Namespace) -> None:
    """The sensor flags that go together: UserError for a combination that would be ignored or ambiguous."""
    from funcdiff.errors import UserError

    if args.observations and args.sensor_fraction is not None:
        raise UserError("give either --observations or --sensor-fraction, not both")
    if args.sensor_fraction is None:
        for flag, value, default in (("--sensor-every", args.sensor_every, None), ("--sensor-noise",
                                                                                 args.sensor_noise, 0.0)):
            if value != default:
                raise UserError(f"{flag} applies to twin-experiment sensors: give --sensor-fraction F too")
    elif not 0 < args.sensor_fraction <= 1:
        raise UserError(f"--sensor-fraction must be in (0, 1], got {args.sensor_fraction}")


def twin_sensors(args: argparse.Namespace, fc, indices, starts, seed: int | None = None, quiet: bool = False):
    """Twin-experiment sensors for each initial state, read from its own trajectory in --initial
    (:func:`funcdiff.guidance.timed.twin_observation`), saved next to ``--out`` unless in batch mode (``quiet``).
    Warns in one line when the truth ends before the last lead (sensors stop there)."""
    import sys

    from funcdiff.errors import UserError
    from funcdiff.guidance.timed import SensorNetwork, save_timed_observations, twin_leads, twin_observation

    every = args.sensor_every or 4
    network = SensorNetwork(args.sensor_fraction, every, args.sensor_noise, args.seed if seed is None else seed)
    observations = []
    for index, (initial, truth, frame, _) in zip(indices, starts):
        leads = twin_leads(args.lead_steps, truth.shape[1], every)
        if not leads:
            raise UserError(f"no lead in 1..{min(args.lead_steps, truth.shape[1])} (the forecast's leads with a "
                            f"truth frame in --initial) is a multiple of --sensor-every {every}")
        if truth.shape[1] < args.lead_steps:
            print(f"funcdiff forecast: warning: trajectory {index} of {args.initial} ends {truth.shape[1]} frames "
                  f"after start frame {frame}: its sensors stop at lead {leads[-1]} of {args.lead_steps}",
                  file=sys.stderr)
        observations.append(twin_observation(initial, truth, args.lead_steps, fc.dt, network,
                                             channel_names=fc.channel_names, grid=fc.grid, trajectory=index,
                                             frame=frame))
    if not quiet:
        save_timed_observations(observations, Path(args.out).with_suffix(".sensors.nc"), init_index=indices,
                                init_frame=[s[2] for s in starts], time_units=fc.time_units,
                                units=list(fc.channel_units) or "1")
    return observations


def run_forecast_batch(args: argparse.Namespace) -> int:
    """``funcdiff forecast --indices/--init-times ... --out-dir DIR``: one forecast part per start state."""
    from funcdiff.cli import user_errors
    from funcdiff.cli.batch import finish, signature_of
    from funcdiff.errors import UserError
    from funcdiff.tasks.batch import BatchRun, decode_times, forecast_cases, run_forecast_cases
    from funcdiff.tasks.case_store import open_trajectories, time_units

    if args.out_dir is None:
        raise UserError("--indices/--init-times need --out-dir (the folder of per-case parts)")
    if args.observations:
        raise UserError("--observations hold the sensors of one start state; in batch mode use --sensor-fraction")
    if args.indices is not None and args.index:
        raise UserError("--indices selects the trajectories; --index goes with --init-times")
    fc = load_graphed_forecaster(args)
    f = fc.forecast
    with user_errors():
        traj, times = open_trajectories(args.initial, fc.channel_names)  # metadata; each case reads its frames
        dated = decode_times(times.numpy() if times is not None else None, time_units(traj))  # ERA5: dates
        cases = forecast_cases(traj.shape, dated, str(args.initial),
                               history=f.history, frame_step=f.frame_step, indices=args.indices,
                               init_times=args.init_times, trajectories=args.index, start_frame=args.start_frame)
    def case_sensors(initial, truth, seed, trajectory, frame):
        return twin_sensors(args, fc, [trajectory], [(initial, truth, frame, None)], seed=seed, quiet=True)[0]

    sensors = case_sensors if args.sensor_fraction is not None else None
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
