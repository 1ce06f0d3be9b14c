"""``funcdiff solve``: posterior samples of a forward/inverse PDE task from sparse observations.

Example::

    funcdiff solve --checkpoint runs/darcy --task darcy-inverse --truth datasets/darcy_64.h5 --index 3 \\
        --obs-fraction 0.03 --num-samples 8 --steps 100 --out posterior.nc

writes ``posterior.nc`` (samples, mean, std, truth/error, sensors; misfit and relative L2 as attributes) and
``posterior.png`` (truth, observations with sensor dots, posterior mean, std and error).
"""

from __future__ import annotations

import argparse
import sys
import json
from pathlib import Path

from funcdiff.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``solve`` verb."""
    from funcdiff.cli import non_negative_float, non_negative_int, positive_int
    from funcdiff.cli.choices import METHODS, SOLVERS, TASKS

    p = subparsers.add_parser("solve", help="solve a forward/inverse task from sparse observations")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint file or run directory")
    p.add_argument("--task", required=True, metavar="TASK",
                   help=f"one of {', '.join(TASKS)}, or reconstruct (any model, e.g. on the sphere: every "
                        "channel from stations)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--observations", type=Path,
                        help="sensors: a file from `funcdiff observe`, a posterior.nc of `solve`/`demo`, or a station "
                             "file (latitude/longitude in degrees and one variable per channel along `station`)")
    source.add_argument("--obs-fraction", type=float, help="observe this fraction of the truth's grid at random")
    source.add_argument("--obs-count", type=positive_int, help="observe this many random grid points of the truth")
    p.add_argument("--truth", type=Path, help="ground truth: our HDF5 layout (with --index) or netCDF")
    p.add_argument("--index", type=int, default=0, help="sample index in --truth (an ERA5 store: frame index)")
    p.add_argument("--observed", default=None, metavar="NAMES",
                   help="reconstruct with --obs-fraction/--obs-count: channels the stations read, comma-separated "
                        "(default: every channel of the model)")
    p.add_argument("--obs-noise", type=non_negative_float, default=0.0, help="measurement-noise std (physical units)")
    p.add_argument("--num-samples", type=positive_int, default=8)
    p.add_argument("--steps", type=positive_int, default=100)
    p.add_argument("--solver", default="heun", choices=sorted(SOLVERS))
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="grid points per axis (default: truth/training)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance-strength", type=float, default=1.0)
    p.add_argument("--method", default="dps", choices=METHODS,
                   help="posterior sampler: dps (default), mmps (Tweedie covariance), enkg (derivative-free "
                        "ensemble over --num-samples), dps-physics / mmps-physics / enkg-physics (the numerical solver "
                        "in the loop; mmps-physics: the best inverse solver in the benchmarks)")
    p.add_argument("--cg-iters", type=non_negative_int, default=5,
                   help="mmps, mmps-physics: CG iterations per step (mmps-physics: 10 in the benchmarks)")
    p.add_argument("--pde-guidance", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--pde-weight", type=float, default=1e-3, help="weight of the PDE-residual term")
    p.add_argument("--pde-start-sigma", type=float, default=1.0, help="PDE guidance acts below this noise level")
    p.add_argument("--pushforward", action="store_true",
                   help="forward tasks: push each sample's input channel through the numerical solver")
    p.add_argument("--trust-region", type=non_negative_float, default=None,
                   help="guidance trust region kappa (0 = off; default: 1 for <= 7 steps, else off)")
    p.add_argument("--sigma-max", type=float, default=None, help="largest noise level (default: checkpoint's)")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay every guided step from a CUDA graph (a CUDA --device; methods dps and mmps: the same "
                        "samples, less host overhead per step)")
    p.add_argument("--out", type=Path, default=Path("posterior.nc"))
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    from funcdiff.cli.batch import add_solve_batch_arguments

    add_solve_batch_arguments(p)
    p.set_defaults(func=run)


def task_name(name: str) -> str:
    """A registered task name from either spelling of its problem (``navier_stokes-forward`` ->
    ``navier-stokes-forward``); a task's name uses hyphens."""
    return name.strip().lower().replace("_", "-")


def warn_training_sample(meta, truth: Path, index: int) -> None:
    """One warning line when the truth is a sample the model was trained on (a field model's split by sample)."""
    from funcdiff.io.checkpoint import training_data_warning, training_split

    split = training_split(meta)
    if split is not None and split.get("unit") == "sample":
        line = training_data_warning(split, truth, [index], "sample")
        if line:
            print(f"funcdiff solve: warning: {line}", file=sys.stderr)


def settings_from_args(args: argparse.Namespace):
    """The :class:`~funcdiff.tasks.settings.SolveSettings` of a ``solve`` command line (the one place flags
    become settings; ``--trust-region 0`` = off, absent = auto)."""
    from funcdiff.tasks.settings import SolveSettings

    trust_region = "auto" if args.trust_region is None else (args.trust_region or None)
    return SolveSettings(method=args.method, num_samples=args.num_samples, steps=args.steps, solver=args.solver,
                         resolution=args.resolution, seed=args.seed, guidance_strength=args.guidance_strength,
                         cg_iters=args.cg_iters, pde_guidance=args.pde_guidance, pde_weight=args.pde_weight,
                         pde_start_sigma=args.pde_start_sigma, trust_region=trust_region, sigma_max=args.sigma_max,
                         pushforward=args.pushforward, obs_fraction=args.obs_fraction, obs_count=args.obs_count,
                         obs_noise=args.obs_noise)


def run(args: argparse.Namespace) -> int:
    from funcdiff.cli import check_cuda_graphs, user_errors
    from funcdiff.guidance import load_observation
    from funcdiff.tasks import check_compatible, load_model, load_truth, make_observation, solve
    from funcdiff.tasks.solve import resolve_task
    from funcdiff.cli.batch import batch_requested

    check_cuda_graphs(args.cuda_graphs, args.device)
    if batch_requested(args):
        if task_name(args.task) == "reconstruct":
            raise UserError("batch case lists (--cases) run the registered PDE tasks; run --task reconstruct one "
                            "truth frame at a time (--truth STORE --index I)")
        return run_solve_batch(args, settings_from_args(args))
    with user_errors():
        observation = load_observation(args.observations) if args.observations is not None else None
        if args.observed is not None and (observation is not None or task_name(args.task) != "reconstruct"):
            raise UserError("--observed chooses the channels of twin stations (--obs-fraction/--obs-count) of "
                            "--task reconstruct; a station file names its own variables")
        observed = observation.channel_names if observation is not None else (
            [n.strip() for n in args.observed.split(",") if n.strip()] if args.observed else None)
        model = load_model(args.checkpoint, args.device)
        task = resolve_task(task_name(args.task), model[1], observed, observation and observation.grid)
        check_compatible(task, model[1], args.method)  # before the truth: a wrong model is the first thing to say
        truth = load_truth(args.truth, task.channels, args.index) if args.truth else None
    if truth is not None:
        warn_training_sample(model[1], args.truth, args.index)
    if observation is None:
        if truth is None:
            raise UserError("--obs-fraction/--obs-count draw sensors from the ground truth: pass --truth")
        observation = make_observation(task, truth, fraction=args.obs_fraction, count=args.obs_count,
                                       seed=args.seed, noise_std=args.obs_noise)
    posterior = solve(model, task, observation, settings_from_args(args), truth=truth, batch_size=args.batch_size,
                      device=args.device, progress=not args.no_progress, cuda_graphs=args.cuda_graphs)
    posterior.settings["checkpoint"] = str(args.checkpoint)
    posterior.save(args.out)
    print(f"wrote {args.out}")
    if not args.no_plot:
        print(f"wrote {posterior.plot(args.out.with_suffix('.png'))}")
    print(json.dumps(posterior.metrics(), indent=1))
    return 0


def run_solve_batch(args: argparse.Namespace, settings) -> int:
    """``funcdiff solve --cases FILE ...`` with ``settings`` (SolveSettings): one posterior part per case, this
    rank's share."""
    from funcdiff.cli import user_errors
    from funcdiff.cli.batch import finish, solve_signature
    from funcdiff.errors import UserError
    from funcdiff.tasks import check_compatible, get_task, load_model
    from funcdiff.tasks.batch import BatchRun, index_cases, open_case_samples, solve_cases
    from funcdiff.tasks.samplers import check_graphable

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
        if args.cuda_graphs:  # before the batch's manifest: nothing is written for a run that cannot start
            check_graphable(task, settings)
        fields = open_case_samples(args.cases, task.channels, task.name)  # metadata; each case reads its sample
        cases = index_cases(args.indices, fields.shape[0], str(args.cases))
    run = BatchRun(args.out_dir, cases, solve_signature(args, settings, task.name, model[1].step), "solve")
    print(f"rank {run.rank}/{run.world}: {len(run.mine)} of {len(cases)} cases of {args.cases} -> {args.out_dir}",
          flush=True)
    result = solve_cases(model, task, fields, run, settings, batch_size=args.batch_size, device=args.device,
                         cuda_graphs=args.cuda_graphs, progress=not args.no_progress)
    return finish(result, args.out_dir)
