"""The whole report over a period: the GPUs' figures and what used them (``make_report``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

from gpm.errors import EXIT_USAGE, GpmError
from gpm.report import usage
from gpm.report.build import Report, build_gpu_report
from gpm.report.failures import failure_spans
from gpm.report.period import Period
from gpm.report.rollup import Selection
from gpm.report.source import Progress, archive_first_samples, gpu_rollup

# Sections that read tables of other features: (table, feature, why empty).
FEATURE_TABLES = {
    "workload": ("process_events", "process classification", "no classified process runs in this range"),
    "games": ("process_events", "process classification", "no games in this range"),
    "processes": ("process_events", "process classification", "no classified process runs in this range"),
    "llm": ("llm_requests", "Ollama request recording", "no recorded LLM requests in this range"),
    "models": ("llm_sessions", "Ollama watching", "no loaded models seen in this range"),
}


def _tables(conn: sqlite3.Connection | None) -> set[str]:
    if conn is None:
        return set()
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}


def known_gpus(conn: sqlite3.Connection | None, hosts: tuple[str, ...] = ()) -> list[tuple]:
    """(host, index, uuid, name, first sample ms) of every GPU the database has ever sampled."""
    if conn is None or "gpus" not in _tables(conn):
        return []
    rows = conn.execute("SELECT host, gpu_index, uuid, name, first_seen_ms FROM gpus ORDER BY host, gpu_index, uuid")
    return [r for r in rows if not hosts or r[0] in hosts]


def _printable(text: str | None) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in (text or "?"))


def check_gpus(sel: Selection, known: list[tuple]) -> None:
    """``--gpu`` naming no GPU the database knows is a usage error that lists those it knows (#13.2)."""
    if not sel.gpus or not known or any(sel.gpu_matches(uuid, index) for _, index, uuid, _, _ in known):
        return
    multi = len({host for host, *_ in known}) > 1
    names = ", ".join(f"{f'{host}:' if multi else ''}{index} ({_printable(name)})"
                      for host, index, _, name, _ in known)
    raise GpmError(f"--gpu {_printable(' '.join(sel.gpus))}: no such GPU; known GPUs: {names} "
                   "(give an index or a UUID prefix)", EXIT_USAGE)


def make_report(*, conn: sqlite3.Connection | None, archive_dir: Path | None,
                period: Period, hosts: tuple[str, ...] = (), gpus: tuple[str, ...] = (),
                busy_threshold: float, now_ms: int, own_host: str | None = None,
                use_cache: bool = True, progress: "Callable[[int], Progress | None] | None" = None) -> Report:
    """The full report over ``period`` from the database and the archive.
    ``use_cache=False`` reads every raw row (no rollup); ``progress(total)``
    gives a callback for the rollup of data gpm did not roll up itself."""
    sel = Selection(period.since_ms, period.until_ms, hosts, gpus)
    known = known_gpus(conn, hosts)
    first_samples = archive_first_samples(archive_dir, hosts)
    if set(first_samples) <= {host for host, *_ in known}:  # else GPUs only the archive knows
        check_gpus(sel, known)
    for host, _, _, _, first in known:
        first_samples[host] = min(first_samples.get(host, first), first)
    known_hosts = list(hosts)
    if not hosts and "gpus" in _tables(conn):
        # A host with no sample in the range is shown with 0 % coverage.
        known_hosts = [r[0] for r in conn.execute("SELECT DISTINCT host FROM gpus")]
    minutes, hist = gpu_rollup(conn, archive_dir, sel, busy_threshold, now_ms=now_ms, own_host=own_host,
                               use_rollup=use_cache, progress=progress)
    report = build_gpu_report(minutes, hist, period, busy_threshold=busy_threshold,
                              generated_ms=now_ms, hosts=known_hosts, first_samples=first_samples)
    if not report.gpus:
        for section in ("gpus", "days"):
            report.omitted[section] = "no GPU samples in this range"
    report.failures = failure_spans(conn, sel)
    add_usage(report, conn, archive_dir, sel, own_host)
    return report


def add_usage(report: Report, conn: sqlite3.Connection | None, archive_dir: Path | None,
              sel: Selection, own_host: str | None) -> None:
    """The sections on what used the GPUs; each one missing says why in ``report.omitted``."""
    runs = usage.process_runs(conn, archive_dir, sel, own_host)
    requests = usage.llm_requests(conn, archive_dir, sel, own_host)
    if runs is not None and not runs.is_empty():
        report.workload = usage.workload(runs)
        report.games = usage.games(runs)
        report.processes = usage.top_processes(runs)
        for day, energy in zip(report.days, usage.category_energy_per_day(runs, report.days)):
            day["category_energy_joules"] = energy
    if requests is not None and not requests.is_empty():
        report.llm = usage.llm_models(requests)
    sessions = usage.llm_sessions(conn, archive_dir, sel, own_host)
    report.models = sessions or []
    report.host_usage = usage.host_usage(runs, requests)
    found = {"workload": runs, "games": runs, "processes": runs, "llm": requests, "models": sessions}
    for section, (table, feature, empty) in FEATURE_TABLES.items():
        if found[section] is None:
            report.omitted[section] = f"no {table} table yet (needs {feature})"
        elif not getattr(report, section):
            report.omitted[section] = empty
