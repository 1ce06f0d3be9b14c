"""``funcdiff train``: train a denoiser from a YAML run config (single process or under torchrun)."""

from __future__ import annotations

import argparse


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


def run_train(args: argparse.Namespace) -> int:
    from funcdiff.config import load_config
    from funcdiff.training import train

    config = load_config(args.config, resolve_overrides(args))
    trainer = train(config, resume=args.resume, progress=not args.no_progress)
    if trainer.dist.is_main:
        print(f"trained {config.name!r} to step {trainer.step}; checkpoints in {trainer.out_dir / 'checkpoints'}")
    return 0
