"""``gpm_alerts_firing``: gpm's firing alerts read from the database at scrape time."""

from __future__ import annotations

import sqlite3

from gpm.alerts.event import AlertEvent
from gpm.store.db import open_db, write
from gpm.telemetry.alerts_feed import DbAlertFeed
from gpm.telemetry.prometheus import exposition
from gpm.telemetry.state import MetricsState
from tests.test_telemetry_prometheus import names, promtool_check, samples, value

T0 = 1_765_000_000_000


def save_alerts(db_path, events: list[AlertEvent]) -> None:
    """Rows as gpm's alert engine stores them (its writer is another branch's; the shape is the table's)."""
    conn = open_db(db_path)
    try:
        with write(conn):
            for e in events:
                conn.execute(
                    "INSERT INTO alerts (rule, host, gpu_index, gpu_uuid, subject, severity, started_ms, "
                    "resolved_ms, value, peak, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (e.rule, e.host, e.gpu_index, e.gpu_uuid, e.subject, e.severity, e.started_ms,
                     e.resolved_ms, e.value, e.peak, e.message))
    finally:
        conn.close()


def event(rule: str, gpu: int | None, *, host: str = "box", severity: str = "warning",
          resolved: int | None = None, subject: str = "") -> AlertEvent:
    return AlertEvent(rule=rule, host=host, severity=severity, started_ms=T0, message=f"{rule} fired",
                      gpu_index=gpu, gpu_uuid=None if gpu is None else f"GPU-{gpu}", subject=subject,
                      resolved_ms=resolved)


def scrape(poll) -> str:
    state = MetricsState("box")
    state.refresh_alerts(poll)
    return exposition(state.snapshot()).decode()


def test_firing_alerts_of_this_host_only_counted_per_rule_gpu_and_severity(tmp_path):
    db = tmp_path / "gpm.db"
    save_alerts(db, [
        event("temperature", 0), event("temperature", 1), event("gpu_lost", 1, severity="critical"),
        event("temperature", 2, resolved=T0 + 60_000),  # resolved: not firing
        event("temperature", 3, host="other"),  # another host's row in the same database
        event("disk_free", None, subject="/data"), event("disk_free", None, subject="/archive"),
        event("ollama_down", None),
    ])
    text = scrape(DbAlertFeed(db, "box").poll)
    got = {labels: v for (name, labels), v in samples(text).items() if name == "gpm_alerts_firing"}
    assert got == {
        (("gpu", "0"), ("rule", "temperature"), ("severity", "warning")): 1,
        (("gpu", "1"), ("rule", "temperature"), ("severity", "warning")): 1,
        (("gpu", "1"), ("rule", "gpu_lost"), ("severity", "critical")): 1,
        (("gpu", ""), ("rule", "disk_free"), ("severity", "warning")): 2,
        (("gpu", ""), ("rule", "ollama_down"), ("severity", "warning")): 1,
    }
    assert value(text, "gpm_collector_success", collector="alerts") == 1
    assert promtool_check(text) == ""


def test_a_database_with_nothing_firing_exports_no_series_but_a_healthy_collector(tmp_path):
    db = tmp_path / "gpm.db"
    save_alerts(db, [event("temperature", 0, resolved=T0 + 1)])
    text = scrape(DbAlertFeed(db, "box").poll)
    assert "gpm_alerts_firing" not in names(text)
    assert value(text, "gpm_collector_success", collector="alerts") == 1


def test_no_database_or_no_alerts_table_is_nothing_to_show(tmp_path):
    assert DbAlertFeed(tmp_path / "none.db", "box").poll() is None
    bare = tmp_path / "bare.db"
    sqlite3.connect(bare).execute("CREATE TABLE t (x)").connection.close()
    assert DbAlertFeed(bare, "box").poll() is None
    text = scrape(DbAlertFeed(bare, "box").poll)
    assert "gpm_alerts_firing" not in names(text)
    assert ("gpm_collector_success", (("collector", "alerts"),)) not in samples(text)


def test_an_unreadable_database_fails_the_alerts_collector_and_drops_stale_alerts(tmp_path):
    db = tmp_path / "gpm.db"
    save_alerts(db, [event("temperature", 0)])
    state = MetricsState("box")
    state.refresh_alerts(DbAlertFeed(db, "box").poll)
    assert len(state.snapshot().alerts) == 1
    for extra in tmp_path.glob("gpm.db-*"):  # the WAL would still hold every page
        extra.unlink()
    db.write_bytes(b"this is not a database" * 100)
    state.refresh_alerts(DbAlertFeed(db, "box").poll)
    text = exposition(state.snapshot()).decode()
    assert "gpm_alerts_firing" not in names(text)
    assert value(text, "gpm_collector_success", collector="alerts") == 0
    assert promtool_check(text) == ""
