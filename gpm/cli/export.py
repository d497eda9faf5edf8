"""``gpm export``: a table's history from SQLite and the Parquet archive, to a file or stdout."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import click

from gpm.cli.context import AppContext, pass_app
from gpm.cli.options import time_range_options
from gpm.outfile import check_output, replacing
from gpm.store.db import utils_db
from gpm.store.history import scan
from gpm.store.timeseries import BY_TABLE

FORMATS = ("csv", "parquet", "jsonl")


@click.command(short_help="Export a table's history (SQLite + Parquet) as CSV, Parquet or JSONL.")
@click.option("--table", "-t", required=True, metavar="NAME",
              help="gpu_metrics or another time-series table (both stores); any other table or view "
                   "of the database (SQLite only), e.g. gpus.")
@time_range_options(since_default="the first row", until_default="the last row")
@click.option("--format", "-f", "fmt", type=click.Choice(FORMATS),
              help="Output format (default: from --output's extension, else csv).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              help="File to write (default: stdout; parquet needs a file).")
@click.option("--archive-dir", type=click.Path(file_okay=False),
              help="Parquet archive to read, possibly with several hosts' archives "
                   "(default: [storage] archive_dir).")
@click.option("--host", "hosts", multiple=True, metavar="HOST", help="Only these hosts (repeatable).")
@pass_app
def export(app: AppContext, table: str, since: int | None, until: int | None, fmt: str | None,
           output: str | None, archive_dir: str | None, hosts: tuple[str, ...]) -> None:
    """Write a table's rows over a time range, recent and archived together.

    Time-series tables come back with the columns of the history reader
    (timestamps as ISO 8601 UTC in CSV and JSONL, `ts_ms` alongside), sorted
    by host and time, each row once whether it is still in SQLite or already
    archived. Times follow one rule in every command: a date or datetime
    without a zone is local time (docs/report.md, "Times").

    \b
    Exit codes: 0 ok; 1 an error (unreadable file); 2 usage, or no such
    table (the closest name is suggested).
    """
    import polars as pl

    cfg = app.config({"storage.archive_dir": (archive_dir, "--archive-dir")})
    if output == "-":
        output = None
    if fmt is None:
        suffix = Path(output).suffix.lstrip(".").lower() if output else ""
        fmt = {"ndjson": "jsonl", "json": "jsonl"}.get(suffix, suffix)
        fmt = fmt if fmt in FORMATS else "csv"
    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet needs --output FILE")
    if output is not None:
        check_output(Path(output))
    db_path = cfg.db_path if cfg.db_path.exists() else None
    if table in BY_TABLE:
        spec = BY_TABLE[table]
        frame = scan(table, db_path=db_path, archive_dir=cfg.archive_dir, since_ms=since, until_ms=until,
                     hosts=hosts or None, own_host=cfg.hostname)
        order = ["host", spec.time_column, *(c for c in ("gpu_uuid",) if c in frame.collect_schema())]
        frame = frame.sort(order, maintain_order=True).collect()
    else:
        if db_path is None:  # no database to list: still catch a misspelt time-series table
            _check_table(table, set(BY_TABLE), db_path)
        frame = _plain_table(app, table, since, until, hosts)
    if fmt == "csv":
        frame = frame.with_columns(pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ"))
    if output is None:
        _write(frame, fmt, sys.stdout.buffer)  # a closed pipe is main()'s to handle
        return
    with replacing(output) as sink:  # whole or not at all: a full disk leaves no empty file
        _write(frame, fmt, sink)


def _write(frame, fmt: str, sink) -> None:
    if fmt == "parquet":
        frame.write_parquet(sink, compression="zstd")
    elif fmt == "csv":
        frame.write_csv(sink)
    else:
        frame.write_ndjson(sink)
    sink.flush()


def _check_table(table: str, known: set[str], db_path) -> None:
    """A usage error naming the closest known table (``-t gpu_metric``: did you
    mean 'gpu_metrics'?), or all of them (#13.10). With no database to list,
    only a close match to a time-series table is said; the caller goes on."""
    if table in known:
        return
    close = difflib.get_close_matches(table, sorted(known), n=1, cutoff=0.6)
    if close:
        raise click.UsageError(f"--table {table}: no such table (did you mean '{close[0]}'?)")
    if db_path is not None:
        raise click.UsageError(f"--table {table}: no such table or view in {db_path} "
                               f"(known: {', '.join(sorted(known))})")


def _plain_table(app: AppContext, table: str, since, until, hosts):
    """Any other table or view, from SQLite alone, filtered on ts_ms/host when it has them."""
    import polars as pl

    conn = app.open_db(readonly=True)
    try:
        db = utils_db(conn)
        _check_table(table, {*db.table_names(), *db.view_names(), *BY_TABLE}, app.config().db_path)
        columns = [c.name for c in db[table].columns]
        clauses, params = [], []
        if since is not None or until is not None:
            if "ts_ms" not in columns:
                raise click.UsageError(f"{table} has no ts_ms column: --since/--until do not apply")
            if since is not None:
                clauses.append("ts_ms >= ?")
                params.append(since)
            if until is not None:
                clauses.append("ts_ms < ?")
                params.append(until)
        if hosts:
            if "host" not in columns:
                raise click.UsageError(f"{table} has no host column: --host does not apply")
            clauses.append(f"host IN ({', '.join('?' * len(hosts))})")
            params += list(hosts)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        cursor = conn.execute(f'SELECT * FROM "{table}"{where}', params)
        names = [d[0] for d in cursor.description]
        return pl.DataFrame(cursor.fetchall(), schema=names, orient="row", infer_schema_length=None)
    finally:
        conn.close()
