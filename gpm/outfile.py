"""Files gpm writes for people and other programs: reports, exports, textfiles.

Written whole or not at all: into a temp file beside the target, fsynced, then
renamed over it, so a reader (node_exporter, a mail job, a person) never sees
half a file and a full disk leaves the old file as it was. Two kinds of target
are not replaced, since a rename would destroy them (#12, found by a trial as
root: ``gpm report -o /dev/null`` turned /dev/null into a regular file):

- a symlink is followed, and the file it points to is replaced (the link stays);
- an existing path that is not a regular file (a device such as /dev/null, a
  FIFO) is written in place.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from gpm.errors import EXIT_USAGE, GpmError


def check_output(path: Path, option: str = "--output") -> None:
    """Refuse an output file in a folder that does not exist, before the work, not after it."""
    folder = Path(path).parent
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise GpmError(f"{option} {path}: {folder} {problem}: create the folder or write elsewhere",
                       EXIT_USAGE)


def _reason(err: OSError) -> str:
    # polars' Rust errors carry the OS error as text only
    return err.strerror or re.sub(r"\s*\(os error \d+\).*", "", str(err))


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` when the block ends without error.

    ``mode``: the new file's permissions (default 0666 less the umask).
    """
    shown = Path(path)
    target = Path(os.path.realpath(path))
    check_output(target)
    try:
        special = not stat.S_ISREG(os.stat(target).st_mode)
    except FileNotFoundError:
        special = False
    if special:
        try:
            with open(target, "wb") as sink:
                yield sink
        except OSError as err:
            raise GpmError(f"{shown}: cannot write: {_reason(err)}") from None
        return
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise GpmError(f"{shown}: cannot write: {_reason(err)}") from None
    try:
        with os.fdopen(fd, "wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):  # disk full, I/O error: the old file stays as it was
            raise GpmError(f"{shown}: cannot write: {_reason(err)}") from None
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: str | os.PathLike, text: str, *, mode: int | None = None) -> None:
    """``text`` (UTF-8) as the whole content of ``path`` (see ``replacing``)."""
    with replacing(path, mode=mode) as sink:
        sink.write(text.encode("utf-8"))
