"""Command-line entry point: ``funcdiff <verb> ...``.

Each verb lives in its own module ``funcdiff.cli.<verb>`` exposing ``register(subparsers)``, which adds an
``argparse`` sub-parser whose ``func`` default is the handler ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

VERBS = ("demo", "data", "train", "sample", "solve", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="funcdiff", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"funcdiff.cli.{verb}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
