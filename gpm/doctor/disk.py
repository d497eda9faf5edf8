"""``gpm doctor``'s checks of the file system: free space and permissions of what gpm writes."""

from __future__ import annotations

import os
from pathlib import Path

from gpm.doctor.findings import OK, PROBLEM, Finding, Setup, size_text
from gpm.locks import lock_path


def existing_parent(path: Path) -> Path:
    """``path`` or its nearest existing parent (what a new folder would live on)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_space(setup: Setup) -> list[Finding]:
    """Free space for this user on the data folder's and the archive folder's file systems."""
    db_size = setup.db_path.stat().st_size if setup.db_path.is_file() else 0
    need = max(setup.min_free_bytes, db_size)
    out: list[Finding] = []
    seen: set[int] = set()
    for what, folder in (("data folder", setup.db_path.parent), ("archive folder", setup.archive_dir)):
        probe = existing_parent(folder)
        try:
            st = os.statvfs(probe)
            device = os.stat(probe).st_dev
        except OSError as err:
            out.append(Finding("free-space", PROBLEM, f"{probe}: cannot read free space ({err.strerror})",
                               "check the folder exists and is readable", str(folder)))
            continue
        if device in seen:
            continue
        seen.add(device)
        free = st.f_bavail * st.f_frsize
        if free < need:
            out.append(Finding("free-space", PROBLEM, f"{folder}: only {size_text(free)} free for the {what} "
                               f"(gpm wants {size_text(need)})",
                               "free some space, or move [storage] db_path / archive_dir elsewhere",
                               str(folder)))
        else:
            out.append(Finding("free-space", OK, f"{size_text(free)} free for the {what}", path=str(folder)))
    return out


def check_permissions(setup: Setup) -> list[Finding]:
    """What gpm writes must be writable by this user, and the config file readable."""
    db = setup.db_path
    wanted: list[tuple[Path, int, str]] = [(existing_parent(db.parent), os.W_OK | os.X_OK, "data folder")]
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            wanted.append((path, os.R_OK | os.W_OK, "database file"))
    locks = lock_path(db, "archive").parent
    if locks.exists():
        wanted.append((locks, os.W_OK | os.X_OK, "lock folder"))
    wanted.append((existing_parent(setup.archive_dir), os.W_OK | os.X_OK, "archive folder"))
    if setup.cfg.config_file_found and setup.cfg.config_path:
        wanted.append((Path(setup.cfg.config_path), os.R_OK, "config file"))
    out = []
    for path, mode, what in wanted:
        if not os.access(path, mode):
            need = "readable" if mode == os.R_OK else "writable"
            out.append(Finding("permissions", PROBLEM, f"{path}: {what} not {need} by this user "
                               f"(uid {os.geteuid()})",
                               f"run gpm as the file's owner, or make it {need} (chmod/chown)", str(path)))
    return out or [Finding("permissions", OK, "database, folders and config accessible")]
