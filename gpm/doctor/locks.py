"""``gpm doctor``'s lock check: job locks held too long or by a leftover process; ``--fix`` removes stale lock files."""

from __future__ import annotations

import os
import re
from pathlib import Path


from gpm.doctor.findings import NOTE, OK, PROBLEM, Finding, Setup, duration_text
from gpm.locks import exclusive_lock, lock_path

_LOCK_FILE = re.compile(r"^(?P<db>.+)\.(?P<job>[a-z][a-z_-]*)\.lock$")


def _held_inodes() -> set[tuple[int, int]]:
    """(device, inode) of every file with a lock, from /proc/locks (probing with flock could
    make a concurrent job give up)."""
    held = set()
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return held
    for line in text.splitlines():
        fields = line.split()
        ident = next((f for f in fields if f.count(":") == 2), None)
        if ident is None:
            continue
        major, minor, inode = ident.split(":")
        held.add((os.makedev(int(major, 16), int(minor, 16)), int(inode)))
    return held


def _holders(path: Path) -> list[str]:
    """The processes that have ``path`` open ("pid (name)"): who holds the lock now."""
    import psutil  # only gpm doctor needs it; a cron `gpm sample` with no GPU process never loads it

    out = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if any(f.path == str(path) for f in proc.open_files()):
                out.append(f"{proc.info['pid']} ({proc.info['name']})")
        except (psutil.Error, OSError):
            continue
    return out


def _recorded_pid(path: Path) -> int | None:
    try:
        text = path.read_text()[:32].strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def check_locks(setup: Setup) -> list[Finding]:
    """Job locks held very long, or held by someone other than the run that took them."""
    import psutil  # only gpm doctor needs it; a cron `gpm sample` with no GPU process never loads it

    folder = lock_path(setup.db_path, "archive").parent
    files = sorted(p for p in folder.glob("*.lock") if _LOCK_FILE.match(p.name)) if folder.is_dir() else []
    held = _held_inodes()
    out: list[Finding] = []
    for path in files:
        match = _LOCK_FILE.match(path.name)
        assert match is not None
        job, db_name = match["job"], match["db"]
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if (st.st_dev, st.st_ino) not in held:
            if not (folder.parent / db_name).exists():
                out.append(Finding("locks", NOTE, f"{path}: lock file of a database that is gone",
                                   "run `gpm doctor --fix` to remove it", str(path),
                                   repair=lambda p=path, j=job: _remove_lock_file(p, j), fix="remove the lock file"))
            continue
        if db_name != setup.db_path.name:
            continue
        pid = _recorded_pid(path)
        age = setup.now() - st.st_mtime  # the holder writes its pid when it takes the lock
        if pid is None or not psutil.pid_exists(pid):
            holders = ", ".join(_holders(path)) or "unknown"
            out.append(Finding("locks", PROBLEM, f"{path}: `gpm {job}` lock held by pid {holders}, "
                               f"though pid {pid} that took it is gone",
                               "a leftover child of a killed run: stop it (kill PID) if it is stuck",
                               str(path)))
        elif age > setup.lock_held_too_long_secs:
            out.append(Finding("locks", PROBLEM, f"{path}: `gpm {job}` lock held for {duration_text(age)} by "
                               f"pid {pid} ({_process_name(pid)})",
                               f"a stuck run? if pid {pid} does no work, stop it (kill {pid})", str(path)))
        else:
            out.append(Finding("locks", OK, f"`gpm {job}` running (pid {pid}, {duration_text(age)})",
                               path=str(path)))
    return out or [Finding("locks", OK, "no lock held")]


def _process_name(pid: int) -> str:
    import psutil  # only gpm doctor needs it; a cron `gpm sample` with no GPU process never loads it

    try:
        return " ".join(psutil.Process(pid).cmdline())[:80] or psutil.Process(pid).name()
    except psutil.Error:
        return "?"


def _remove_lock_file(path: Path, job: str) -> str:
    """Unlink a lock file while holding its lock: a run that opened it meanwhile
    notices the unlink and opens the new one (gpm.locks)."""
    with exclusive_lock(path, job=job, wait_secs=0):
        path.unlink(missing_ok=True)
    return f"{path}: removed"
