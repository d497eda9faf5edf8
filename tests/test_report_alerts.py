"""The report's Alerts section (#15.6): how many alerts per rule and GPU, the
time firing and the longest one, clipped to the report's range."""

from __future__ import annotations

import pytest

from gpm.alerts.event import AlertEvent
from gpm.report.alerts import alert_summary
from gpm.report.rollup import Selection
from gpm.store.alerts import insert_event
from gpm.store.db import open_db, write
from tests.test_report import HOUR, MON, UTC, WEEK, fill_week, report_json

DAY = 24 * HOUR
MIN = 60_000
UUID0, UUID1 = "GPU-0aaaaaaa-0000", "GPU-1bbbbbbb-1111"


def event(rule: str, start: int, end: int | None, gpu: int | None = 0, host: str = "lab", **kw) -> AlertEvent:
    uuid = {0: UUID0, 1: UUID1}.get(gpu) if gpu is not None else None
    return AlertEvent(rule=rule, host=host, severity=kw.pop("severity", "warning"), started_ms=start,
                      resolved_ms=end, message=f"{rule} on {gpu}", gpu_index=gpu, gpu_uuid=uuid, **kw)


EVENTS = [
    event("temperature", MON - HOUR, MON + HOUR),  # began before the week: its hour in it counts
    event("temperature", MON + 2 * HOUR, MON + 2 * HOUR + 30 * MIN, severity="critical"),
    event("temperature", MON + 3 * HOUR, MON + 3 * HOUR + 10 * MIN, gpu=1),
    event("gpu_lost", MON + 7 * DAY - HOUR, None, gpu=1, severity="critical"),  # still firing
    event("disk_free", MON + DAY, MON + DAY + 5 * MIN, gpu=None, subject="/data"),
    event("memory", MON - 3 * HOUR, MON - 2 * HOUR),  # before the week: not in it
    event("temperature", MON + 4 * HOUR, MON + 5 * HOUR, host="other"),
]


def store(db, events) -> None:
    conn = open_db(db)
    with write(conn):
        for e in events:
            insert_event(conn, e)
    conn.close()


def row(rule, gpu, fired, firing, longest, *, host="lab", severity="warning", subject=None, at_end=False) -> dict:
    return {"host": host, "rule": rule, "gpu_index": gpu,
            "gpu_uuid": {0: UUID0, 1: UUID1}.get(gpu) if gpu is not None else None, "subject": subject,
            "severity": severity, "fired": fired, "firing_seconds": firing, "longest_seconds": longest,
            "firing_at_end": at_end}


EXPECTED = [
    row("temperature", 0, 2, 5400.0, 3600.0, severity="critical"),
    row("temperature", 1, 1, 600.0, 600.0),
    row("temperature", 0, 1, 3600.0, 3600.0, host="other"),
    row("gpu_lost", 1, 1, 3600.0, 3600.0, severity="critical", at_end=True),
    row("disk_free", None, 1, 300.0, 300.0, subject="/data"),
]


def test_alerts_are_counted_per_rule_and_gpu_and_clipped_to_the_range(tmp_path):
    db = tmp_path / "gpm.db"
    store(db, EVENTS)
    conn = open_db(db)
    week = Selection(MON, MON + 7 * DAY)
    assert alert_summary(conn, week, now_ms=MON + 8 * DAY) == EXPECTED
    # --host, --gpu: a host's alerts; a GPU's alerts only (not the folder's)
    assert alert_summary(conn, Selection(MON, MON + 7 * DAY, hosts=("other",)), MON + 8 * DAY) == [EXPECTED[2]]
    assert alert_summary(conn, Selection(MON, MON + 7 * DAY, gpus=("1",)), MON + 8 * DAY) == [EXPECTED[1], EXPECTED[3]]
    # A range that ends in the future: the firing one counts up to now.
    assert alert_summary(conn, Selection(MON + 6 * DAY, MON + 8 * DAY), now_ms=MON + 7 * DAY + HOUR) == [
        row("gpu_lost", 1, 1, 7200.0, 7200.0, severity="critical", at_end=True)]
    conn.close()


@pytest.fixture
def week_with_alerts(tmp_path):
    db = tmp_path / "gpm.db"
    fill_week(db)
    store(db, EVENTS)
    return db


def test_the_json_report_has_the_alerts_list(gpm, week_with_alerts):
    got = report_json(gpm, week_with_alerts, "--week", WEEK, "--host", "lab")
    assert got["alerts"] == [r for r in EXPECTED if r["host"] == "lab"]


def test_the_text_and_markdown_reports_show_the_alerts_table(gpm, week_with_alerts):
    text = gpm("--db", week_with_alerts, "report", "--week", WEEK, "--section", "alerts", env=UTC, check=True).stdout
    lines = text.splitlines()
    at = lines.index("Alerts")
    assert [line.split() for line in lines[at + 2:at + 9]] == [
        ["Rule", "On", "Severity", "Fired", "Firing", "Longest"],
        ["-----------", "-----------", "--------", "-----", "------", "-------"],
        ["temperature", "lab:GPU", "0", "critical", "2", "1.5", "h", "1.0", "h"],
        ["temperature", "lab:GPU", "1", "warning", "1", "0.2", "h", "0.2", "h"],
        ["temperature", "other:GPU", "0", "warning", "1", "1.0", "h", "1.0", "h"],
        ["gpu_lost", "lab:GPU", "1", "critical", "1", "1.0", "h", "1.0", "h"],
        ["disk_free", "/data", "warning", "1", "0.1", "h", "0.1", "h"],
    ]
    md = gpm("--db", week_with_alerts, "report", "--week", WEEK, "--section", "alerts", "--host", "lab",
             "--format", "markdown", env=UTC, check=True).stdout
    assert "## Alerts" in md and "| disk_free   | /data | warning  |     1 |  0.1 h |   0.1 h |" in md.splitlines()
    csv = gpm("--db", week_with_alerts, "report", "--week", WEEK, "--section", "alerts", "--host", "lab",
              "--format", "csv", env=UTC, check=True).stdout.splitlines()
    assert csv[0] == ("host,rule,gpu_index,gpu_uuid,subject,severity,fired,firing_seconds,longest_seconds,"
                      "firing_at_end")
    assert csv[-1] == "lab,disk_free,,,/data,warning,1,300.0,300.0,False"


def test_a_week_without_alerts_says_none(gpm, tmp_path):
    db = tmp_path / "gpm.db"
    fill_week(db)
    text = gpm("--db", db, "report", "--week", WEEK, "--section", "alerts", env=UTC, check=True).stdout
    assert "Alerts: none." in text.splitlines()
    assert report_json(gpm, db, "--week", WEEK)["alerts"] == []
