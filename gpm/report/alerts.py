"""The report's Alerts section: how often each rule fired per GPU, how long it fired, the longest time.

Read from the ``alerts`` table (``gpm.store.alerts``): the database only,
since alerts are not archived. Times are clipped to the report's range, so
an alert that began last week counts only its hours in this one, and one
still firing counts up to the end of the range (or now, for a range that
ends later).

One row per host, rule, GPU and subject (the folder of ``disk_free``):

``{host, rule, gpu_index, gpu_uuid, subject, severity, fired,
firing_seconds, longest_seconds, firing_at_end}``: ``fired`` counts the
alerts active in the range (one that began before it counts too);
``severity`` is the worst one seen; ``firing_at_end`` says one was still
firing when the range ended (or is firing now). The html report reads the same keys.
"""

from __future__ import annotations

import sqlite3
from typing import Callable

from gpm.alerts.rules import RULES
from gpm.humanize import cut, visible
from gpm.report.cells import HOST_IN_CELL
from gpm.report.rollup import Selection
from gpm.store.alerts import list_events

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
KEYS = ("host", "rule", "gpu_index", "gpu_uuid", "subject", "severity", "fired", "firing_seconds",
        "longest_seconds", "firing_at_end")


def has_alerts_table(conn: sqlite3.Connection | None) -> bool:
    return conn is not None and conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alerts'").fetchone() is not None


def alert_summary(conn: sqlite3.Connection, sel: Selection, now_ms: int) -> list[dict]:
    """The section's rows (module docstring), in the order of the rules, then host, GPU and subject."""
    rows: dict[tuple, dict] = {}
    for e in list_events(conn, since_ms=sel.since_ms, until_ms=sel.until_ms):
        if sel.hosts and e.host not in sel.hosts:
            continue
        if sel.gpus and ((e.gpu_index is None and e.gpu_uuid is None) or not sel.gpu_matches(e.gpu_uuid, e.gpu_index)):
            continue  # --gpu: alerts about other GPUs, or about no GPU, are not this report's
        end = e.resolved_ms if e.resolved_ms is not None else max(now_ms, e.started_ms)
        seconds = max(0, min(end, sel.until_ms) - max(e.started_ms, sel.since_ms)) / 1000
        key = (e.host, e.rule, e.gpu_uuid, e.gpu_index, e.subject)
        row = rows.setdefault(key, {
            "host": e.host, "rule": e.rule, "gpu_index": e.gpu_index, "gpu_uuid": e.gpu_uuid,
            "subject": e.subject or None, "severity": e.severity, "fired": 0, "firing_seconds": 0.0,
            "longest_seconds": 0.0, "firing_at_end": False})
        if SEVERITY_RANK.get(e.severity, 1) > SEVERITY_RANK.get(row["severity"], 1):
            row["severity"] = e.severity
        row["fired"] += 1
        row["firing_seconds"] += seconds
        row["longest_seconds"] = max(row["longest_seconds"], seconds)
        row["firing_at_end"] = row["firing_at_end"] or e.resolved_ms is None or e.resolved_ms > sel.until_ms
    order = {name: i for i, name in enumerate(RULES)}
    return sorted(rows.values(), key=lambda r: (order.get(r["rule"], len(order)), r["rule"], r["host"],
                                                r["gpu_index"] if r["gpu_index"] is not None else -1,
                                                r["subject"] or ""))


def alert_rows(alerts: list[dict], human: bool, duration: Callable, several_hosts: bool) -> tuple[list[str], list[list]]:
    """(headers, rows) of the section; ``duration(seconds)`` makes a cell of the
    renderer's duration columns, ``several_hosts`` prefixes a GPU with its host."""
    if not human:
        return list(KEYS), [[a[k] for k in KEYS] for a in alerts]
    rows = []
    several_hosts = several_hosts or len({a["host"] for a in alerts}) > 1
    for a in alerts:
        if a["gpu_index"] is not None:
            on = f"GPU {a['gpu_index']}"
            if several_hosts:
                on = f"{cut(visible(a['host']), HOST_IN_CELL)}:{on}"
        else:
            on = visible(a["subject"] or a["host"])
        rows.append([a["rule"], on, a["severity"], a["fired"], duration(a["firing_seconds"]),
                     duration(a["longest_seconds"])])
    return ["Rule", "On", "Severity", "Fired", "Firing", "Longest"], rows
