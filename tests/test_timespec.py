"""One meaning for one word: every time option reads times by the same rule (#13.7).

`--since 2026-12-01` was UTC in `gpm export` and local time in `gpm report`.
Now a date or datetime without a zone is local time everywhere, Z or an
offset names the zone, and the test below walks the command tree, so a new
command with a time option is held to the same rule.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

import click
import pytest

from gpm.alerts.event import AlertEvent
from gpm.cli import cli
from gpm.cli.options import TimeParam
from gpm.config import load_config
from gpm.errors import GpmError
from gpm.gpu.sample import GpuSample
from gpm.report.period import Period, fill_week, resolve_period
from gpm.sampling import Sampler
from gpm.store.alerts import insert_event
from gpm.store.db import open_db, write
from gpm.timespec import parse_time_ms
from tests.conftest import run_gpm

# UTC+13 all year, as a POSIX rule (no zoneinfo file needed): a local date is
# far from the UTC date of the same name.
PLUS13 = "GPM-13"
HOUR = 3_600_000
NOV29 = 1_796_083_200_000 - 2 * 24 * HOUR  # 2026-11-29T00:00:00Z
NOV30, DEC1 = NOV29 + 24 * HOUR, NOV29 + 48 * HOUR
NOW = DEC1 + 7 * 24 * HOUR + 9 * HOUR  # 2026-12-08T09:00Z, Tuesday 22:00 local


@pytest.fixture
def local_tz(monkeypatch):
    monkeypatch.setenv("TZ", PLUS13)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("text, expected", [
    ("2026-12-01", DEC1 - 13 * HOUR),  # local midnight
    ("20261201", DEC1 - 13 * HOUR),
    ("2026-12-01T08:00", DEC1 - 5 * HOUR),
    ("2026-12-01 08:00:00", DEC1 - 5 * HOUR),
    ("2026-12-01T08:00Z", DEC1 + 8 * HOUR),
    ("2026-12-01T08:00z", DEC1 + 8 * HOUR),
    ("2026-12-01T09:00+01:00", DEC1 + 8 * HOUR),
    ("2026-W49", NOV30 - 13 * HOUR),  # Monday 2026-11-30, local midnight
    ("2026w49", NOV30 - 13 * HOUR),
    ("now", NOW),
    ("24h", NOW - 24 * HOUR),
    ("7d", NOW - 7 * 24 * HOUR),
    ("2w", NOW - 14 * 24 * HOUR),
    ("90m", NOW - 90 * 60_000),
    ("1.5h", NOW - 90 * 60_000),
])
def test_one_rule(local_tz, text, expected):
    assert parse_time_ms(text, NOW) == expected


@pytest.mark.parametrize("text, message", [
    ("yesterday", "'yesterday': expected a date (2026-12-01)"),
    ("2026-02-30", "'2026-02-30' (day is out of range for month): expected"),
    ("2026-W54", "'2026-W54': 2026 has no week 54"),
    ("1969-12-31T23:00Z", "is out of range: times from 1970-01-01"),
    ("999999w", "is out of range: times from 1970-01-01 to 9999-01-01 are allowed (that is too long ago)"),
])
def test_what_is_not_a_time_says_what_is(local_tz, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_time_ms(text, NOW)


def test_week_last_is_the_last_finished_week_and_this_is_up_to_now(local_tz):
    last = resolve_period(now_ms=NOW, week="last")
    assert (last.since_ms, last.until_ms, last.iso_week) == (NOV30 - 13 * HOUR, NOV30 + 7 * 24 * HOUR - 13 * HOUR,
                                                           "2026-W49")
    # Monday 00:10 local is already the next week: "last" is the one that just ended
    monday = NOV30 + 7 * 24 * HOUR - 13 * HOUR + 10 * 60_000
    assert resolve_period(now_ms=monday, week="Last").iso_week == "2026-W49"
    this = resolve_period(now_ms=NOW, week="this")
    assert (this.since_ms, this.until_ms, this.iso_week) == (last.until_ms, NOW, None)


def test_week_placeholder_is_filled_only_for_one_week(local_tz):
    out = Path("reports/report-{week}.txt")
    assert fill_week(out, resolve_period(now_ms=NOW, week="last")) == Path("reports/report-2026-W49.txt")
    assert fill_week(out, resolve_period(now_ms=NOW, week="this")) == Path("reports/report-2026-W50.txt")
    assert fill_week(Path("plain.txt"), None) == Path("plain.txt")
    with pytest.raises(GpmError, match=r"\{week\} needs a report within one ISO week"):
        fill_week(out, resolve_period(now_ms=NOW, since="14d"))
    with pytest.raises(GpmError, match="--weeks reports several"):
        fill_week(out, None)
    assert fill_week(out, Period(NOW - HOUR, NOW, "an hour")) == Path("reports/report-2026-W50.txt")


# --- every command that takes a time -------------------------------------------
TIME_LIKE = re.compile(r"^(since|until|before|after|start|end|from|to|at|when|time)(_ms|_time|_at)?$")


def _walk(cmd: click.Command, path: tuple[str, ...], ctx: click.Context):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            yield from _walk(cmd.get_command(ctx, name), (*path, name), ctx)


def _commands() -> dict[str, list[click.Parameter]]:
    ctx = click.Context(cli)
    return {" ".join(path): list(cmd.params) for path, cmd in _walk(cli, (), ctx)}


COMMANDS = _commands()
TIME_COMMANDS = sorted(name for name, params in COMMANDS.items()
                       if any(isinstance(p.type, TimeParam) for p in params))


def test_every_option_that_names_a_time_reads_it_by_the_one_rule():
    untyped = [f"gpm {name} {p.opts[0]}" for name, params in COMMANDS.items() for p in params
               if TIME_LIKE.match(p.name or "") and not isinstance(p.type, TimeParam)]
    assert untyped == [], "give these options type=TimeParam() (gpm.cli.options.time_range_options)"
    assert {"export", "report"} <= set(TIME_COMMANDS)


@pytest.fixture
def hourly_db(tmp_path) -> Path:
    """One GPU sampled on the hour from 2026-11-29T00:00Z to 2026-12-01T06:00Z, by gpm's own saver."""
    db = tmp_path / "gpm.db"
    conn = open_db(db)
    samples = [GpuSample(ts_ms=ts, index=0, source="nvml", uuid="GPU-0aaaaaaa-0000", name="NVIDIA RTX A6000",
                         memory_total_bytes=48 << 30, utilization_gpu_percent=50)
               for ts in range(NOV29, DEC1 + 7 * HOUR, HOUR)]
    Sampler(load_config(), conn=conn, enrichers=[], host="lab").store(samples)
    conn.close()
    return db


def _export_rows(db: Path, args: list[str], env: dict) -> tuple[int, int, int]:
    out = run_gpm("--db", db, "export", "-t", "gpu_metrics", *args, "--format", "jsonl", env=env, check=True)
    stamps = sorted(json.loads(line)["ts_ms"] for line in out.stdout.splitlines())
    return len(stamps), stamps[0], stamps[-1]


def _report_rows(db: Path, args: list[str], env: dict) -> tuple[int, int, int]:
    out = run_gpm("--db", db, "report", *args, "--format", "json", env=env, check=True)
    (gpu,) = json.loads(out.stdout)["gpus"]
    return gpu["samples"], gpu["first_sample_ms"], gpu["last_sample_ms"]


def _alerts_rows(db: Path, args: list[str], env: dict) -> tuple[int, int, int]:
    """Alerts on the hour, one minute long each, as the samples are: those active in the range."""
    conn = open_db(db)
    with write(conn):
        if not conn.execute("SELECT count(*) FROM alerts").fetchone()[0]:
            for ts in range(NOV29, DEC1 + 7 * HOUR, HOUR):
                insert_event(conn, AlertEvent(rule="temperature", host="lab", severity="warning", started_ms=ts,
                                              resolved_ms=ts + 60_000, message="hot", gpu_index=0))
    conn.close()
    out = run_gpm("--db", db, "alerts", *args, "--json", env=env, check=True)
    starts = [datetime.fromisoformat(e["started"].replace("Z", "+00:00")) for e in json.loads(out.stdout)]
    return len(starts), int(starts[0].timestamp() * 1000), int(starts[-1].timestamp() * 1000)


# command -> how to see which rows its time options selected: (count, first ts, last ts)
OBSERVERS = {"export": _export_rows, "report": _report_rows, "alerts": _alerts_rows}

RANGES = {
    # local midnight to local midnight, 13 h before UTC's
    "local-dates": (["--since", "2026-12-01", "--until", "2026-12-02"], (20, NOV30 + 11 * HOUR, DEC1 + 6 * HOUR)),
    "iso-week-to-offset": (["--since", "2026-W49", "--until", "2026-11-30T12:00+00:00"],
                           (25, NOV29 + 11 * HOUR, NOV30 + 11 * HOUR)),
    "utc": (["--since", "2026-11-30T05:00Z", "--until", "2026-11-30T08:00Z"], (3, NOV30 + 5 * HOUR, NOV30 + 7 * HOUR)),
}


@pytest.mark.parametrize("command", TIME_COMMANDS)
@pytest.mark.parametrize("case", list(RANGES))
def test_the_same_words_select_the_same_rows_in_every_command(command, case, hourly_db):
    assert command in OBSERVERS, f"gpm {command} takes a time: add it to OBSERVERS to show it follows the rule"
    args, expected = RANGES[case]
    assert OBSERVERS[command](hourly_db, args, {"TZ": PLUS13}) == expected


# --- faults -----------------------------------------------------------------------
def test_a_local_time_under_an_impossible_tz_is_one_line_naming_tz(tmp_path):
    db = tmp_path / "gpm.db"
    bad = run_gpm("--db", db, "export", "-t", "gpu_metrics", "--since", "2026-12-01", env={"TZ": "XXX-25:59"})
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("gpm: --since '2026-12-01' is a local time, but TZ='XXX-25:59': a UTC offset "
                                 "of +24:59 is out of range") and bad.stderr.count("\n") == 1, bad.stderr
    utc = run_gpm("--db", db, "export", "-t", "gpu_metrics", "--since", "2026-12-01T00:00Z",
                  env={"TZ": "XXX-25:59"}, check=True)
    assert utc.stdout.splitlines() == ["host,ts,ts_ms"]  # a UTC time needs no local offset: no rows, no error


def test_week_placeholder_over_several_weeks_is_refused_before_any_work(tmp_path):
    out = tmp_path / "report-{week}.txt"
    proc = run_gpm("--db", tmp_path / "gpm.db", "report", "--since", "30d", "-o", out, env={"TZ": PLUS13})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"gpm: --output {out}: {{week}} needs a report within one ISO week" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no report, not even a database
