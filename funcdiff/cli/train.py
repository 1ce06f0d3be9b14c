"""``funcdiff train``: train a denoiser from a YAML run config (single process or under torchrun)."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

import yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` verb."""
    parser = subparsers.add_parser(
        "train", help="train a diffusion denoiser from a run config",
        description="Train from configs/<name>.yaml. "
                    "Multi-GPU: torchrun --no-python --nproc_per_node N funcdiff train ...")
    parser.add_argument("--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (parsed as YAML), e.g. train.lr=1e-3; repeatable")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    parser.add_argument("--seed", type=int, default=None, help="shortcut for --set train.seed=S")
    parser.add_argument("--out-dir", default=None, help="shortcut for --set train.out_dir=DIR")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="shortcut for --set train.device=...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_train)


def resolve_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` items followed by the ``--seed``/``--out-dir``/``--device`` shortcuts (which win)."""
    items = list(args.overrides)
    if args.seed is not None:
        items.append(f"train.seed={args.seed}")
    if args.out_dir is not None:
        items.append(f"train.out_dir={args.out_dir}")
    if args.device is not None:
        items.append(f"train.device={args.device}")
    return items


def _names_key(args: argparse.Namespace, section: str, key: str) -> bool:
    """Whether the config file or a ``--set`` names ``section.key`` (as opposed to the default applying)."""
    raw = yaml.safe_load(Path(args.config).read_text()) or {}
    in_file = isinstance(raw, dict) and isinstance(raw.get(section), dict) and key in raw[section]
    return in_file or any(item.split("=", 1)[0].strip() == f"{section}.{key}" for item in args.overrides)


def run_train(args: argparse.Namespace) -> int:
    """Load the config, build the data and the Trainer (input errors: one line, exit 2), then train.

    The phases of :func:`funcdiff.training.train`, with input handling (config, data file, NaNs, a batch
    larger than the data, ``--resume`` from a mismatched run) separated from the training loop, whose
    errors are bugs and keep their tracebacks.
    """
    from funcdiff.cli import user_errors
    from funcdiff.config import load_config
    from funcdiff.training import Trainer
    from funcdiff.training.signals import StopSignal
    from funcdiff.training.distributed import (barrier, dist_info_from_env, init_distributed, select_device,
                                               shutdown_distributed)

    with user_errors():
        config = load_config(args.config, resolve_overrides(args))
    if config.data.source == "file" and _names_key(args, "data", "resolution"):
        print(f"funcdiff train: warning: data.resolution is ignored for file data: the grid is that of "
              f"{config.data.path}", file=sys.stderr)
    info = dist_info_from_env()
    device = select_device(config.train.device, info)
    init_distributed(device, info)
    trainer = None
    try:
        with user_errors():
            trainer = Trainer.from_config(config, device=device, dist_info=info, progress=not args.no_progress)
            resumed_from = trainer.resume() if args.resume else None
        if trainer.dist.is_main and resumed_from is not None:
            print(resumed_line(trainer, resumed_from), flush=True)
        if trainer.dist.is_main and not args.resume:
            print(held_out_line(trainer.data_source.get("split")), flush=True)
        with StopSignal((signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)) as stop:
            trainer.stop = stop
            trainer.fit()
        barrier(info)  # no rank tears the group down (rank 0 hosts its store) while another is still in it
    finally:
        if trainer is not None:  # free the DDP wrapper while its process group exists: freed after it, a rank hung
            trainer.network = trainer.model  # at exit (seen under torchrun with gloo)
            trainer.close()  # DataLoader workers of streamed data
        shutdown_distributed()
    if trainer.stopped_by:
        return _stopped(args, trainer, stop)
    if trainer.dist.is_main:
        print(f"trained {config.name!r} to step {trainer.step}; checkpoints in {trainer.out_dir / 'checkpoints'}")
    return 0


def resumed_line(trainer, path) -> str:
    """One line: the step (of ``train.steps``) and epoch a resumed run continues from, and the checkpoint."""
    epoch, k = trainer.epoch_of(trainer.step)
    per_epoch = trainer.source.batches_per_epoch
    return (f"resumed from step {trainer.step} of {trainer.config.train.steps} (epoch {epoch + 1}, {k} of its "
            f"{per_epoch} batches done): {path}")


def held_out_line(split: dict | None) -> str:
    """One line naming the held-out samples/trajectories (the data to evaluate on), or why there are none."""
    if not split:
        return "held out for validation: none recorded"
    where = f" of {split['path']}" if split.get("path") else ""
    unit = {"sample": "samples", "trajectory": "trajectories"}.get(split["unit"], split["unit"])
    return (f"held out for validation (use these to evaluate): {unit} {split['held_out']} of "
            f"{split['count']}{where}; recorded in the checkpoint (`funcdiff data info --checkpoint RUN`)")


def _stopped(args: argparse.Namespace, trainer, stop) -> int:
    """After a signal: say where the checkpoint is and how to resume; the exit status asks Slurm for a requeue
    (SIGUSR1/SIGTERM: 75) or reports Ctrl-C (130). See :mod:`funcdiff.training.signals`."""
    from funcdiff.training.signals import REQUEUE_EXIT

    if trainer.dist.is_main:
        sets = " ".join(f"--set {shlex.quote(item)}" for item in resolve_overrides(args))
        hint = f"funcdiff train --config {shlex.quote(str(args.config))} {sets} --resume".replace("  ", " ")
        print(f"funcdiff train: stopped by {trainer.stopped_by} at step {trainer.step} of "
              f"{trainer.config.train.steps}; checkpoint written to {trainer.out_dir / 'checkpoints'}. "
              f"Resume with: {hint}", file=sys.stderr)
    return stop.exit_status if stop.requested else REQUEUE_EXIT
