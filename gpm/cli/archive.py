"""``gpm archive``: move old rows into Parquet (library: gpm.store.archive)."""

from __future__ import annotations

import sys

import click

from gpm.cli.context import AppContext, pass_app
from gpm.errors import EXIT_FAILURE


@click.command()
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
    from gpm.locks import exclusive_lock, lock_path
    from gpm.store import archive as store_archive

    cfg = app.config({
        "storage.retention_days": (older_than, "--older-than"),
        "storage.archive_dir": (archive_dir, "--archive-dir"),
    })
    cutoff = store_archive.cutoff_ms(cfg["storage.retention_days"])
    loud = app.verbose > 0 or (not app.quiet and sys.stdout.isatty())
    # The database first: a read-only or damaged one is named as such, not as its lock file.
    conn = app.open_db()
    try:
        with exclusive_lock(lock_path(cfg.db_path, "archive"), job="archive", wait_secs=wait_secs) as lock:
            if dry_run:
                _dry_run(app, store_archive.plan(conn, cutoff=cutoff, own_host=cfg.hostname), cutoff)
                return
            from gpm.gpu.model import now_ms
            from gpm.store.reductions import refresh

            # Reduce the hours about to move while they are still in SQLite:
            # `gpm report` then reads them from report_minutes, not from Parquet.
            refresh(conn, cfg["report.busy_threshold_percent"], now_ms=now_ms())
            bar = None
            if not app.quiet and sys.stderr.isatty():
                total = sum(p.rows for p in store_archive.plan(conn, cutoff=cutoff, own_host=cfg.hostname))
                if total:
                    bar = click.progressbar(length=total, label="archiving", file=sys.stderr)
            try:
                result = store_archive.archive(conn, cfg.archive_dir, cutoff=cutoff, own_host=cfg.hostname,
                                               progress=bar.update if bar else None, lock_fd=lock.fd,
                                               after_move=_reduce_days(app, cfg["report.busy_threshold_percent"]))
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
    for problem in result.problems:
        click.echo(f"gpm: {problem}", err=True)
    if result.problems:
        sys.exit(EXIT_FAILURE)


def _dry_run(app: AppContext, rows, cutoff: int) -> None:
    from gpm.store.archive import day_name

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
    from gpm.cli.units import fmt_bytes

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


def _reduce_days(app: AppContext, busy_threshold: float):
    """Store `gpm report`'s reduction of each day that got part files beside
    them, so that a year is read as quarter hours (also by any host the archive
    is copied to). A failure leaves the rows archived; the report reads them raw."""

    def run(conn, archive_dir, started_ms: int) -> None:
        from gpm.report.quarters import reduce_archived_days

        try:
            reduce_archived_days(conn, archive_dir, busy_threshold, created_since_ms=started_ms)
        except Exception as err:  # noqa: BLE001 - the archive itself is done and durable
            app.warn(f"report reductions of the archived days not stored ({err}); `gpm report` reads the rows")

    return run
