"""Move old rows of the time-series tables into partitioned Parquet, crash-safely.

Layout: ``<archive_dir>/<table>/host=<host>/date=<YYYY-MM-DD>/part-<ms>-<id>.parquet``
(hive partitioning; one new part file per table, host, UTC day and run, so
appending to a day never rewrites what is there).

Each part file is made durable before its rows leave SQLite:

1. write ``.part-….parquet.tmp`` in the day's folder, fsync, rename to
   ``part-….parquet``, fsync the folder (a day writer process does this,
   ``gpm.store.archive_worker``, or this process);
2. here, in one ``BEGIN IMMEDIATE`` transaction: check the rows' time range
   in the database against the file, record the file in ``archive_files``
   and delete the rows, rolling back unless exactly the file's count went.

A kill before (2) commits leaves rows in SQLite and, at worst, an orphan file
that ``archive_files`` does not list. The history reader only reads listed
files of the hosts this database owns, so an orphan is never counted twice;
the next run (``recover``) adopts it when every row it holds is still in the
database (then deletes them, in one transaction), sets it aside as
``*.rejected`` otherwise, and removes leftover ``.tmp`` files. A power cut
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
import secrets
import sqlite3
import time
from concurrent.futures import Future
from dataclasses import astuple, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator
from urllib.parse import quote, unquote

from gpm.store.db import write
from gpm.store.timeseries import BY_TABLE, DAY_MS, Column, Resolved, TimeSeries, available, resolve

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)

# VACUUM (rewrite the whole file) when at least this share of pages is free;
# below it, incremental_vacuum moves pages from the end into the holes.
VACUUM_FREE_SHARE = 0.5
# Level 3 writes a day of gpu_metrics in 60 % of level 9's time for 1 % more bytes.
ZSTD_LEVEL = 3
# Day writer processes when the ADBC SQLite driver is installed (see archive_worker): each
# needs ~3x this process's time per day, so three keep it busy where there are cores.
DEFAULT_WORKERS = min(3, os.cpu_count() or 1)

Progress = Callable[[int], None]


def cutoff_ms(retention_days: int, now_ms: int | None = None) -> int:
    """Rows older than this move: UTC midnight ``retention_days`` days ago.

    Whole days only, so an hourly cron job writes one part file per day
    instead of one per run.
    """
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return (now_ms - retention_days * DAY_MS) // DAY_MS * DAY_MS


def day_name(ms: int) -> str:
    return datetime.fromtimestamp(ms // DAY_MS * DAY_MS / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def host_dir(host: str) -> str:
    return "host=" + quote(host, safe="")


def host_of(dirname: str) -> str:
    return unquote(dirname.removeprefix("host="))


@dataclass
class TableResult:
    table: str
    rows: int = 0
    days: set[str] = field(default_factory=set)
    files: int = 0


@dataclass
class ArchiveResult:
    tables: dict[str, TableResult] = field(default_factory=dict)
    adopted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    removed_tmp: list[str] = field(default_factory=list)
    # Something a human should look at (printed even under cron).
    problems: list[str] = field(default_factory=list)
    # Something that fixes itself on the next run (printed with -v).
    notes: list[str] = field(default_factory=list)
    db_bytes_before: int = 0
    db_bytes_after: int = 0
    reclaim: str = ""

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())


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
    for spec, res in _resolved(conn, problems=[]):
        where = res.where(host=False, cutoff=True)
        host_expr = {"g.host": "g.host", "t.host": "t.host", "?": "?"}[res.host_sql]
        join = " JOIN gpus g ON g.id = t.gpu_id" if res.host_sql == "g.host" else ""
        sql = (f"SELECT {host_expr}, t.{spec.time_column} / {DAY_MS}, COUNT(*) "
               f"FROM (SELECT * FROM {spec.table} WHERE {where}) t{join} GROUP BY 1, 2 ORDER BY 2, 1")
        params = ([own_host] if res.host_sql == "?" else []) + [0, cutoff, cutoff]
        for host, day, count in conn.execute(sql, params):
            out.append(PlanRow(spec.table, host, day_name(day * DAY_MS), count))
    return out


def _resolved(conn: sqlite3.Connection, problems: list[str]) -> list[tuple[TimeSeries, Resolved]]:
    from gpm.errors import GpmError

    out = []
    for spec in available(conn):
        try:
            out.append((spec, resolve(conn, spec)))
        except GpmError as err:
            problems.append(f"{err}; {spec.table} not archived")
    return out


# --------------------------------------------------------------------------- archiving


def archive(conn: sqlite3.Connection, archive_dir: str | os.PathLike, *, cutoff: int, own_host: str,
            progress: Progress | None = None, reclaim_space: bool = True, workers: int | None = None,
            lock_fd: int | None = None,
            after_move: "Callable[[sqlite3.Connection, Path, int], None] | None" = None) -> ArchiveResult:
    """Recover from an interrupted run, move every old row, then reclaim space.

    ``after_move(conn, archive_dir, started_ms)`` runs once the rows are moved,
    before reclaiming: `gpm archive` stores the report's reductions of the days
    that got part files since ``started_ms`` there.
    The caller holds the archive lock (``gpm.locks``) for the whole call;
    ``lock_fd``, its file descriptor, is inherited by the day writers so that
    a later run waits for them too. ``workers``: day-writer processes
    (``gpm.store.archive_worker``); default ``DEFAULT_WORKERS`` when the ADBC
    SQLite driver is installed and the database is a file, 0 reads and
    writes in this process.
    """
    from gpm.store import archive_worker

    archive_dir = Path(archive_dir)
    started_ms = time.time_ns() // 1_000_000
    result = ArchiveResult(db_bytes_before=db_bytes(conn))
    db_path = _db_path(conn)
    if workers is None:
        workers = DEFAULT_WORKERS if db_path and archive_worker.available() else 0
    writers = None
    if workers and db_path and _anything_to_move(conn, cutoff):
        # Started first: their start-up overlaps recover().
        try:
            writers = archive_worker.DayWriters(db_path, workers, lock_fd=lock_fd)
        except OSError as err:
            result.notes.append(f"day writers not started ({err}); archived by gpm itself")
    try:
        database_id = remember_folder(conn, archive_dir)
        recover(conn, archive_dir, own_host=own_host, result=result)
        for spec, res in _resolved(conn, result.problems):
            table_result = result.tables.setdefault(spec.table, TableResult(spec.table))
            mover = _Mover(conn, archive_dir, res, cutoff=cutoff, own_host=own_host, result=result,
                           table_result=table_result, progress=progress, database_id=database_id)
            # A day's DELETE touches ~10,000 pages: in a 64 MiB cache it does not spill
            # them to the WAL before COMMIT (20 % faster than SQLite's 2 MiB default).
            with _unchecked_deletes(conn, spec.table), _pragma(conn, "cache_size", -65536):
                if writers is not None:
                    mover.through(writers)
                else:
                    mover.in_process()
    except BaseException:
        if writers is not None:
            writers.kill()
        raise
    if writers is not None:
        writers.finish()  # they exit meanwhile
    try:
        if after_move is not None:
            after_move(conn, archive_dir, started_ms)
        if reclaim_space:
            result.reclaim = reclaim(conn)
        result.db_bytes_after = db_bytes(conn)
    finally:
        if writers is not None:
            writers.close()
    return result


def _db_path(conn: sqlite3.Connection) -> str:
    """The main database's file ("" for an in-memory one)."""
    return next((row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"), "")


def _anything_to_move(conn: sqlite3.Connection, cutoff: int) -> bool:
    for spec in available(conn):
        ready = f" AND ({spec.ready})" if spec.ready else ""
        if conn.execute(f"SELECT 1 FROM {spec.table} WHERE {spec.age} < ?{ready} LIMIT 1", (cutoff,)).fetchone():
            return True
    return False


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
    return f"part-{time.time_ns() // 1_000_000}-{secrets.token_hex(4)}{owned_suffix(database_id)}"


def owned_suffix(database_id: str) -> str:
    return f"-db{database_id}.parquet"


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


def write_day(frame: "pl.DataFrame", res: Resolved, archive_dir: Path, lo: int, name: str,
              still_wanted: Callable[[], bool] | None = None) -> list[Part]:
    """Write a day's history frame, in file order (``file_frame``), as one durable part file per host.

    Every host's file is called ``name``. Used in this process and by the day
    writers (``gpm.store.archive_worker``). On an error none of the day's
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
            size = write_durably(part.select(file_columns), archive_dir / relative, root=archive_dir,
                                 still_wanted=still_wanted)
            parts.append(Part(host, relative.as_posix(), part.height, int(times.min()), int(times.max()), size))
    except BaseException:
        for written in parts:
            (archive_dir / written.relative).unlink(missing_ok=True)
        raise
    return parts


def _discard(archive_dir: Path, table: str, lo: int, name: str) -> None:
    """Remove whatever a day writer that gave up may have left of ``name`` on day ``lo``."""
    for path in (archive_dir / table).glob(f"host=*/date={day_name(lo)}/*"):
        if path.name in (name, f".{name}.tmp"):
            path.unlink(missing_ok=True)


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

    def read(self, conn: sqlite3.Connection, lo: int) -> "pl.DataFrame":
        """Day ``lo``'s history frame in file order, read here with sqlite3."""
        raw = self.res.read_raw(conn, self.where, self.params(lo))
        return file_frame(self.res, raw, self.own_host, self.res.gpus(conn))

    def through(self, writers) -> None:
        """Day writer processes read, sort and write; this process checks, records and deletes."""
        res = self.res
        jobs = ((lo, {"resolved": encode_resolved(res), "where": self.where, "params": self.params(lo),
                      "own_host": self.own_host, "archive_dir": str(self.archive_dir), "lo": lo,
                      "name": part_name(self.database_id)})
                for lo in self.days(self.conn))
        for (lo, job), parts in writers.map(jobs):
            if isinstance(parts, str):
                self.result.notes.append(f"{res.table} {day_name(lo)}: written by gpm itself ({parts})")
                _discard(self.archive_dir, res.table, lo, job["name"])
                name = part_name(self.database_id)
                parts = write_day(self.read(self.conn, lo), res, self.archive_dir, lo, name)
            self.commit(lo, parts)

    def in_process(self) -> None:
        """Read with sqlite3 here; a thread on a second connection reads the next day meanwhile.

        Reading is Python-bound (SQLite values become Python objects, ~3 µs
        a row) while writing Parquet and deleting run in Polars and SQLite
        with the GIL released. Each read is one statement, hence one
        snapshot; what decides is the check in ``commit``'s transaction.
        """
        from concurrent.futures import ThreadPoolExecutor

        from gpm.store.db import connect

        path = _db_path(self.conn)
        # An in-memory database has no second connection: read in turn, on the caller's.
        reader = connect(path, readonly=True) if path else self.conn
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="gpm-archive-read") as pool:
                submit = pool.submit if path else _done
                days = self.days(reader)
                pending = submit(self._next, days, reader)
                while (loaded := pending.result()) is not None:
                    lo, frame = loaded
                    pending = submit(self._next, days, reader)
                    self.commit(lo, write_day(frame, self.res, self.archive_dir, lo, part_name(self.database_id)))
        finally:
            if path:
                reader.close()

    def _next(self, days: Iterator[int], conn: sqlite3.Connection) -> "tuple[int, pl.DataFrame] | None":
        lo = next(days, None)
        return None if lo is None else (lo, self.read(conn, lo))

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
                _record(conn, spec.table, part.host, lo, Path(part.relative), part.count, part.first,
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


def encode_resolved(res: Resolved) -> dict:
    """``res`` as JSON for a day writer (the entry itself by name: both run the same gpm)."""
    return {"table": res.table, "columns": [astuple(c) for c in res.columns], "raw": res.raw,
            "host_sql": res.host_sql, "pk": res.pk}


def decode_resolved(data: dict) -> Resolved:
    return Resolved(BY_TABLE[data["table"]], tuple(Column(*c) for c in data["columns"]),
                    tuple(tuple(r) for r in data["raw"]), data["host_sql"], tuple(data["pk"]))


def _done(fn, *args) -> "Future":
    future: Future = Future()
    future.set_result(fn(*args))
    return future


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


class Abandoned(Exception):
    """A part file not renamed into place: whoever wanted it is gone."""


def _record(conn, table: str, host: str, day_ms: int, relative: Path, count: int, first: int,
            last: int, size: int) -> None:
    conn.execute(
        """INSERT INTO archive_files (table_name, host, day, path, row_count, min_ts_ms, max_ts_ms,
           size_bytes, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (table, host, day_name(day_ms), relative.as_posix(), count, first, last, size,
         time.time_ns() // 1_000_000),
    )


def write_durably(frame: "pl.DataFrame", final: Path, *, root: Path,
                  still_wanted: Callable[[], bool] | None = None) -> int:
    """Write ``frame`` as zstd Parquet at ``final`` so that it survives a power cut; return its size.

    ``still_wanted`` is asked just before the rename; False leaves no file
    and raises ``Abandoned`` (a day writer whose parent died).
    """
    _makedirs_durably(final.parent, root)
    tmp = final.with_name(f".{final.name}.tmp")
    with open(tmp, "wb") as fh:
        frame.write_parquet(fh, compression="zstd", compression_level=ZSTD_LEVEL, statistics=True)
        fh.flush()
        os.fsync(fh.fileno())
    if still_wanted is not None and not still_wanted():
        tmp.unlink(missing_ok=True)
        raise Abandoned(str(final))
    os.rename(tmp, final)
    fsync_dir(final.parent)
    return final.stat().st_size


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


# --------------------------------------------------------------------------- which folder, which files


def database_id(conn: sqlite3.Connection) -> str:
    """The id in the names of the part files this database wrote (``owned_suffix``)."""
    return conn.execute("SELECT database_id FROM archive_identity").fetchone()[0]


def remember_folder(conn: sqlite3.Connection, archive_dir: Path) -> str:
    """Record ``archive_dir`` as where this database archives (``archive_folder``); return its id."""
    folder = os.path.abspath(archive_dir)
    with write(conn):
        conn.execute("UPDATE archive_identity SET folder = ? WHERE folder IS NOT ?", (folder, folder))
    return database_id(conn)


def archive_folder(db_file: str, explicit: str | os.PathLike | None = None) -> Path:
    """Where the database ``db_file`` archives, in this order (#12.3):

    ``explicit`` ([storage] archive_dir or --archive-dir); the folder its last
    `gpm archive` recorded; for a database that archived before folders were
    recorded, the one default of those days (``$XDG_DATA_HOME/gpm/archive``);
    else its own default (``gpm.paths.default_archive_dir``).
    """
    from gpm.paths import default_archive_dir

    if explicit:
        return Path(explicit)
    recorded, archived = _recorded_folder(db_file)
    if recorded:
        return Path(recorded)
    return Path(default_archive_dir(None if archived else db_file))


def _recorded_folder(db_file: str) -> tuple[str | None, bool]:
    """(the folder recorded in the database, whether its manifest lists files); read-only, no migration."""
    if not os.path.exists(db_file):
        return None, False
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(db_file))}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None, False
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        row = conn.execute("SELECT folder FROM archive_identity").fetchone() if "archive_identity" in tables else None
        archived = "archive_files" in tables and conn.execute("SELECT 1 FROM archive_files LIMIT 1").fetchone()
        return (row[0] if row else None), bool(archived)
    except sqlite3.Error:  # unreadable: the command that opens it says why
        return None, False
    finally:
        conn.close()


# --------------------------------------------------------------------------- recovery


def owned_hosts(conn: sqlite3.Connection, own_host: str | None = None) -> set[str]:
    """Hosts whose archive this database keeps: its manifest is the truth for them."""
    hosts = {row[0] for row in conn.execute("SELECT DISTINCT host FROM archive_files")}
    hosts |= {row[0] for row in conn.execute("SELECT DISTINCT host FROM gpus")}
    if own_host:
        hosts.add(own_host)
    return hosts


def manifest_paths(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[0] for row in conn.execute("SELECT path FROM archive_files WHERE table_name = ?", (table,))}


def recover(conn: sqlite3.Connection, archive_dir: Path, *, own_host: str,
            result: ArchiveResult | None = None) -> ArchiveResult:
    """Finish what an interrupted run of this database left: temp files, orphan part files, missing files.

    Only files whose name carries this database's id are touched (#12.3):
    a file of another database sharing the folder is listed in that one's
    manifest, and setting it aside would take its rows out of its history.
    """
    result = result or ArchiveResult()
    hosts = owned_hosts(conn, own_host)
    mine = owned_suffix(database_id(conn))
    for spec, res in _resolved(conn, []):
        table_dir = archive_dir / spec.table
        listed = manifest_paths(conn, spec.table)
        others = 0
        for host in sorted(hosts):
            folder = table_dir / host_dir(host)
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("date=*/.*.tmp")):
                if not path.name.endswith(mine + ".tmp"):
                    others += 1
                    continue
                path.unlink(missing_ok=True)
                result.removed_tmp.append(str(path))
            for path in sorted(folder.glob("date=*/*.parquet")):
                relative = path.relative_to(archive_dir).as_posix()
                if relative in listed:
                    continue
                if path.name.endswith(mine):
                    _adopt_or_reject(conn, archive_dir, res, path, host, result)
                else:
                    others += 1
        if others:
            result.notes.append(f"{table_dir}: {others} file{'s' if others != 1 else ''} not written by this "
                                f"database left alone (another database's, or older than database ids in names)")
        for relative in sorted(listed):
            if not (archive_dir / relative).exists():
                result.problems.append(f"{archive_dir / relative}: archived file is missing "
                                       f"(its rows are gone from the history)")
    return result


def _adopt_or_reject(conn, archive_dir: Path, res: Resolved, path: Path, host: str,
                     result: ArchiveResult) -> None:
    """An orphan: adopt it if every row it holds is still in the database, else set it aside."""
    import polars as pl

    spec = res.spec
    try:
        frame = pl.read_parquet(path)
        missing = set(res.file_schema()) - set(frame.columns)
        if missing:
            raise ValueError(f"columns missing: {', '.join(sorted(missing))}")
        frame = frame.with_columns(pl.col(spec.ts_name).dt.epoch("ms").alias(spec.time_column))
        if frame.is_empty() or frame.get_column("host").unique().to_list() != [host]:
            raise ValueError("empty, or rows of another host")
    except Exception as err:  # noqa: BLE001 - any unreadable file is set aside, never deleted
        _reject(path, f"unreadable ({type(err).__name__}: {err})", result)
        return
    key_cols, join_conds = _key_join(res)
    keys = frame.select(key_cols).rows()
    times = frame.get_column(spec.time_column)
    day_ms = int(times.min()) // DAY_MS * DAY_MS
    join = " JOIN gpus g ON g.id = t.gpu_id" if res.joins_gpus else ""
    matched_from = f"{spec.table} t{join} JOIN temp.archive_keys k ON {join_conds}"
    with write(conn):
        conn.execute(f"CREATE TEMP TABLE archive_keys ({', '.join(key_cols)})")
        try:
            conn.executemany(f"INSERT INTO temp.archive_keys VALUES ({', '.join('?' * len(key_cols))})", keys)
            found = conn.execute(f"SELECT COUNT(*) FROM {matched_from}").fetchone()[0]
            if found == len(keys) == frame.height:
                pk = ", ".join(res.pk) if res.pk else "rowid"
                t_pk = ", ".join(f"t.{c}" for c in res.pk) if res.pk else "t.rowid"
                deleted = conn.execute(
                    f"DELETE FROM {spec.table} WHERE ({pk}) IN (SELECT {t_pk} FROM {matched_from})"
                ).rowcount
                if deleted == found:
                    _record(conn, spec.table, host, day_ms, path.relative_to(archive_dir), found,
                            int(times.min()), int(times.max()), path.stat().st_size)
                    result.adopted.append(str(path))
                    return
                raise RuntimeError(f"{path}: deleted {deleted} rows, expected {found}")
        finally:
            conn.execute("DROP TABLE temp.archive_keys")
    _reject(path, f"{found} of its {frame.height} rows are in the database", result)


def _key_join(res: Resolved) -> tuple[list[str], str]:
    """History columns that identify a row, and their join to the table (t) and gpus (g)."""
    pk = list(res.pk) or [c.name for c in res.columns if c.origin == "table" and c.name != "host"]
    # Primary keys are never NULL in practice and "=" lets SQLite use the key.
    op = "=" if res.pk else "IS"
    cols: list[str] = []
    conds: list[str] = []
    for name in pk:
        if name == "gpu_id":
            cols += ["host", "gpu_uuid"]
            conds += ["k.host = g.host", "k.gpu_uuid = g.uuid"]
        else:
            cols.append(name)
            conds.append(f"k.{name} {op} t.{name}")
    if "host" not in cols and res.host_sql != "?":
        cols.append("host")
        conds.append(f"k.host = {res.host_sql}")
    return cols, " AND ".join(conds)


def _reject(path: Path, why: str, result: ArchiveResult) -> None:
    target = path.with_name(path.name + ".rejected")
    os.rename(path, target)
    fsync_dir(path.parent)
    result.rejected.append(str(target))
    result.problems.append(f"{path}: not in the archive manifest and {why}; set aside as {target.name}")


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
