"""Atomic file writes: write to a temporary file beside the target, then move it into place.

A killed job therefore leaves either the previous file or the complete new one, never a truncated file.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path`` (``os.replace``).

    The temporary name keeps ``path``'s suffix (so writers that infer the format from it, like matplotlib,
    still work) and starts with a dot. The file gets the mode an ordinary ``open()`` would give it (0666
    minus the umask: readable by group and others under umask 022), not ``mkstemp``'s 0600. If the block
    raises, the temporary file is removed and ``path`` is left untouched. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def new_file_mode() -> int:
    """Permission bits of a newly created file under the process umask (0o644 under umask 022)."""
    umask = os.umask(0o022)  # read the umask: os.umask sets and returns the old value; restored at once
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
