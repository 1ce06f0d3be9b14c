"""Provenance of output files: the command that runs, and the CF global attributes every netCDF file carries.

Standard library only (the CLI records its command before it imports torch or xarray)::

    set_command(["solve", "--checkpoint", "run"])      # funcdiff.cli.main does this
    cf_global_attrs("funcdiff posterior samples")       # {"Conventions": "CF-1.8", "title": ..., "history": ...}

``history`` follows the CF/NUG convention: one line per program that touched the file, newest first, each
``<UTC ISO time>: <command> (funcdiff <version>)``; a file made from others (a merge) puts its line above theirs.
"""

from __future__ import annotations

import shlex
import sys
from datetime import datetime, timezone
from typing import Optional, Sequence

CONVENTIONS = "CF-1.8"
INSTITUTION = ""  # left out when empty
_command: Optional[list[str]] = None


def set_command(argv: Optional[Sequence[str]]) -> None:
    """Record the CLI command (arguments after ``funcdiff``) for the ``history`` of files written from now on."""
    global _command
    _command = None if argv is None else ["funcdiff", *map(str, argv)]


def command_line() -> str:
    """The recorded CLI command, else the Python command line (a script or an interactive session)."""
    if _command is not None:
        return shlex.join(_command)
    argv = [a for a in sys.argv if a] or ["python"]
    return shlex.join(["python", *argv])


def history_line(action: str = "") -> str:
    """``<UTC ISO time>: <command> (funcdiff <version>)``, ``action`` (e.g. "merged 4 parts") appended."""
    import funcdiff

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    what = f"; {action}" if action else ""
    return f"{stamp}: {command_line()} (funcdiff {funcdiff.__version__}){what}"


def add_history(previous: str = "", action: str = "") -> str:
    """A ``history`` value: this program's line above ``previous`` (the input's history, if any)."""
    line = history_line(action)
    return f"{line}\n{previous}" if previous else line


def cf_global_attrs(title: str, *, history: str = "", source: str = "") -> dict:
    """``Conventions``, ``title``, ``history`` (:func:`add_history` on ``history``), ``source`` (default
    ``funcdiff <version>``) and, where set, ``institution``: the CF §2.6.2 global attributes."""
    import funcdiff

    attrs = {"Conventions": CONVENTIONS, "title": title, "history": add_history(history),
             "source": source or f"funcdiff {funcdiff.__version__}"}
    if INSTITUTION:
        attrs["institution"] = INSTITUTION
    return attrs
