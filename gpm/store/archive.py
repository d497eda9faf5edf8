"""Move old rows of the time-series tables into partitioned Parquet, crash-safely.

Layout: ``<archive_dir>/<table>/host=<host>/date=<YYYY-MM-DD>/part-<ms>-<id>.parquet``
(hive partitioning; one new part file per table, host, UTC day and run, so
appending to a day never rewrites what is there).

Each part file is made durable before its rows leave SQLite:

1. write ``.part-….parquet.tmp`` in the day's folder, fsync, rename to
   ``part-….parquet``, fsync the folder;
2. here, in one ``BEGIN IMMEDIATE`` transaction: check the rows' time range
   in the database against the file, record the file in ``archive_files``
   and delete the rows, rolling back unless exactly the file's count went.

A kill before (2) commits leaves rows in SQLite and, at worst, an orphan file
that ``archive_files`` does not list. The history reader only reads listed
files of the hosts this database owns, so an orphan is never counted twice;
the next run (``recover``, in ``gpm.store.archive_files``) adopts it when
every row it holds is still in the database (then deletes them, in one
transaction), sets it aside as ``*.rejected`` otherwise, and removes leftover ``.tmp`` files. A power cut
after the commit but before SQLite's WAL reached the disk is the same case:
the file was already durable.

Recovery touches only files this database wrote: each part file's name ends
in ``-db<database id>.parquet`` (``archive_identity``). Any other file in the
folder (another database's, one from a gpm before the ids, a copy) is left
as it is, listed or not (#12.3).

Then ``reclaim`` gives the freed pages back to the file system.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from gpm.store.archive_files import (ArchiveResult, TableResult, day_name, fsync_dir, host_dir, owned_suffix,
                                     record_file, recover, remember_folder, resolved_tables)
from gpm.store.db import write
from gpm.store.timeseries import DAY_MS, Resolved

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)

# VACUUM (rewrite the whole file) when at least this share of pages is free;
# below it, incremental_vacuum moves pages from the end into the holes.
VACUUM_FREE_SHARE = 0.5
# Level 3 writes a day of gpu_metrics in 60 % of level 9's time for 1 % more bytes.
ZSTD_LEVEL = 3

Progress = Callable[[int], None]


def cutoff_ms(retention_days: int, now_ms: int | None = None) -> int:
    """Rows older than this move: UTC midnight ``retention_days`` days ago.

    Whole days only, so an hourly cron job writes one part file per day
    instead of one per run.
    """
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return (now_ms - retention_days * DAY_MS) // DAY_MS * DAY_MS


# --------------------------------------------------------------------------- planning


@dataclass
class PlanRow:
    table: str
    host: str
    day: str
    rows: int


def plan(conn: sqlite3.Connection, *, cutoff: int, own_host: str) -> list[PlanRow]:
    """What would move: rows per table, host and UTC day (for --dry-run and progress)."""
    out: list[PlanRow] = []
    for spec, res in resolved_tables(conn, problems=[]):
        where = res.where(host=False, cutoff=True)
        host_expr = {"g.host": "g.host", "t.host": "t.host", "?": "?"}[res.host_sql]
        join = " JOIN gpus g ON g.id = t.gpu_id" if res.host_sql == "g.host" else ""
        sql = (f"SELECT {host_expr}, t.{spec.time_column} / {DAY_MS}, COUNT(*) "
               f"FROM (SELECT * FROM {spec.table} WHERE {where}) t{join} GROUP BY 1, 2 ORDER BY 2, 1")
        params = ([own_host] if res.host_sql == "?" else []) + [0, cutoff, cutoff]
        for host, day, count in conn.execute(sql, params):
            out.append(PlanRow(spec.table, host, day_name(day * DAY_MS), count))
    return out


# --------------------------------------------------------------------------- archiving


def archive(conn: sqlite3.Connection, archive_dir: str | os.PathLike, *, cutoff: int, own_host: str,
            progress: Progress | None = None, reclaim_space: bool = True) -> ArchiveResult:
    """Recover from an interrupted run, move every old row, then reclaim space.

    The caller holds the archive lock (``gpm.locks``) for the whole call.
    `gpm archive` and the daemon call ``gpm.archiving.archive``, which also
    keeps the report's rollup current around this.
    """
    archive_dir = Path(archive_dir)
    result = ArchiveResult(db_bytes_before=db_bytes(conn))
    database_id = remember_folder(conn, archive_dir)
    recover(conn, archive_dir, own_host=own_host, result=result)
    for spec, res in resolved_tables(conn, result.problems):
        table_result = result.tables.setdefault(spec.table, TableResult(spec.table))
        mover = _Mover(conn, archive_dir, res, cutoff=cutoff, own_host=own_host, result=result,
                       table_result=table_result, progress=progress, database_id=database_id)
        # A day's DELETE touches ~10,000 pages: in a 64 MiB cache it does not spill
        # them to the WAL before COMMIT (20 % faster than SQLite's 2 MiB default).
        with _unchecked_deletes(conn, spec.table), _pragma(conn, "cache_size", -65536):
            mover.move()
    if reclaim_space:
        result.reclaim = reclaim(conn)
    result.db_bytes_after = db_bytes(conn)
    return result


@contextlib.contextmanager
def _pragma(conn: sqlite3.Connection, name: str, value: int) -> Iterator[None]:
    """``PRAGMA name = value`` for the block, then back to what it was."""
    old = conn.execute(f"PRAGMA {name}").fetchone()[0]
    conn.execute(f"PRAGMA {name} = {int(value)}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA {name} = {int(old)}")


def _unchecked_deletes(conn: sqlite3.Connection, table: str) -> "contextlib.AbstractContextManager[None]":
    """Foreign keys off while deleting from ``table`` when no table refers to it.

    Deleting rows nobody refers to cannot break a foreign key, yet with the
    checks on SQLite looks up each row's parent (``gpus``) and deletes in
    two passes: 0.7 s instead of 0.25 s for a day of 8 GPUs at 1 Hz.
    """
    referred = conn.execute(
        "SELECT 1 FROM sqlite_master m, pragma_foreign_key_list(m.name) f "
        "WHERE m.type = 'table' AND f.\"table\" = ? LIMIT 1", (table,)).fetchone()
    return contextlib.nullcontext() if referred else _pragma(conn, "foreign_keys", 0)


@dataclass
class Part:
    """One part file written and made durable, not yet in the manifest."""

    host: str
    relative: str  # to the archive folder
    count: int
    first: int  # min and max of the time column, Unix ms
    last: int
    size: int


def sort_keys(res: Resolved) -> list[str]:
    """The Parquet sort order: host, the entry's keys that are in the file, time."""
    file_columns = res.file_schema()
    keys = ["host", *(k for k in res.spec.sort_keys if k in file_columns)]
    if res.spec.ts_name not in keys:
        keys.append(res.spec.ts_name)
    return keys


def part_name(database_id: str) -> str:
    """A new part file's name: a day's files for every host of one run share it.

    It ends in ``owned_suffix(database_id)``: what lets recovery tell its own
    orphans from another database's files in a shared folder.
    """
    return f"part-{time.time_ns() // 1_000_000}-{os.urandom(4).hex()}{owned_suffix(database_id)}"


def file_frame(res: Resolved, raw: "pl.DataFrame", own_host: str, gpus: "pl.DataFrame | None") -> "pl.DataFrame":
    """The history frame of ``raw`` (the table's own columns) in Parquet order (``sort_keys``).

    A table keyed by GPU goes in order of host, GPU and time: sorting the raw
    integers by each GPU's rank among its (host, uuid) before the GPU's text
    joins them takes half the time of sorting the history frame's text.
    """
    import polars as pl

    keys = sort_keys(res)
    if res.host_sql != "g.host" or keys != ["host", "gpu_uuid", res.spec.ts_name]:
        return sort_frame(res.to_history(raw, own_host, gpus), keys)
    ids = gpus.sort("host", "gpu_uuid").get_column("gpu_id")
    rank = pl.col("gpu_id").replace_strict(ids, pl.int_range(len(ids), eager=True), default=None)
    time_column = raw.get_column(res.spec.time_column)
    if time_column.null_count() == 0 and time_column.is_sorted():  # as SQLite reads gpu_metrics
        raw = raw.sort(rank, maintain_order=True)
    else:
        raw = raw.sort([rank, pl.col(res.spec.time_column)])
    return res.to_history(raw, own_host, gpus)


def write_day(frame: "pl.DataFrame", res: Resolved, archive_dir: Path, lo: int, name: str) -> list[Part]:
    """Write a day's history frame, in file order (``file_frame``), as one durable part file per host.

    Every host's file is called ``name``. On an error none of the day's
    files is left behind.
    """
    parts: list[Part] = []
    if frame.is_empty():
        return parts
    file_columns = list(res.file_schema())
    offset = 0
    try:
        for length, host in frame.get_column("host").rle().struct.unnest().iter_rows():
            part, offset = frame.slice(offset, length), offset + length
            times = part.get_column(res.spec.ts_name).dt.epoch("ms")
            relative = Path(res.table) / host_dir(host) / f"date={day_name(lo)}" / name
            size = write_durably(part.select(file_columns), archive_dir / relative, root=archive_dir)
            parts.append(Part(host, relative.as_posix(), part.height, int(times.min()), int(times.max()), size))
    except BaseException:
        for written in parts:
            (archive_dir / written.relative).unlink(missing_ok=True)
        raise
    return parts


class _Mover:
    """Moves one table's old rows, one UTC day after another, part file by part file."""

    def __init__(self, conn: sqlite3.Connection, archive_dir: Path, res: Resolved, *, cutoff: int,
                 own_host: str, result: ArchiveResult, table_result: TableResult,
                 progress: Progress | None, database_id: str) -> None:
        self.conn, self.archive_dir, self.res, self.database_id = conn, archive_dir, res, database_id
        self.cutoff, self.own_host = cutoff, own_host
        self.result, self.table_result, self.progress = result, table_result, progress
        self.where = res.where(host=False, cutoff=True)

    def params(self, lo: int) -> list[int]:
        return [lo, lo + DAY_MS, self.cutoff]

    def days(self, conn: sqlite3.Connection) -> Iterator[int]:
        """Start of each UTC day with old rows, oldest first (found one at a time: an index seek each)."""
        spec = self.res.spec
        ready = f" AND ({spec.ready})" if spec.ready else ""
        sql = (f"SELECT MIN({spec.time_column}) FROM {spec.table} "
               f"WHERE {spec.time_column} >= ? AND {spec.age} < ?{ready}")
        start = 0
        while (first := conn.execute(sql, (start, self.cutoff)).fetchone()[0]) is not None:
            lo = first // DAY_MS * DAY_MS
            yield lo
            start = lo + DAY_MS

    def move(self) -> None:
        """Each day in turn: read it, write its part files, then check, record and delete.

        The read is one statement, hence one snapshot; what decides is the
        check in ``commit``'s transaction.
        """
        res = self.res
        for lo in self.days(self.conn):
            raw = res.read_raw(self.conn, self.where, self.params(lo))
            frame = file_frame(res, raw, self.own_host, res.gpus(self.conn))
            self.commit(lo, write_day(frame, res, self.archive_dir, lo, part_name(self.database_id)))

    def commit(self, lo: int, parts: list[Part]) -> None:
        for part in parts:
            if self._commit_part(lo, part):
                self.table_result.rows += part.count
                self.table_result.days.add(day_name(lo))
                self.table_result.files += 1
            if self.progress is not None:
                self.progress(part.count)

    def _commit_part(self, lo: int, part: Part) -> bool:
        """Check the part's rows against the database, record the file, delete the rows: one transaction.

        False (and the file removed) when the rows changed since they were read.
        """
        conn, res, spec = self.conn, self.res, self.res.spec
        where = res.where(host=True, cutoff=True)
        params = [*self.params(lo), *([] if res.host_sql == "?" else [part.host])]
        try:
            with write(conn):
                # MIN and MAX alone are index seeks where the time column leads the key; the
                # DELETE's row count, in the same transaction, is the COUNT(*).
                db_first, db_last = (conn.execute(f"SELECT {agg}({spec.time_column}) FROM {spec.table} "
                                                  f"WHERE {where}", params).fetchone()[0] for agg in ("MIN", "MAX"))
                if (db_first, db_last) != (part.first, part.last):
                    raise _Changed(f"{spec.table} {part.host} {day_name(lo)}: rows changed while archiving "
                                   f"(time range); retried on the next run")
                record_file(conn, spec.table, part.host, lo, Path(part.relative), part.count, part.first,
                            part.last, part.size)
                deleted = conn.execute(f"DELETE FROM {spec.table} WHERE {where}", params).rowcount
                if deleted != part.count:
                    raise _Changed(f"{spec.table} {part.host} {day_name(lo)}: rows changed while archiving "
                                   f"({part.count} read, {deleted} now); retried on the next run")
        except _Changed as changed:
            (self.archive_dir / part.relative).unlink(missing_ok=True)
            self.result.notes.append(str(changed))
            return False
        return True


def sort_frame(frame: "pl.DataFrame", keys: list[str]) -> "pl.DataFrame":
    """``frame.sort(keys)``, with text keys compared as an Enum of their sorted values.

    Same order, a third of the time: a day holds few hosts and GPUs but
    hundreds of thousands of rows, and comparing long UUID strings row by
    row dominated the sort. When the frame is already in order of the last
    key (SQLite reads ``gpu_metrics`` in time order), a stable sort on the
    others gives the same order in half the time again.
    """
    import polars as pl

    last = frame.get_column(keys[-1])
    stable = len(keys) > 1 and last.null_count() == 0 and last.is_sorted()
    if stable:
        keys = keys[:-1]
    exprs = []
    for key in keys:
        if frame.schema[key] == pl.String:
            levels = frame.get_column(key).drop_nulls().unique().sort()
            exprs.append(pl.col(key).cast(pl.Enum(levels)))
        else:
            exprs.append(pl.col(key))
    return frame.sort(exprs, maintain_order=stable)


class _Changed(Exception):
    pass


def write_durably(frame: "pl.DataFrame", final: Path, *, root: Path) -> int:
    """Write ``frame`` as zstd Parquet at ``final`` so that it survives a power cut; return its size."""
    _makedirs_durably(final.parent, root)
    tmp = final.with_name(f".{final.name}.tmp")
    with open(tmp, "wb") as fh:
        frame.write_parquet(fh, compression="zstd", compression_level=ZSTD_LEVEL, statistics=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, final)
    fsync_dir(final.parent)
    return final.stat().st_size


def _makedirs_durably(path: Path, root: Path) -> None:
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe == probe.parent:
            break
        probe = probe.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        fsync_dir(folder.parent)


# --------------------------------------------------------------------------- space


def db_bytes(conn: sqlite3.Connection) -> int:
    """The database's size in pages (what the file shrinks to after a checkpoint)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return conn.execute("PRAGMA page_count").fetchone()[0] * page_size


def reclaim(conn: sqlite3.Connection) -> str:
    """Give free pages back to the file system; return what was done.

    ``incremental_vacuum`` needs ``auto_vacuum = INCREMENTAL`` (gpm sets it on
    new databases); an older database, or one that is mostly free space, gets
    a full VACUUM, which also switches it to incremental for next time.
    """
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    if not free:
        return "nothing to reclaim"
    incremental = conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    if not incremental or free / max(pages, 1) >= VACUUM_FREE_SHARE:
        if not incremental:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
        how = f"VACUUM ({free} of {pages} pages free)"
    else:
        # Python's sqlite3 steps a statement without result columns once, and each
        # step frees one page; executescript steps it to the end (#12.4).
        conn.executescript("PRAGMA incremental_vacuum")
        how = f"incremental_vacuum ({free} of {pages} pages free)"
    left = conn.execute("PRAGMA freelist_count").fetchone()[0]
    if left:
        how += f", {left} still free"
    if not checkpoint(conn):
        how += "; the WAL stays until a reader lets go of it"
    return how


def checkpoint(conn: sqlite3.Connection, tries: int = 10) -> bool:
    """Fold the WAL into the database file and truncate both; True when done.

    The file on disk shrinks only here. A reader of another process (a daemon's
    job mid-query) makes the checkpoint stop short: try again a moment later.
    """
    for attempt in range(tries):
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if not busy:
            return True
        time.sleep(0.05 * (attempt + 1))
    return False
