"""Command-line entry point: ``funcdiff <verb> ...``.

Each verb lives in its own module ``funcdiff.cli.<verb>`` exposing ``register(subparsers)``, which adds an
``argparse`` sub-parser whose ``func`` default is the handler ``func(args) -> int``.

Errors. A mistake in what the user asked for or gave (:class:`funcdiff.errors.UserError`, a missing or
unreadable path, a bad argument) prints one line ``funcdiff <verb>: error: <message>`` to stderr and exits
with status 2. ``--debug`` (anywhere on the command line) or ``FUNCDIFF_DEBUG=1`` shows the traceback
instead; any other exception is a bug and always keeps its traceback.

Threads. On a shared machine torch's default (one OpenMP thread per core, spinning while it waits) slowed the
demo from seconds to minutes when another torch job ran (docs, "Threads"); the spinning was the culprit, not the
count. So ``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (idle OpenMP threads sleep) before torch is imported, and
every verb runs torch on :func:`default_threads` intra-op threads, one per core the process may use (affinity mask,
``SLURM_CPUS_PER_TASK``), unless ``--threads N`` (0: torch's own default) or ``OMP_NUM_THREADS`` says otherwise.
``benchmarks/threads.py`` measured that rule within 1.2x of the best count both alone and beside another torch job.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, NoReturn

VERBS = ("demo", "data", "train", "sample", "solve", "observe", "forecast", "evaluate", "merge", "upsample")
USER_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
DEBUG_ENV = "FUNCDIFF_DEBUG"


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose usage errors are one line (``funcdiff <verb>: error: ...``, exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _at_least(convert, minimum, name: str, what: str):
    """An ``argparse`` type: ``convert(text)``, rejected unless >= ``minimum`` (NaN is rejected too)."""
    def parse(text: str):
        value = convert(text)
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = name  # argparse names the type in "invalid <name> value: ..."
    return parse


positive_int = _at_least(int, 1, "positive_int", "a positive integer")
non_negative_int = _at_least(int, 0, "non_negative_int", "a non-negative integer")
non_negative_float = _at_least(float, 0.0, "non_negative_float", ">= 0")


def check_cuda_graphs(cuda_graphs: bool, device: str) -> None:
    """UserError when ``--cuda-graphs`` is given without a CUDA ``--device`` (the flag would be ignored there)."""
    if cuda_graphs and not str(device).startswith("cuda"):
        from funcdiff.errors import UserError

        raise UserError(f"--cuda-graphs needs a CUDA --device, got {device!r}")


@contextmanager
def user_errors() -> Iterator[None]:
    """Treat a ``ValueError``/``KeyError`` raised in the block (reading and checking user input) as a
    :class:`~funcdiff.errors.UserError`. Wrap only input handling, never computation, so bugs keep tracebacks."""
    import yaml

    from funcdiff.errors import UserError

    try:
        yield
    except UserError:
        raise
    except (ValueError, KeyError, yaml.YAMLError) as err:
        raise UserError(str(err).strip("'\"")) from err


def _add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """``--debug`` and ``--threads`` on the top parser and on every leaf verb parser (leaves do not override
    a value given before the verb)."""
    default = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks (or set {DEBUG_ENV}=1)",
                        **({"default": False} if top else default))
    parser.add_argument("--threads", type=non_negative_int, metavar="N", **({"default": None} if top else default),
                        help="torch intra-op threads; 0 = torch's own default (default: one per core this process may "
                             "use, from its affinity mask and SLURM_CPUS_PER_TASK, or OMP_NUM_THREADS if set)")


def _leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaf_parsers(child)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="funcdiff", description=__doc__.splitlines()[0])
    _add_common(parser, top=True)
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"funcdiff.cli.{verb}").register(subparsers)
    for leaf in _leaf_parsers(parser):
        if leaf is not parser:
            _add_common(leaf, top=False)
    return parser


def allowed_cores(environ: Mapping[str, str] | None = None, affinity: Iterable[int] | None = None) -> int:
    """The cores this process may use: the affinity mask (``os.sched_getaffinity(0)``; ``os.cpu_count()`` where the
    platform has none), capped by ``SLURM_CPUS_PER_TASK`` when Slurm sets it (a Slurm task may see the whole node's
    mask when the cgroup does not confine it). Unparsable or non-positive values are ignored. At least 1."""
    environ = os.environ if environ is None else environ
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # macOS, Windows
            affinity = range(os.cpu_count() or 1)
    cores = max(1, len(set(affinity)))
    slurm = environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores, int(slurm))
    return cores


def default_threads(environ: Mapping[str, str] | None = None, affinity: Iterable[int] | None = None) -> int:
    """torch intra-op threads a verb uses when neither ``--threads`` nor ``OMP_NUM_THREADS`` says: every core the
    process may use (:func:`allowed_cores`), with ``OMP_WAIT_POLICY=PASSIVE`` so that idle threads sleep.
    Measured with ``benchmarks/threads.py`` (docs, "Threads")."""
    return allowed_cores(environ, affinity)


def set_thread_policy(threads: int | None = None, verb: str | None = None) -> None:
    """Default ``OMP_WAIT_POLICY=PASSIVE`` (effective only before torch is imported; a value the user set wins),
    then torch's intra-op threads: ``threads`` if given (0 = torch's default), else none set when
    ``OMP_NUM_THREADS`` is set, else :func:`default_threads`. Imports no torch: before torch is imported the
    count goes to ``OMP_NUM_THREADS``, which torch reads when a verb first imports it (``funcdiff data list``
    never does)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if verb is None or threads == 0 or (threads is None and "OMP_NUM_THREADS" in os.environ):
        return  # 0: keep torch's default
    count = threads or default_threads()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    else:
        os.environ["OMP_NUM_THREADS"] = str(count)


# The library names the parameters a caller passed (``index=5 is out of range``); the command line speaks in flags.
# A parameter of this table written ``name=VALUE`` at the start of a word (start of the message, after a space or
# a parenthesis; not ``train.steps=``, not quoted) is shown as ``--flag VALUE``; ``name=True``, or ``name=`` with
# no value after it (``give one of indices= and init_times=``), as ``--flag``.
PARAMETER_FLAGS = {
    "index": "--index", "trajectories": "--index", "indices": "--indices", "start_frame": "--start-frame",
    "init_times": "--init-times", "out_dir": "--out-dir", "overwrite": "--overwrite", "layout": "--layout",
    "pushforward": "--pushforward", "batch_size": "--batch-size", "variables": "--variables", "start": "--start",
    "end": "--end", "step": "--step", "cuda_graphs": "--cuda-graphs",
}
_PARAMETER = re.compile(r"(?:(?<=^)|(?<=[\s(]))(?<!--set )(" + "|".join(PARAMETER_FLAGS) + r")=(True\b)?")


def flag_message(text: str) -> str:
    """``text`` with the parameters of :data:`PARAMETER_FLAGS` written as flags: ``start_frame=99 must lie in
    1..23`` -> ``--start-frame 99 must lie in 1..23``; ``pass overwrite=True`` -> ``pass --overwrite``."""
    def flag(m: re.Match) -> str:
        bare = m[2] or m.end() == len(text) or text[m.end()] in " ,;)"
        return PARAMETER_FLAGS[m[1]] + ("" if bare else " ")

    return _PARAMETER.sub(flag, text)


def error_message(err: BaseException) -> str:
    """One line for a user error: OS errors as ``<reason>: <path>``, other messages with newlines joined and the
    library's parameter names shown as flags (:func:`flag_message`)."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.strerror}: {err.filename}"
    else:
        text = flag_message(str(err.args[0]) if len(err.args) == 1 else str(err))
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(err).__name__


RESUMABLE = ("forecast", "data generate", "train")  # a rerun of the same command continues where it stopped


def _verb_name(args: argparse.Namespace) -> str:
    return " ".join(v for v in (args.verb, getattr(args, "data_command", None)) if v)


def interrupted_message(args: argparse.Namespace) -> str:
    """The one line after Ctrl-C: how to continue (verbs that resume, and batch runs) or that nothing was kept."""
    if _verb_name(args) in RESUMABLE or getattr(args, "out_dir", None) is not None:
        return "interrupted; rerun the same command to resume"
    return "interrupted; no partial output file was left (each file is written whole, atomically)"


def main(argv: list[str] | None = None) -> int:
    from funcdiff.errors import UserError

    set_thread_policy()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed as one line
        return int(exit_.code or 0)
    set_thread_policy(args.threads, args.verb)
    from funcdiff.io.provenance import set_command  # standard library only: the `history` of files written

    set_command(sys.argv[1:] if argv is None else argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"funcdiff {_verb_name(args)}: {interrupted_message(args)}", file=sys.stderr)
        return 130
    except (UserError, *USER_OS_ERRORS) as err:
        if debug:
            raise
        verb = " ".join(v for v in (args.verb, getattr(args, "data_command", None)) if v)
        print(f"funcdiff {verb}: error: {error_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
