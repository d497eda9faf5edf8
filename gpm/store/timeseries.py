"""The time-series tables: how each is archived to Parquet and read back as history.

One ``TimeSeries`` entry per table in ``TIME_SERIES``; `gpm archive`, the
history reader (``gpm.store.history.scan``) and `gpm export` all work from
it. Columns are read from the database itself (``PRAGMA table_info``) when a
table is used, so an entry only says what cannot be guessed: the time column,
when a row is finished, and which integers are small. A table that does not
exist in a database is skipped.

Every table becomes the same shape of history frame:

* ``host`` first: the table's own ``host`` column, else the host of its
  ``gpu_id`` (per-database ids mean nothing elsewhere, so ``gpu_id`` is
  replaced by ``host, gpu_uuid, gpu_index, gpu_name`` from ``gpus``), else the
  configured host name;
* columns an entry takes from ``gpus`` (``gpu_columns``) where the table has
  none of its own, placed as if they were the table's: ``gpu_metrics`` keeps
  ``memory_total_bytes`` after ``memory_used_bytes`` although SQLite stores
  it once per GPU;
* the time column as a timestamp, named without ``_ms`` (``ts_ms`` -> ``ts``,
  ``first_seen_ms`` -> ``first_seen``), ``Datetime("ms", "UTC")``;
* the time column itself (Unix ms, ``Int64``);
* then the other columns in table order, integer codes (``codes``) decoded
  to names, ``*_ms`` kept as integers.

Parquet files hold the same columns except the integer time column, which the
reader derives from the timestamp (the file stores each instant once).

Adding a table (e.g. the LLM request log) is one entry::

    TimeSeries("llm_requests", time_column="ts_ms", small_ints={"status_code": "Int16"})

``age_column`` decides when a row is old enough (default: the time column);
``ready`` is an SQL condition a row must also meet, e.g. a process run that
is still open must not move: ``ready="ended_ms IS NOT NULL"``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from gpm.errors import GpmError
from gpm.store.schema_core import SOURCE_NAMES

if TYPE_CHECKING:  # polars is imported only by the commands that use it
    import polars as pl

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TimeSeries:
    """One archivable table. See the module docstring."""

    table: str
    time_column: str = "ts_ms"
    age_column: str | None = None
    ready: str | None = None
    # column -> polars integer type name ("Int8", "Int16", "Int32"); others stay Int64.
    small_ints: Mapping[str, str] = field(default_factory=dict)
    # column -> {code: name}: stored as small integers, read back as names.
    codes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    # Parquet sort order after host (GPU first where there is one, then time).
    sort_keys: tuple[str, ...] = ()
    # (column of gpus, history column it follows, polars type): per-row history
    # columns that SQLite keeps once per GPU; Parquet keeps them per row (free
    # after dictionary encoding) so files stand alone.
    gpu_columns: tuple[tuple[str, str, str], ...] = ()

    @property
    def age(self) -> str:
        return self.age_column or self.time_column

    @property
    def ts_name(self) -> str:
        return self.time_column[:-3] if self.time_column.endswith("_ms") else self.time_column + "_ts"


TIME_SERIES: tuple[TimeSeries, ...] = (
    TimeSeries(
        "gpu_metrics",
        small_ints={
            "utilization_gpu_percent": "Int8", "utilization_memory_percent": "Int8",
            "temperature_celsius": "Int16", "fan_percent": "Int8", "pstate": "Int8",
            "sm_clock_mhz": "Int16", "memory_clock_mhz": "Int16",
            "power_milliwatts": "Int32", "power_limit_milliwatts": "Int32",
        },
        codes={"source": SOURCE_NAMES},
        sort_keys=("gpu_uuid", "ts"),
        gpu_columns=(("memory_total_bytes", "memory_used_bytes", "Int64"),),
    ),
    # issue 3: one row per process run; a run still being seen is not archived.
    TimeSeries("process_events", time_column="first_seen_ms", age_column="last_seen_ms",
               sort_keys=("gpu_uuid", "first_seen")),
    # issue 4: the Ollama request log and the sessions built from it.
    TimeSeries("llm_requests", time_column="ts_ms"),
    # A session still loaded must not move: it is closed (unloaded_at_ms) later.
    TimeSeries("llm_sessions", time_column="loaded_at_ms", age_column="last_seen_ms",
               ready="unloaded_at_ms IS NOT NULL"),
    TimeSeries("llm_events", time_column="ts_ms"),
)

BY_TABLE: dict[str, TimeSeries] = {t.table: t for t in TIME_SERIES}

# History columns taken from ``gpus`` for tables keyed by gpu_id: (name, gpus column, type).
GPU_IDENTITY = (("host", "host", "String"), ("gpu_uuid", "uuid", "String"),
                ("gpu_index", "gpu_index", "Int16"), ("gpu_name", "name", "String"))
FETCH_ROWS = 100_000


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # polars type name of the history column
    origin: str  # "table", "gpus", "own_host" or "time" (the timestamp derived from the time column)
    in_file: bool = True
    source: str = ""  # the gpus column of a "gpus" column


@dataclass(frozen=True)
class Resolved:
    """A ``TimeSeries`` bound to one database's actual columns."""

    spec: TimeSeries
    columns: tuple[Column, ...]
    raw: tuple[tuple[str, str], ...]  # the table's columns and their storage types, in table order
    host_sql: str  # where a row's host is: "g.host" (via gpu_id), "t.host" or "?" (the configured host)
    pk: tuple[str, ...]  # the table's primary key columns

    @property
    def table(self) -> str:
        return self.spec.table

    @property
    def joins_gpus(self) -> bool:
        return any(name == "gpu_id" for name, _ in self.raw)

    def schema(self) -> "dict[str, pl.DataType]":
        return {c.name: _dtype(c.dtype) for c in self.columns}

    def file_schema(self) -> "dict[str, pl.DataType]":
        return {c.name: _dtype(c.dtype) for c in self.columns if c.in_file}

    def where(self, *, host: bool, cutoff: bool, ready: bool = True) -> str:
        """A WHERE clause on the bare table: ``time >= ? AND time < ?`` then
        ``[age < ?] [host = ?] [ready]`` in that parameter order."""
        spec = self.spec
        parts = [f"{spec.time_column} >= ?", f"{spec.time_column} < ?"]
        if cutoff:
            parts.append(f"{spec.age} < ?")
        if host and self.host_sql == "g.host":
            parts.append("gpu_id IN (SELECT id FROM gpus WHERE host = ?)")
        elif host and self.host_sql == "t.host":
            parts.append("host = ?")
        if ready and spec.ready:
            parts.append(f"({spec.ready})")
        return " AND ".join(parts)

    def raw_schema(self) -> "dict[str, pl.DataType]":
        """The table's own columns as they cross from SQLite, in table order."""
        return {name: _dtype(dtype) for name, dtype in self.raw}

    def read(self, conn: sqlite3.Connection, where: str, params: list, own_host: str) -> "pl.DataFrame":
        """The rows matching ``where`` as a history frame.

        Only the table's own columns cross from SQLite into Python (the
        costly part); GPU identity, decoded codes and timestamps are added
        by Polars.
        """
        return self.to_history(self.read_raw(conn, where, params), own_host, self.gpus(conn))

    def read_raw(self, conn: sqlite3.Connection, where: str, params: list) -> "pl.DataFrame":
        """The table's own columns of the rows matching ``where`` (``raw_schema``).

        A table of integers and text crosses as one JSON array per column,
        which Polars decodes: a day of 8 GPUs at 1 Hz is 11 million values,
        and making each a Python object was two thirds of `gpm archive`'s
        time (#14). Both ways the read is one statement, one snapshot.
        """
        import polars as pl

        raw_schema = self.raw_schema()
        if all(dtype in ("Int64", "String") for _, dtype in self.raw):
            arrays = ", ".join(f"json_group_array({name})" for name in raw_schema)
            try:
                row = conn.execute(f"SELECT {arrays} FROM {self.spec.table} WHERE {where}", params).fetchone()
                return pl.DataFrame({name: pl.Series([text]).str.json_decode(pl.List(dtype)).explode()
                                     for text, (name, dtype) in zip(row, raw_schema.items())})
            except (sqlite3.DataError, pl.exceptions.ComputeError):
                pass  # an array over SQLite's string limit (a billion bytes), text in an integer column
        cursor = conn.execute(f"SELECT {', '.join(raw_schema)} FROM {self.spec.table} WHERE {where}", params)
        chunks = []
        while rows := cursor.fetchmany(FETCH_ROWS):
            chunks.append(pl.DataFrame(rows, schema=raw_schema, orient="row"))
        return pl.concat(chunks) if chunks else pl.DataFrame(schema=raw_schema)

    def gpu_sql(self) -> str | None:
        """The query for the ``gpus`` columns ``to_history`` joins (None for a table without ``gpu_id``)."""
        if not self.joins_gpus:
            return None
        wanted = [c for c in self.columns if c.origin == "gpus"]
        return f"SELECT id AS gpu_id, {', '.join(f'{c.source} AS {c.name}' for c in wanted)} FROM gpus"

    def gpu_schema(self) -> "dict[str, pl.DataType]":
        return {"gpu_id": _dtype("Int64"), **{c.name: _dtype(c.dtype) for c in self.columns if c.origin == "gpus"}}

    def gpus(self, conn: sqlite3.Connection) -> "pl.DataFrame | None":
        """The ``gpus`` frame ``to_history`` joins, read now (after the rows that refer to it)."""
        import polars as pl

        sql = self.gpu_sql()
        if sql is None:
            return None
        return pl.DataFrame(conn.execute(sql).fetchall(), schema=self.gpu_schema(), orient="row")

    def to_history(self, frame: "pl.DataFrame", own_host: str, gpus: "pl.DataFrame | None") -> "pl.DataFrame":
        """The table's raw columns (``raw_schema``) as the history frame; ``gpus`` as ``gpus()`` gives it."""
        import polars as pl

        if self.joins_gpus:
            frame = frame.join(gpus, on="gpu_id", how="left")
        if self.host_sql == "?":
            frame = frame.with_columns(host=pl.lit(own_host, dtype=pl.String))
        spec = self.spec
        exprs = []
        for col in self.columns:
            if col.origin == "time":
                expr = pl.col(spec.time_column).cast(pl.Datetime("ms", "UTC"))
            elif col.name in spec.codes:
                mapping = {int(k): v for k, v in spec.codes[col.name].items()}
                expr = pl.col(col.name).replace_strict(mapping, default=None, return_dtype=pl.String)
            else:
                expr = pl.col(col.name).cast(_dtype(col.dtype))
            exprs.append(expr.alias(col.name))
        return frame.select(exprs)


def _dtype(name: str) -> "pl.DataType":
    import polars as pl

    if name == "Datetime":
        return pl.Datetime("ms", "UTC")
    return getattr(pl, name)()


_AFFINITY = (("INT", "Int64"), ("CHAR", "String"), ("CLOB", "String"), ("TEXT", "String"),
             ("BLOB", "Binary"), ("REAL", "Float64"), ("FLOA", "Float64"), ("DOUB", "Float64"))


def _declared_dtype(declared: str) -> str:
    """SQLite's column affinity rules, as polars types (NUMERIC and untyped -> Float64)."""
    upper = declared.upper()
    for needle, dtype in _AFFINITY:
        if needle in upper:
            return dtype
    return "Binary" if not upper else "Float64"


def table_exists(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    return row is not None


def resolve(conn: sqlite3.Connection, spec: TimeSeries) -> Resolved:
    """Bind ``spec`` to the table's columns in this database.

    Raises ``GpmError`` when the table lacks a column its entry names (an
    entry out of step with its table's migrations).
    """
    info = conn.execute(f"PRAGMA table_info({spec.table})").fetchall()
    if not info:
        raise GpmError(f"table {spec.table} does not exist in this database")
    names = [row[1] for row in info]
    for needed in {spec.time_column, spec.age}:
        if needed not in names:
            raise GpmError(f"table {spec.table} has no column {needed} (archive entry out of date)")
    joins_gpus = "gpu_id" in names
    columns: list[Column] = []
    if "host" in names:
        host_sql = "t.host"
        columns.append(Column("host", "String", "table"))
    elif joins_gpus:
        host_sql = "g.host"
    else:
        host_sql = "?"
        columns.append(Column("host", "String", "own_host"))
    if joins_gpus:
        identity = GPU_IDENTITY if host_sql == "g.host" else GPU_IDENTITY[1:]
        columns += [Column(n, dtype, "gpus", source=col) for n, col, dtype in identity]
    raw = tuple((row[1], _declared_dtype(row[2] or "")) for row in info)
    columns.append(Column(spec.ts_name, "Datetime", "time"))
    columns.append(Column(spec.time_column, "Int64", "table", in_file=False))
    for name, dtype in raw:
        if name in ("gpu_id", "host", spec.time_column):
            continue
        if name in spec.codes:
            dtype = "String"
        elif dtype == "Int64" and name in spec.small_ints:
            dtype = spec.small_ints[name]
        columns.append(Column(name, dtype, "table"))
        if joins_gpus:
            columns += [Column(col, t, "gpus", source=col) for col, after, t in spec.gpu_columns
                        if after == name and col not in names]
    pk = tuple(row[1] for row in sorted(info, key=lambda r: r[5]) if row[5] > 0)
    return Resolved(spec, tuple(columns), raw, host_sql, pk)


def available(conn: sqlite3.Connection) -> list[TimeSeries]:
    """The registered tables this database has."""
    return [spec for spec in TIME_SERIES if table_exists(conn, spec.table)]


def lookup(table: str) -> TimeSeries:
    try:
        return BY_TABLE[table]
    except KeyError:
        known = ", ".join(sorted(BY_TABLE))
        raise GpmError(f"{table}: not a time-series table (known: {known})") from None
