"""Exclusive job locks, so two runs of the same job never overlap.

A lock is an ``fcntl.flock`` on a small file: the kernel drops it when the
holder exits, however it exits (SIGKILL and power loss included), so there
is no stale lock to clean up. The file holds the holder's pid, only to name
it in the message of the run that has to give up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from gpm.errors import EXIT_NOPERM, GpmError, LockedError
from gpm.paths import ensure_private_dir

DEFAULT_WAIT_SECS = 5.0


def lock_path(db_path: str | os.PathLike, job: str) -> Path:
    """Where ``job``'s lock for the database ``db_path`` lives: ``<db dir>/locks/<db name>.<job>.lock``."""
    db_path = Path(db_path)
    return db_path.parent / "locks" / f"{db_path.name}.{job}.lock"


@dataclass(frozen=True)
class HeldLock:
    path: Path
    # A child process given this descriptor (``pass_fds``) holds the lock too, until it exits.
    fd: int


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, *, job: str, wait_secs: float = DEFAULT_WAIT_SECS,
                   poll_secs: float = 0.05) -> Iterator[HeldLock]:
    """Hold an exclusive lock on ``path`` for the block.

    Waits up to ``wait_secs`` for a running holder to finish, then raises
    ``LockedError`` (exit 75) naming the lock file and, when known, the pid
    that holds it.
    """
    path = Path(path)
    try:
        ensure_private_dir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise GpmError(f"{path}: cannot create the lock file: {err.strerror}; "
                       f"make {path.parent.parent} writable for this user", EXIT_NOPERM) from None
    try:
        deadline = time.monotonic() + wait_secs
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _still_linked(fd, path):
                    break
                # `gpm doctor --fix` removed the file while we waited on it: lock the new one.
                fresh = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                os.close(fd)
                fd = fresh
                continue
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    by = f" by pid {holder}" if holder else ""
                    raise LockedError(
                        f"{path}: another `gpm {job}` is running (lock held{by}); try again later"
                    ) from None
                time.sleep(poll_secs)
        try:  # only to name the holder in another run's message: a full disk costs just that
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        yield HeldLock(path, fd)
    finally:
        os.close(fd)  # closing releases the flock


def _still_linked(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
