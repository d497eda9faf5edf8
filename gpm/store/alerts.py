"""Read and write the ``alerts`` and ``alert_state`` tables (schema_alerts).

The readers serve ``gpm alerts``, the report's Alerts section and the
``gpm_alerts_firing`` metric; the writers are called by ``gpm.alerts``
inside the sample's transaction, so an event and the sample that fired it
are stored together or not at all.
"""

from __future__ import annotations

import sqlite3

from gpm.alerts.event import AlertEvent

_COLUMNS = ("id, rule, host, gpu_index, gpu_uuid, subject, severity, started_ms, "
            "resolved_ms, value, peak, message")


def _event(row: tuple) -> AlertEvent:
    (id_, rule, host, gpu_index, gpu_uuid, subject, severity, started_ms,
     resolved_ms, value, peak, message) = row
    return AlertEvent(rule=rule, host=host, severity=severity, started_ms=started_ms,
                      message=message, gpu_index=gpu_index, gpu_uuid=gpu_uuid,
                      subject=subject, resolved_ms=resolved_ms, value=value, peak=peak, id=id_)


def list_events(conn: sqlite3.Connection, *, since_ms: int | None = None, until_ms: int | None = None,
                host: str | None = None) -> list[AlertEvent]:
    """Events firing now or active at any time in [since_ms, until_ms), oldest first."""
    where, args = [], []
    if since_ms is not None:
        where.append("(resolved_ms IS NULL OR resolved_ms >= ?)")
        args.append(since_ms)
    if until_ms is not None:
        where.append("started_ms < ?")
        args.append(until_ms)
    if host is not None:
        where.append("host = ?")
        args.append(host)
    sql = f"SELECT {_COLUMNS} FROM alerts"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [_event(r) for r in conn.execute(sql + " ORDER BY started_ms, id", args)]


def firing_events(conn: sqlite3.Connection, host: str | None = None) -> list[AlertEvent]:
    """Events not yet resolved, oldest first."""
    sql = f"SELECT {_COLUMNS} FROM alerts WHERE resolved_ms IS NULL"
    args: list = []
    if host is not None:
        sql += " AND host = ?"
        args.append(host)
    return [_event(r) for r in conn.execute(sql + " ORDER BY started_ms, id", args)]


def insert_event(conn: sqlite3.Connection, event: AlertEvent) -> int:
    """Insert one whole event (inside the caller's ``write()``); return its id.

    For an event known from start to end at once (an import, a test); the
    rule engine opens and resolves its events with its own writers.
    """
    cur = conn.execute(
        "INSERT INTO alerts (rule, host, gpu_index, gpu_uuid, subject, severity, started_ms, resolved_ms, "
        "value, peak, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (event.rule, event.host, event.gpu_index, event.gpu_uuid, event.subject, event.severity,
         event.started_ms, event.resolved_ms, event.value, event.peak, event.message))
    return int(cur.lastrowid)
