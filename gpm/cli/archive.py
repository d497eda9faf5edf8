"""``gpm archive``: move old rows into Parquet (library: gpm.store.archive)."""

from __future__ import annotations

import sys

import click

from gpm import archiving
from gpm.cli.context import AppContext, pass_app
from gpm.errors import EXIT_FAILURE
from gpm.humanize import fmt_bytes
from gpm.locks import exclusive_lock, lock_path
from gpm.store import archive as store_archive
from gpm.store.archive_files import day_name


@click.command(short_help='Move old rows into Parquet and shrink the database.')
@click.option("--older-than", "older_than", type=click.IntRange(min=1, max=36500), metavar="DAYS",
              help="Move whole UTC days older than DAYS days (default: [storage] retention_days, 7).")
@click.option("--archive-dir", type=click.Path(file_okay=False),
              help="Parquet archive folder (default: [storage] archive_dir, else the database's own: "
                   "docs/archive.md).")
@click.option("--dry-run", is_flag=True, help="Say what would move (rows and days per table); change nothing.")
@click.option("--wait", "wait_secs", type=click.FloatRange(min=0, max=3600), default=5.0, show_default=True,
              help="Seconds to wait for another running `gpm archive` before giving up (exit 75).")
@pass_app
def archive(app: AppContext, older_than: int | None, archive_dir: str | None, dry_run: bool,
            wait_secs: float) -> None:
    """Move rows older than the retention into Parquet files and shrink the database.

    First brings `gpm report`'s hourly cache up to date, so that reports
    over archived days stay fast.

    Covers gpu_metrics and every other time-series table the database has.
    Files go to ARCHIVE_DIR/<table>/host=<host>/date=<YYYY-MM-DD>/ (hive
    partitioning, zstd); each run adds new part files and never rewrites old
    ones. Crash-safe: a killed run loses and duplicates nothing, and the next
    run finishes its work. Silent on success unless on a terminal or -v; a
    progress bar on a terminal.

    \b
    Exit codes: 0 ok; 1 something needs a look (message on stderr; the rest
    was archived); 2 usage or config error; 75 another `gpm archive` is running.
    """
    cfg = app.config({
        "storage.retention_days": (older_than, "--older-than"),
        "storage.archive_dir": (archive_dir, "--archive-dir"),
    })
    cutoff = store_archive.cutoff_ms(cfg["storage.retention_days"])
    loud = app.verbose > 0 or (not app.quiet and sys.stdout.isatty())
    # The database first: a read-only or damaged one is named as such, not as its lock file.
    conn = app.open_db()
    try:
        with exclusive_lock(lock_path(cfg.db_path, "archive"), job="archive", wait_secs=wait_secs):
            if dry_run:
                _dry_run(app, store_archive.plan(conn, cutoff=cutoff, own_host=cfg.hostname), cutoff)
                return
            bar = None
            if not app.quiet and sys.stderr.isatty():
                total = sum(p.rows for p in store_archive.plan(conn, cutoff=cutoff, own_host=cfg.hostname))
                if total:
                    bar = click.progressbar(length=total, label="archiving", file=sys.stderr)
            try:
                result = archiving.archive(conn, cfg.archive_dir, cutoff=cutoff, own_host=cfg.hostname,
                                           busy_threshold=cfg["report.busy_threshold_percent"],
                                           progress=bar.update if bar else None)
            finally:
                if bar is not None:
                    bar.render_finish()
    finally:
        conn.close()
    if loud:
        _summary(app, result, cfg.archive_dir)
    if app.verbose:
        for note in result.notes:
            click.echo(f"gpm: {note}", err=True)
    for warning in result.warnings:
        app.warn(warning)
    for problem in result.problems:
        click.echo(f"gpm: {problem}", err=True)
    if result.problems:
        sys.exit(EXIT_FAILURE)


def _dry_run(app: AppContext, rows, cutoff: int) -> None:
    by_table: dict[str, tuple[int, set[str]]] = {}
    for row in rows:
        count, days = by_table.get(row.table, (0, set()))
        days.add(row.day)
        by_table[row.table] = (count + row.rows, days)

    click.echo(f"would archive rows before {day_name(cutoff)} (UTC):")
    if not by_table:
        click.echo("  nothing")
    for table, (count, days) in by_table.items():
        span = f"{min(days)} .. {max(days)}" if len(days) > 1 else min(days)
        click.echo(f"  {table}: {count} rows, {len(days)} days ({span})")


def _summary(app: AppContext, result, archive_dir) -> None:
    for table in result.tables.values():
        if table.rows:
            click.echo(f"{table.table}: archived {table.rows} rows of {len(table.days)} days "
                       f"into {table.files} files")
    if not result.rows:
        click.echo("nothing to archive")
    for path in result.adopted:
        click.echo(f"adopted {path} (left by an interrupted run)")
    click.echo(f"database {fmt_bytes(result.db_bytes_before)} -> {fmt_bytes(result.db_bytes_after)}"
               f" ({result.reclaim}); archive in {archive_dir}")
