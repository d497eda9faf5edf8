"""``gpm doctor``'s archive check: the Parquet files against this database's manifest; ``--fix`` removes temp files."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Iterable

from gpm.doctor.database import open_readonly
from gpm.doctor.findings import NOTE, OK, PROBLEM, Finding, Setup, one_line
from gpm.errors import GpmError
from gpm.locks import exclusive_lock, lock_path
from gpm.report.rollup import FILES, reduction_folder
from gpm.store.archive_files import host_dir, manifest_paths, owned_hosts
from gpm.store.timeseries import TIME_SERIES, available

# Names gpm itself gives files (gpm.store.archive.write_durably, gpm.locks.lock_path).
# Temp files gpm writes in the archive: ``.part-….parquet.tmp``, ``.partials.pq.tmp``...
_TMP = re.compile(r"^\..+\.tmp$")
REDUCTION_FILES = {*FILES.values(), "sources.json"}


def _manifest(setup: Setup) -> tuple[set[str], set[str]] | Finding:
    """(listed paths, hosts) from this database's manifest, through gpm.store.archive_files."""
    try:
        conn = open_readonly(setup.db_path)
        try:
            listed: set[str] = set()
            for spec in available(conn):
                listed |= manifest_paths(conn, spec.table)
            return listed, owned_hosts(conn, setup.host)
        finally:
            conn.close()
    except (sqlite3.Error, GpmError) as err:
        return Finding("archive", PROBLEM, f"{setup.db_path}: cannot read the archive manifest "
                       f"({one_line(err)})", "see the database finding above", str(setup.db_path))


def _owned_folders(archive_dir: Path, hosts: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """The folders of part files this database reads and recovers (as ``archive.recover`` walks
    them), and those of the report's rollups of its days (``report.rollup``)."""
    hosts = sorted(hosts)
    parts = [archive_dir / spec.table / host_dir(host) for spec in TIME_SERIES for host in hosts]
    return parts, [reduction_folder(archive_dir, host_dir(host), "") for host in hosts]


def check_archive(setup: Setup) -> list[Finding]:
    """The archive's files against this database's manifest."""
    if not setup.db_path.exists():
        return []
    manifest = _manifest(setup)
    if isinstance(manifest, Finding):
        return [manifest]
    listed, hosts = manifest
    root = setup.archive_dir
    on_disk = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if not p.is_dir()} \
        if root.is_dir() else {}
    part_folders, reduction_folders = _owned_folders(root, hosts)

    def under(path: Path, folders: list[Path]) -> bool:
        return any(folder in path.parents for folder in folders)

    missing = sorted(rel for rel in listed if rel not in on_disk)
    tmp, rejected, orphans, foreign = [], [], [], []
    for rel, path in sorted(on_disk.items()):
        if rel in listed:
            continue
        if under(path, reduction_folders):
            if _TMP.match(path.name):
                tmp.append(path)
            elif path.name not in REDUCTION_FILES:
                foreign.append(path)
        elif not under(path, part_folders):
            foreign.append(path)
        elif _TMP.match(path.name):
            tmp.append(path)
        elif path.name.endswith(".rejected"):
            rejected.append(path)
        else:
            orphans.append(path)
    out: list[Finding] = []
    if missing:
        out.append(Finding("archive", PROBLEM, f"{len(missing)} archived files missing, e.g. "
                           f"{root / missing[0]} (their rows are gone from the history)",
                           "restore them from a backup into the same place", str(root / missing[0])))
    if tmp:
        out.append(Finding("archive", PROBLEM, f"{len(tmp)} temp files of a killed `gpm archive`, e.g. {tmp[0]}",
                           "run `gpm doctor --fix` (or the next `gpm archive`) to remove them", str(tmp[0]),
                           repair=lambda: _remove_tmp(setup, tmp), fix="remove the temp files"))
    if rejected:
        out.append(Finding("archive", PROBLEM, f"{len(rejected)} part files set aside as *.rejected, "
                           f"e.g. {rejected[0]} (never read)",
                           "look at them: their rows did not match the database; delete them when done",
                           str(rejected[0])))
    if orphans:
        out.append(Finding("archive", PROBLEM, f"{len(orphans)} files not in this database's manifest, "
                           f"e.g. {orphans[0]}",
                           "if another database archives here, give each its own [storage] archive_dir; "
                           "else `gpm archive` adopts them", str(orphans[0])))
    if foreign:
        out.append(Finding("archive", NOTE, f"{len(foreign)} files belong to no database here "
                           f"(another host's or database's, or not gpm's), e.g. {foreign[0]}",
                           "gpm leaves them alone; move them away if they are not meant to be there",
                           str(foreign[0])))
    if not any(f.status == PROBLEM for f in out):
        said = f"{len(listed)} archived files, all present" if listed else "nothing archived yet"
        out.insert(0, Finding("archive", OK, said, path=str(root)))
    return out


def _remove_tmp(setup: Setup, paths: list[Path]) -> str:
    """Remove temp files of killed runs, holding the archive lock so that no run is writing them."""
    with exclusive_lock(lock_path(setup.db_path, "archive"), job="archive", wait_secs=0):
        for path in paths:
            path.unlink(missing_ok=True)
    return f"removed {len(paths)} temp files of a killed `gpm archive`"
