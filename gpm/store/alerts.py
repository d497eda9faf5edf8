"""Read and write the ``alerts`` and ``alert_state`` tables (schema_alerts).

The readers serve ``gpm alerts``, the report's Alerts section and the
``gpm_alerts_firing`` metric; the writers are called by ``gpm.alerts``
inside the sample's transaction, so an event and the sample that fired it
are stored together or not at all.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Iterable

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


# ---- writers and what the engine reads (gpm.alerts.engine), inside the sample's transaction ----

@dataclass(slots=True)
class AlertState:
    """A condition pending (``alert_id`` None: true since ``since_ms``, not yet
    for ``for_secs``) or firing (its ``alerts`` row). No row: all is well."""

    rule: str
    key: str
    since_ms: int
    last_ms: int
    value: float | None
    peak: float | None
    alert_id: int | None = None


def load_states(conn: sqlite3.Connection, host: str, rules: Iterable[str]) -> dict[tuple[str, str], AlertState]:
    """This host's pending and firing conditions of ``rules``, by (rule, key)."""
    names = sorted(set(rules))
    if not names:
        return {}
    rows = conn.execute(
        "SELECT rule, key, since_ms, last_ms, value, peak, alert_id FROM alert_state "
        f"WHERE host = ? AND rule IN ({', '.join('?' * len(names))})", (host, *names))
    return {(r[0], r[1]): AlertState(*r) for r in rows}


def save_state(conn: sqlite3.Connection, host: str, state: AlertState) -> None:
    conn.execute(
        "INSERT INTO alert_state (rule, host, key, since_ms, last_ms, value, peak, alert_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rule, host, key) DO UPDATE SET "
        "since_ms = excluded.since_ms, last_ms = excluded.last_ms, value = excluded.value, "
        "peak = excluded.peak, alert_id = excluded.alert_id",
        (state.rule, host, state.key, state.since_ms, state.last_ms, state.value, state.peak, state.alert_id))


def delete_state(conn: sqlite3.Connection, host: str, state: AlertState) -> None:
    conn.execute("DELETE FROM alert_state WHERE rule = ? AND host = ? AND key = ?", (state.rule, host, state.key))


def insert_event(conn: sqlite3.Connection, event: AlertEvent) -> int:
    """Store a firing event; its id is set and returned."""
    event.id = conn.execute(
        "INSERT INTO alerts (rule, host, gpu_index, gpu_uuid, subject, severity, started_ms, resolved_ms, "
        "value, peak, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (event.rule, event.host, event.gpu_index, event.gpu_uuid, event.subject, event.severity,
         event.started_ms, event.resolved_ms, event.value, event.peak, event.message)).lastrowid
    return event.id


def update_event(conn: sqlite3.Connection, event: AlertEvent) -> None:
    """Store what changes while an event fires and when it resolves."""
    conn.execute("UPDATE alerts SET resolved_ms = ?, value = ?, peak = ?, message = ? WHERE id = ?",
                 (event.resolved_ms, event.value, event.peak, event.message, event.id))


def get_event(conn: sqlite3.Connection, alert_id: int) -> AlertEvent | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    return None if row is None else _event(row)


def last_sample_ms(conn: sqlite3.Connection, host: str) -> int | None:
    """When this host last stored a sample (``gpus.last_seen_ms``: a few rows, no scan)."""
    return conn.execute("SELECT MAX(last_seen_ms) FROM gpus WHERE host = ?", (host,)).fetchone()[0]


def sample_times(conn: sqlite3.Connection, host: str, until_ms: int, limit: int) -> list[int]:
    """The last ``limit`` times (newest first, at or before ``until_ms``) this host stored a sample."""
    ids = [r[0] for r in conn.execute("SELECT id FROM gpus WHERE host = ?", (host,))]
    if not ids:
        return []
    return [r[0] for r in conn.execute(
        f"SELECT DISTINCT ts_ms FROM gpu_metrics WHERE ts_ms <= ? AND gpu_id IN ({', '.join('?' * len(ids))}) "
        "ORDER BY ts_ms DESC LIMIT ?", (until_ms, *ids, limit))]


def known_gpus(conn: sqlite3.Connection, host: str, *, seen_since_ms: int | None = None,
               keys: Iterable[str] = ()) -> list[tuple[str, int, str | None, int]]:
    """(key, index, name, last seen) of this host's GPUs last seen at or after ``seen_since_ms``
    or named in ``keys`` (``gpus.uuid``: the UUID, or ``index:N``)."""
    keys = list(keys)
    where, args = [], []
    if seen_since_ms is not None:
        where.append("last_seen_ms >= ?")
        args.append(seen_since_ms)
    if keys:
        where.append(f"uuid IN ({', '.join('?' * len(keys))})")
        args += keys
    if not where:
        return []
    return [tuple(r) for r in conn.execute(
        f"SELECT uuid, gpu_index, name, last_seen_ms FROM gpus WHERE host = ? AND ({' OR '.join(where)}) ORDER BY gpu_index",
        (host, *args))]
