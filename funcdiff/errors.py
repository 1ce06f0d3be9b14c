"""Errors that are the user's, not the program's.

:class:`UserError` marks a problem with what the user asked for or gave (a path, a value, a checkpoint that does
not fit, data with NaNs). The command line prints such an error as one line, ``funcdiff <verb>: error: ...``,
and exits with status 2; any other exception is a bug and keeps its traceback. It subclasses ``ValueError`` so
that Python callers catching ``ValueError`` keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the user's input: shown as one line by the CLI (exit status 2), never a traceback."""
