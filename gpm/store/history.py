"""All of a table's history as one Polars LazyFrame: SQLite (recent) + Parquet (archived).

``scan("gpu_metrics", db_path=..., archive_dir=..., since_ms=..., until_ms=...)``
is what the report, `gpm export` and anyone scripting gpm call. The columns
are the same whether a row is still in SQLite or already in Parquet (see
``gpm.store.timeseries`` for how they are derived). For ``gpu_metrics``:

    host, gpu_uuid, gpu_index (Int16), gpu_name, ts (Datetime ms UTC), ts_ms (Int64),
    source ("nvml" | "nvidia-smi"), status (null = ok), utilization_gpu_percent (Int8),
    utilization_memory_percent (Int8), memory_used_bytes, memory_total_bytes,
    temperature_celsius (Int16), power_milliwatts (Int32), power_limit_milliwatts (Int32),
    energy_millijoules, sm_clock_mhz (Int16), memory_clock_mhz (Int16), fan_percent (Int8),
    pstate (Int8), throttle_reasons (Int64 bitmask)

No row is seen twice, even while `gpm archive` runs: the manifest and the
recent rows are read in one SQLite read transaction (one snapshot), and for
the hosts this database owns only part files listed in that manifest are
read. Hosts it does not own (archives copied from other machines into the
same folder) are read from every part file they have. Rows are not sorted.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from gpm.store.archive_files import host_of, manifest_paths, owned_hosts
from gpm.store.db import connect
from gpm.store.timeseries import DAY_MS, TimeSeries, lookup, resolve, table_exists

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)
# A missing part file is reported once per process: a report scans a table
# several times (once per span it reads), and said it each time (#13.8).
_reported_missing: set[Path] = set()


def scan(
    table: str,
    *,
    conn: sqlite3.Connection | None = None,
    db_path: str | os.PathLike | None = None,
    archive_dir: str | os.PathLike | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    hosts: Iterable[str] | None = None,
    own_host: str | None = None,
    recent: bool = True,
) -> "pl.LazyFrame":
    """Rows of ``table`` with ``since_ms <= time < until_ms`` from both stores.

    ``conn`` or ``db_path`` name the database (neither: the archive alone);
    ``archive_dir`` may hold several hosts' archives (neither: SQLite alone).
    ``hosts`` keeps only those hosts. ``own_host`` is the host of tables that
    have no host of their own (default: this machine's name).
    ``recent=False`` leaves out the database's own rows (the archived rows
    alone, still chosen by the database's manifest), for a caller that
    reduces those rows in SQLite itself, e.g. `gpm report`.
    """
    import polars as pl

    spec = lookup(table)
    wanted = set(hosts) if hosts is not None else None
    own_host = own_host or socket.gethostname()
    close = False
    if conn is None and db_path is not None:
        conn = connect(db_path, readonly=True)
        close = True
    try:
        if conn is not None and table_exists(conn, spec.table):
            res = resolve(conn, spec)
            schema = res.schema()
            rows, listed, owned = _read_db(conn, res, since_ms, until_ms, wanted, own_host, recent)
        else:
            schema, rows, listed, owned = None, None, {}, set()
    finally:
        if close:
            conn.close()
    files = _part_files(Path(archive_dir), spec, since_ms, until_ms, wanted, owned, listed) if archive_dir else []
    if schema is None:
        schema = _schema_from_files(spec, files)
    frames = [] if rows is None else [rows.lazy()]
    if files:
        archived = _time_filter(scan_files(table, files, schema), spec, since_ms, until_ms)
        if wanted is not None:
            archived = archived.filter(pl.col("host").is_in(sorted(wanted)))
        frames.append(archived)
    if not frames:
        return pl.LazyFrame(schema=schema)
    return pl.concat(frames, how="vertical")


def scan_files(table: str, files: list[str], schema: "dict[str, pl.DataType] | None" = None) -> "pl.LazyFrame":
    """The rows of the given part files of ``table``, in the history reader's columns."""
    import polars as pl

    spec = lookup(table)
    if schema is None:
        schema = _schema_from_files(spec, files)
    file_schema = {n: t for n, t in schema.items() if n != spec.time_column}
    return (
        pl.scan_parquet(files, schema=file_schema, hive_partitioning=False,
                        missing_columns="insert", extra_columns="ignore")
        .with_columns(pl.col(spec.ts_name).dt.epoch("ms").alias(spec.time_column))
        .select([pl.col(n).cast(t) for n, t in schema.items()])
    )


def _read_db(conn, res, since_ms, until_ms, wanted, own_host, with_rows=True):
    """Recent rows, the manifest and the owned hosts, all from one snapshot."""
    spec = res.spec
    where = res.where(host=False, cutoff=False)
    params = [since_ms if since_ms is not None else -(2**63), until_ms if until_ms is not None else 2**63 - 1]
    in_tx = conn.in_transaction
    if not in_tx:
        conn.execute("BEGIN")
    try:
        has_manifest = table_exists(conn, "archive_files")
        listed = manifest_paths(conn, spec.table) if has_manifest else set()
        owned = owned_hosts(conn, own_host) if has_manifest else set()
        recent = res.read(conn, where, params, own_host) if with_rows else None
    finally:
        if not in_tx:
            conn.execute("COMMIT")
    if wanted is not None and recent is not None:
        import polars as pl

        recent = recent.filter(pl.col("host").is_in(sorted(wanted)))
    return recent, listed, owned


def _time_filter(frame, spec: TimeSeries, since_ms, until_ms):
    import polars as pl

    if since_ms is not None:
        frame = frame.filter(pl.col(spec.time_column) >= since_ms)
    if until_ms is not None:
        frame = frame.filter(pl.col(spec.time_column) < until_ms)
    return frame


def _part_files(archive_dir: Path, spec: TimeSeries, since_ms, until_ms, wanted, owned: set[str],
                listed: set[str]) -> list[str]:
    """Part files that may hold rows in range: every file of a foreign host, listed ones of owned hosts."""
    table_dir = archive_dir / spec.table
    if not table_dir.is_dir():
        return []
    out = []
    for host_folder in sorted(table_dir.glob("host=*")):
        host = host_of(host_folder.name)
        if wanted is not None and host not in wanted:
            continue
        for day_folder in sorted(host_folder.glob("date=*")):
            try:
                start = (date.fromisoformat(day_folder.name.removeprefix("date="))
                         - date(1970, 1, 1)).days * DAY_MS
            except ValueError:
                continue
            if (since_ms is not None and start + DAY_MS <= since_ms) or (
                    until_ms is not None and start >= until_ms):
                continue
            for path in sorted(day_folder.glob("*.parquet")):
                if host in owned and path.relative_to(archive_dir).as_posix() not in listed:
                    log.info("%s: not in the archive manifest (yet); skipped", path)
                    continue
                out.append(str(path))
    if owned:
        present = {Path(p).relative_to(archive_dir).as_posix() for p in out}
        for relative in sorted(listed - present):
            missing = archive_dir / relative
            if missing not in _reported_missing and not missing.exists():
                _reported_missing.add(missing)
                log.warning("%s: archived file is missing", missing)
    return out


def _schema_from_files(spec: TimeSeries, files: list[str]) -> "dict[str, pl.DataType]":
    """Without a database: the union of the files' columns, the integer time column added."""
    import polars as pl

    schema: dict[str, pl.DataType] = {}
    for path in files:
        for name, dtype in pl.read_parquet_schema(path).items():
            schema.setdefault(name, dtype)
            if name == spec.ts_name:
                schema.setdefault(spec.time_column, pl.Int64())
    if not schema:
        schema = {"host": pl.String(), spec.ts_name: pl.Datetime("ms", "UTC"), spec.time_column: pl.Int64()}
    return schema
