"""``gpm report``: what the GPUs did over a range, built from history.

Layers: ``period`` (the range), ``partials`` and ``source`` (raw rows of
SQLite and the Parquet archive reduced per GPU and minute), ``build`` (the
figures, pure functions), ``summaries`` (whole ISO weeks kept for the trend)
and ``render`` (text, markdown, json, csv). Nothing here imports Click.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gpm.report.build import Report, build_gpu_report
from gpm.report.partials import Selection
from gpm.report.period import Period

# Sections that read tables of other features; omitted with one line saying
# why while their table is missing from the database.
FEATURE_TABLES = {
    "workload": ("process_events", "process classification"),
    "games": ("process_events", "process classification"),
    "llm": ("llm_requests", "Ollama request recording"),
    "processes": ("process_events", "process classification"),
}


def _tables(conn: sqlite3.Connection | None) -> set[str]:
    if conn is None:
        return set()
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}


def make_report(*, conn: sqlite3.Connection | None, db_path: Path | None, archive_dir: Path | None,
                period: Period, hosts: tuple[str, ...] = (), gpus: tuple[str, ...] = (),
                busy_threshold: float, now_ms: int, use_cache: bool = True) -> Report:
    """The full report over ``period`` from the database and the archive."""
    from gpm.report.source import gpu_partials

    sel = Selection(period.since_ms, period.until_ms, hosts, gpus)
    known_hosts = list(hosts)
    if not hosts and "gpus" in _tables(conn):
        # A host with no sample in the range is shown with 0 % coverage.
        known_hosts = [r[0] for r in conn.execute("SELECT DISTINCT host FROM gpus")]
    partials, hist = gpu_partials(conn, db_path, archive_dir, sel, busy_threshold,
                                  now_ms=now_ms, use_cache=use_cache)
    report = build_gpu_report(partials, hist, period, busy_threshold=busy_threshold,
                              generated_ms=now_ms, hosts=known_hosts)
    if not report.gpus:
        for section in ("gpus", "days"):
            report.omitted[section] = "no GPU samples in this range"
    tables = _tables(conn)
    for section, (table, feature) in FEATURE_TABLES.items():
        if table not in tables:
            report.omitted[section] = f"no {table} table yet (needs {feature})"
        else:
            report.omitted[section] = f"this version of gpm report does not read {table} yet"
    return report
