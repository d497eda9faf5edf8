"""``gpm alerts`` (#15.4): firing alerts and history as a table or JSON, the
exit code scripts test, and ``gpm alerts test`` through a real hook and a
real webhook receiver."""

from __future__ import annotations

import json
import sys
import time

import pytest

from gpm.alerts.event import AlertEvent
from gpm.humanize import display_width
from gpm.store.alerts import insert_event
from gpm.store.db import open_db, write
from tests.conftest import gpm_env
from tests.terminal import run_in_pty
from tests.fakes.webhook import receivers, refused
from tests.test_alerts_notify import recording_hook

MIN = 60_000
HOUR = 60 * MIN
LONG_MESSAGE = ("free space of /srv/models/a-very-long-folder-name-for-the-models-we-keep is 3.2 % "
                "(below 5 %), the archive writes there")


@pytest.fixture
def receiver():
    with receivers() as start:
        yield start


def now_ms() -> int:
    return int(time.time() * 1000)


def store(db, *events: AlertEvent) -> None:
    conn = open_db(db)
    with write(conn):
        for e in events:
            insert_event(conn, e)
    conn.close()


def fixture_events(now: int) -> list[AlertEvent]:
    return [
        AlertEvent(rule="temperature", host="box", severity="warning", started_ms=now - 3 * HOUR,
                   resolved_ms=now - 3 * HOUR + 12 * MIN, message="GPU 0 at 91 °C, above 85 °C",
                   gpu_index=0, gpu_uuid="GPU-0a1b", value=79.0, peak=93.0),
        AlertEvent(rule="gpu_lost", host="box", severity="critical", started_ms=now - 20 * MIN,
                   message="GPU 1 fell off the bus", gpu_index=1, gpu_uuid="GPU-1c2d"),
        AlertEvent(rule="disk_free", host="box", severity="warning", started_ms=now - 5 * MIN,
                   message=LONG_MESSAGE, subject="/srv/models", value=3.2, peak=3.2),
        AlertEvent(rule="memory", host="box", severity="warning", started_ms=now - 10 * 86_400_000,
                   resolved_ms=now - 9 * 86_400_000, message="old", gpu_index=0, gpu_uuid="GPU-0a1b",
                   value=90.0, peak=99.0),
    ]


def test_alerts_json_lists_firing_and_recent_events_and_exits_1_while_one_fires(gpm, tmp_path):
    db = tmp_path / "gpm.db"
    now = now_ms()
    store(db, *fixture_events(now))
    res = gpm("alerts", "--json", "--db", db)
    assert res.returncode == 1, res.stderr
    got = json.loads(res.stdout)
    assert [(e["rule"], e["state"]) for e in got] == [("temperature", "resolved"), ("gpu_lost", "firing"),
                                                      ("disk_free", "firing")]
    first = got[0]
    assert {k: first[k] for k in ("rule", "gpu_index", "gpu_uuid", "severity", "state", "value", "peak",
                                  "message", "subject")} == {
        "rule": "temperature", "gpu_index": 0, "gpu_uuid": "GPU-0a1b", "severity": "warning",
        "state": "resolved", "value": 79.0, "peak": 93.0, "message": "GPU 0 at 91 °C, above 85 °C",
        "subject": None}
    assert first["started"].endswith("Z") and first["resolved"].endswith("Z") and first["started"] < first["resolved"]
    assert got[1]["resolved"] is None and got[2]["subject"] == "/srv/models"
    # --since reaches back to the old one; the firing ones are always there
    res = gpm("alerts", "--json", "--since", "14d", "--db", db)
    assert [e["rule"] for e in json.loads(res.stdout)] == ["memory", "temperature", "gpu_lost", "disk_free"]
    res = gpm("alerts", "--json", "--since", "1h", "--db", db)
    assert [e["rule"] for e in json.loads(res.stdout)] == ["gpu_lost", "disk_free"]


def test_alerts_exits_0_when_nothing_fires_so_scripts_can_chain_it(gpm, tmp_path):
    db = tmp_path / "gpm.db"
    store(db, fixture_events(now_ms())[0])
    res = gpm("alerts", "--db", db)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "Firing now: none."
    assert lines[2].startswith("Resolved since ") and lines[2].endswith(" (1)")
    assert lines[4].split() == ["Rule", "On", "Sev", "Started", "For", "Peak", "Message"]
    row = lines[6].split()
    assert row[:3] == ["temperature", "GPU", "0"] and row[3:4] == ["warn"] and row[6:8] == ["12m", "93°C"]
    assert " ".join(row[8:]) == "GPU 0 at 91 °C, above 85 °C"
    res = gpm("alerts", "--json", "--db", db)
    assert res.returncode == 0 and len(json.loads(res.stdout)) == 1


def test_alerts_without_a_database_says_so_in_one_line(gpm, tmp_path):
    db = tmp_path / "none.db"
    res = gpm("alerts", "--db", db)
    assert (res.returncode, res.stdout, res.stderr) == (
        0, f"gpm alerts: no database yet ({db}): nothing sampled, no alerts.\n", "")
    res = gpm("alerts", "--json", "--db", db)
    assert (res.returncode, res.stdout) == (0, "[]\n")
    assert res.stderr == f"gpm: warning: no database yet ({db}): nothing sampled, no alerts\n"
    assert not db.exists()


def test_the_alerts_table_fits_80_columns_and_cuts_only_the_message(tmp_path):
    db = tmp_path / "gpm.db"
    store(db, *fixture_events(now_ms()))
    env = gpm_env({"GPM_DB": db, "TZ": "UTC", "NO_COLOR": "1"})
    for var in ("COLUMNS", "LINES"):
        env.pop(var, None)
    code, out = run_in_pty([sys.executable, "-m", "gpm", "alerts"], env, columns=80)
    lines = out.decode().replace("\r\n", "\n").splitlines()
    assert code == 1, lines
    assert [line for line in lines if display_width(line) > 80] == []
    assert lines[0] == "Firing now (2)"
    rows = {line.split()[0]: line for line in lines if line.startswith(("gpu_lost", "disk_free", "temperature"))}
    assert rows["gpu_lost"].split()[1:4] == ["GPU", "1", "crit"]
    assert " 20m " in rows["gpu_lost"] and rows["gpu_lost"].endswith("GPU 1 fell off the bus")
    assert rows["disk_free"].split()[1:3] == ["/srv/models", "warn"]
    assert "  3.2%  free space of /srv/" in rows["disk_free"] and rows["disk_free"].endswith("…")
    assert display_width(rows["disk_free"]) == 80


def test_alerts_test_sends_through_the_hook_and_the_webhook_and_says_which_worked(gpm, tmp_path, receiver):
    hook, got = recording_hook(tmp_path)
    server = receiver()
    refused_url = refused()
    config = tmp_path / "config.toml"
    config.write_text(f'[alerts]\nnotify_desktop = false\nhook_command = ["{hook}"]\n'
                      f'webhook_url = "{server.url}/in/s3cret-token"\n[service]\nhostname = "box"\n')
    env = {"DBUS_SESSION_BUS_ADDRESS": ""}
    res = gpm("alerts", "test", "--config", config, env=env)
    assert (res.returncode, res.stdout.splitlines()) == (0, [
        "log: ok", "desktop: not configured: [alerts] notify_desktop = false", "hook: ok", "webhook: ok"]), res.stderr
    sent = json.loads(json.loads(got.read_text())["stdin"])
    assert {k: sent[k] for k in ("version", "rule", "host", "severity", "state", "gpu_index", "resolved")} == {
        "version": 1, "rule": "test", "host": "box", "severity": "info", "state": "firing", "gpu_index": None,
        "resolved": None}
    [req] = server.requests
    assert req["path"] == "/in/s3cret-token" and req["json"] == sent
    # A webhook nobody listens to: the line says so, without the token, and the exit code is 1.
    config.write_text(f'[alerts]\nnotify_desktop = false\nwebhook_url = "{refused_url}/in/s3cret-token"\n'
                      "webhook_retries = 0\n")
    res = gpm("alerts", "test", "--config", config, env=env)
    assert res.returncode == 1
    assert res.stdout.splitlines()[-1] == f"webhook: failed: {refused_url}/…: cannot connect (1 attempt)"
    assert "s3cret" not in res.stdout + res.stderr

