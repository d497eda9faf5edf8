"""Writing a report file for cron and timers: atomically (the lock is gpm.locks')."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from gpm.errors import EXIT_USAGE, GpmError


def check_output(path: Path, option: str = "--output") -> None:
    """Refuse an output file in a folder that does not exist, before the work, not after it."""
    folder = Path(path).parent
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise GpmError(f"{option} {path}: {folder} {problem}: create the folder or write elsewhere",
                       EXIT_USAGE)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, fsync it, rename it into place."""
    path = Path(path)
    folder = path.parent
    check_output(path)
    umask = os.umask(0)
    os.umask(umask)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise GpmError(f"{path}: cannot write: {err.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):  # disk full, I/O error: the old file stays as it was
            raise GpmError(f"{path}: cannot write: {err.strerror or err}") from None
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
