"""`gpm report` over a week of history with known answers.

The week (2025-W47, UTC): host "lab" sampled every 10 s on two GPUs.
GPU 0 has an energy counter: two busy hours... precisely: Monday 08:00-10:00
(first hour 100 % at 200 W, second hour idle at 50 W, the first 10 minutes
power capped), then the sampler stops for a day while the GPU's counter keeps
counting 1 MJ, then Tuesday 10:00-11:00 at 50 % and 100 W with a driver reload
(counter back to 0) at 10:30. GPU 1 has no counter: 10 % at 80 W throughout.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from gpm.gpu.model import GpuSample
from gpm.report.period import resolve_period, week_bounds
from gpm.report.render import sparkline
from gpm.store.db import open_db
from gpm.store.samples import save_samples

GOLDEN = Path(__file__).parent / "golden" / "report_2025-W47.txt"
WEEK = "2025-W47"
MON = 1763337600000  # 2025-11-17T00:00:00Z
HOUR = 3_600_000
GIB = 1 << 30
UTC = {"TZ": "UTC", "NO_COLOR": "1"}


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def gpu(ts_ms: int, index: int, **values) -> GpuSample:
    return GpuSample(ts_ms=ts_ms, index=index, source="nvml", uuid=f"GPU-{index}aaaaaaa-0000",
                     name="NVIDIA GeForce RTX 4090", memory_total_bytes=24 * GIB, **values)


def week_samples() -> list[GpuSample]:
    out = []
    energy_mj = 5_000_000_000
    t0 = MON + 8 * HOUR
    for i in range(720):  # Monday 08:00:00 .. 09:59:50
        busy = i < 360
        watts = 200 if busy else 50
        if i:
            energy_mj += watts * 10 * 1000
        out.append(gpu(t0 + i * 10_000, 0, utilization_gpu_percent=100 if busy else 0,
                       power_watts=float(watts), energy_joules=energy_mj / 1000,
                       temperature_celsius=70 if busy else 40,
                       memory_used_bytes=8 * GIB if busy else GIB,
                       throttle_reasons=0x4 if i < 60 else (0 if busy else 0x1)))
    energy_mj += 1_000_000_000  # used while nobody sampled
    t1 = MON + 34 * HOUR  # Tuesday 10:00
    for i in range(360):
        if i == 180:
            energy_mj = 1_000_000  # driver reload: the counter starts again
        elif i:
            energy_mj += 1_000_000
        out.append(gpu(t1 + i * 10_000, 0, utilization_gpu_percent=50, power_watts=100.0,
                       energy_joules=energy_mj / 1000, temperature_celsius=60,
                       memory_used_bytes=4 * GIB, throttle_reasons=0))
    for ts in [t0 + i * 10_000 for i in range(720)] + [t1 + i * 10_000 for i in range(360)]:
        out.append(gpu(ts, 1, utilization_gpu_percent=10, power_watts=80.0, temperature_celsius=45,
                       memory_used_bytes=2 * GIB, throttle_reasons=0))
    return out


@pytest.fixture
def week_db(tmp_path) -> Path:
    path = tmp_path / "gpm.db"
    conn = open_db(path)
    save_samples(conn, "lab", week_samples())
    conn.close()
    return path


def report_json(gpm, db: Path, *args) -> dict:
    proc = gpm("--db", db, "report", *args, "--format", "json", env=UTC, check=True)
    return json.loads(proc.stdout)


GPU0 = {
    "host": "lab", "gpu_index": 0, "gpu_uuid": "GPU-0aaaaaaa-0000", "gpu_name": "NVIDIA GeForce RTX 4090",
    "samples": 1080, "first_sample_ms": MON + 8 * HOUR, "last_sample_ms": MON + 35 * HOUR - 10_000,
    "sampled_seconds": 10780.0, "busy_seconds": 7180.0,
    "utilization_mean_percent": 50.0, "utilization_p95_percent": 100,
    "temperature_mean_celsius": 56.67, "temperature_max_celsius": 70,
    "memory_peak_bytes": 8 * GIB, "memory_total_bytes": 24 * GIB, "power_mean_watts": 116.667,
    # 898 kJ in Monday's block + 1 MJ counted across the gap + 358 kJ on
    # Tuesday (the reload's negative step skipped).
    "energy_joules": 2256000.0, "energy_method": "energy_counter",
    "throttled_seconds": 590.0,
    "throttle_reasons_seconds": {"sw_power_cap": 590.0, "hw_slowdown": 0.0, "sw_thermal_slowdown": 0.0,
                                 "hw_thermal_slowdown": 0.0, "hw_power_brake_slowdown": 0.0},
}
GPU1 = {
    **GPU0, "gpu_index": 1, "gpu_uuid": "GPU-1aaaaaaa-0000", "busy_seconds": 10780.0,
    "utilization_mean_percent": 10.0, "utilization_p95_percent": 10,
    "temperature_mean_celsius": 45.0, "temperature_max_celsius": 45,
    "memory_peak_bytes": 2 * GIB, "power_mean_watts": 80.0,
    # 80 W over the 719 + 359 ten-second intervals that are not gaps.
    "energy_joules": 862400.0, "energy_method": "integrated_power",
    "throttled_seconds": 0.0,
    "throttle_reasons_seconds": {k: 0.0 for k in GPU0["throttle_reasons_seconds"]},
}


def _day(n: int, **values) -> dict:
    start = MON + n * 24 * HOUR
    base = {"date": f"2025-11-{17 + n}", "start_ms": start, "end_ms": start + 24 * HOUR,
            "sampled_seconds": 0.0, "busy_seconds": 0.0, "utilization_mean_percent": None,
            "energy_joules": None}
    return {**base, **values}


def test_json_of_a_known_week_is_exact(gpm, week_db):
    got = report_json(gpm, week_db, "--week", WEEK)
    generated = got["report"].pop("generated_ms")
    assert abs(generated - time.time() * 1000) < 120_000
    week_ms = 7 * 24 * HOUR
    last = MON + 35 * HOUR - 10_000
    assert got == {
        "report": {"version": 1, "since_ms": MON, "until_ms": MON + week_ms,
                   "since": "2025-11-17T00:00:00.000Z", "until": "2025-11-24T00:00:00.000Z",
                   "range_seconds": 604800.0, "iso_week": WEEK, "busy_threshold_percent": 5.0},
        "coverage": [{
            "host": "lab", "range_seconds": 604800.0, "first_sample_ms": MON + 8 * HOUR,
            "last_sample_ms": last, "sampled_seconds": 10780.0, "coverage_ratio": 0.0178,
            "gap_seconds": 594020.0,
            "gaps": [
                {"start_ms": MON, "end_ms": MON + 8 * HOUR, "seconds": 28800.0},
                {"start_ms": MON + 10 * HOUR - 10_000, "end_ms": MON + 34 * HOUR, "seconds": 86410.0},
                {"start_ms": last, "end_ms": MON + week_ms, "seconds": (MON + week_ms - last) / 1000},
            ],
        }],
        "hosts": [{"host": "lab", "sampled_seconds": 10780.0, "coverage_ratio": 0.0178, "gpus": 2,
                   "gpu_sampled_seconds": 21560.0, "busy_seconds": 17960.0,
                   "utilization_mean_percent": 30.0, "energy_joules": 3118400.0,
                   "energy_methods": ["energy_counter", "integrated_power"], "throttled_seconds": 590.0}],
        "fleet": {"hosts": 1, "gpus": 2, "gpu_sampled_seconds": 21560.0, "busy_seconds": 17960.0,
                  "utilization_mean_percent": 30.0, "energy_joules": 3118400.0,
                  "energy_methods": ["energy_counter", "integrated_power"], "throttled_seconds": 590.0},
        "gpus": [GPU0, GPU1],
        "days": [
            _day(0, sampled_seconds=14380.0, busy_seconds=10780.0, utilization_mean_percent=30.0,
                 energy_joules=898000.0 + 575200.0),
            _day(1, sampled_seconds=7180.0, busy_seconds=7180.0, utilization_mean_percent=30.0,
                 energy_joules=1358000.0 + 287200.0),
            *[_day(n) for n in range(2, 7)],
        ],
        "omitted": {
            "workload": "this version of gpm report does not read process_events yet",
            "games": "this version of gpm report does not read process_events yet",
            "llm": "this version of gpm report does not read llm_requests yet",
            "processes": "this version of gpm report does not read process_events yet",
        },
    }


def test_energy_is_the_counter_delta_not_averaged_power(gpm, week_db):
    gpus = report_json(gpm, week_db, "--week", WEEK)["gpus"]
    naive = gpus[0]["power_mean_watts"] * gpus[0]["sampled_seconds"]
    assert gpus[0]["energy_joules"] == 2_256_000.0
    assert naive == pytest.approx(1_257_670, rel=1e-4)


def test_text_matches_the_reviewed_golden_file(gpm, week_db):
    proc = gpm("--db", week_db, "report", "--week", WEEK, env=UTC, check=True)
    if os.environ.get("REGENERATE_GOLDEN"):
        GOLDEN.write_text(proc.stdout, encoding="utf-8")
    assert proc.stdout == GOLDEN.read_text(encoding="utf-8"), (
        "text report changed: review it, then regenerate with REGENERATE_GOLDEN=1 pytest tests/test_report.py"
    )
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100
    assert "\x1b[" not in proc.stdout


def test_cached_hours_give_the_same_report_and_follow_new_rows(gpm, week_db):
    first = report_json(gpm, week_db, "--week", WEEK)
    conn = sqlite3.connect(week_db)
    assert conn.execute("SELECT count(*) FROM report_hours").fetchone()[0] == 3
    again = report_json(gpm, week_db, "--week", WEEK)
    fresh = report_json(gpm, week_db, "--week", WEEK, "--no-cache")
    for r in (first, again, fresh):
        r["report"].pop("generated_ms")
    assert first == again == fresh
    # A row written late into the middle of a cached hour leaves the hour's
    # fingerprint (first and last sample) unchanged: the cache does not see
    # it, --no-cache does (the README says so).
    db = open_db(week_db)
    save_samples(db, "lab", [gpu(MON + 8 * HOUR + 5_000, 1, utilization_gpu_percent=10, power_watts=80.0,
                                 temperature_celsius=45, memory_used_bytes=2 * GIB, throttle_reasons=0)])
    db.close()
    assert report_json(gpm, week_db, "--week", WEEK)["gpus"][1]["samples"] == 1080
    late = report_json(gpm, week_db, "--week", WEEK, "--no-cache")
    assert late["gpus"][1]["samples"] == 1081


def write_archive(rows_db: Path, archive: Path, host: str) -> None:
    """Lay the database's rows out as the archive issue does: table/host=/date=/*.parquet."""
    import polars as pl

    conn = sqlite3.connect(rows_db)
    cur = conn.execute(
        "SELECT g.uuid AS gpu_uuid, g.gpu_index, g.name AS gpu_name, g.memory_total_bytes, m.* "
        "FROM gpu_metrics m "
        "JOIN gpus g ON g.id = m.gpu_id ORDER BY g.uuid, m.ts_ms")
    names = [d[0] for d in cur.description]
    frame = pl.DataFrame(cur.fetchall(), schema=names, orient="row", infer_schema_length=None).drop("gpu_id")
    frame = frame.with_columns(date=pl.from_epoch("ts_ms", time_unit="ms").dt.strftime("%Y-%m-%d"))
    for (day,), part in frame.group_by("date"):
        folder = archive / "gpu_metrics" / f"host={host}" / f"date={day}"
        folder.mkdir(parents=True)
        part.drop("date").write_parquet(folder / "part-0.parquet")


def test_archive_gives_the_same_figures_and_many_hosts_add_up(gpm, week_db, tmp_path):
    archive = tmp_path / "archive"
    write_archive(week_db, archive, "lab")
    write_archive(week_db, archive, "rig")
    empty = tmp_path / "empty.db"
    from_db = report_json(gpm, week_db, "--week", WEEK)
    from_archive = report_json(gpm, empty, "--week", WEEK, "--archive-dir", archive, "--host", "lab")
    for r in (from_db, from_archive):
        r["report"].pop("generated_ms")
    assert from_archive == from_db
    both = report_json(gpm, empty, "--week", WEEK, "--archive-dir", archive)
    assert [h["host"] for h in both["hosts"]] == ["lab", "rig"]
    assert both["fleet"]["gpus"] == 4
    assert both["fleet"]["energy_joules"] == 2 * 3118400.0
    text = gpm("--db", empty, "report", "--week", WEEK, "--archive-dir", archive, "--section", "hosts",
               env=UTC, check=True).stdout
    assert "fleet" in text and "rig" in text


def test_weekly_summary_is_replaced_not_duplicated_and_feeds_the_trend(gpm, tmp_path):
    db = tmp_path / "gpm.db"
    now = resolve_period(now_ms=int(time.time() * 1000))
    last_week = time.strftime("%G-W%V", time.gmtime(now.until_ms / 1000 - 7 * 86400))
    start, _ = week_bounds(last_week)
    conn = open_db(db)
    save_samples(conn, "lab", [gpu(start + HOUR + i * 10_000, 0, utilization_gpu_percent=100, power_watts=100.0,
                                   energy_joules=1000.0 + i * 1000) for i in range(361)])
    conn.close()
    for _ in range(2):
        gpm("--db", db, "report", "--week", last_week, env=UTC, check=True)
    rows = sqlite3.connect(db).execute("SELECT iso_week, host, energy_joules, busy_seconds "
                                       "FROM weekly_summaries").fetchall()
    assert rows == [(last_week, "lab", 360000.0, 3600.0)]
    trend = report_json(gpm, db, "--weeks", "3")["trend"]
    assert [t["iso_week"] for t in trend][-1] == last_week
    assert trend[-1]["energy_joules"] == 360000.0 and trend[-1]["gpus"] == 1
    assert trend[0]["gpus"] == 0 and trend[0]["energy_joules"] is None
    csv_text = gpm("--db", db, "report", "--weeks", "3", "--format", "csv", "--section", "trend",
                   env=UTC, check=True).stdout
    assert csv_text.splitlines()[0].startswith("iso_week,week_start_ms,week_end_ms,hosts,gpus")


def test_output_is_atomic_and_runs_never_overlap(gpm, week_db, tmp_path):
    from gpm.report.output import job_lock

    out = tmp_path / "week.md"
    gpm("--db", week_db, "report", "--week", WEEK, "--format", "markdown", "-o", out, env=UTC, check=True)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# gpm report: 2025-W47") and "## Per GPU" in text
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with job_lock("report"):
        proc = gpm("--db", week_db, "report", "--week", WEEK, "-o", out, env=UTC)
    assert proc.returncode == 75 and "another `gpm report` is running" in proc.stderr
    assert out.read_text(encoding="utf-8") == text


def test_csv_gives_one_section_in_machine_units(gpm, week_db):
    proc = gpm("--db", week_db, "report", "--week", WEEK, "--format", "csv", "--section", "gaps",
               env=UTC, check=True)
    assert proc.stdout.splitlines() == [
        "host,start_ms,end_ms,seconds",
        f"lab,{MON},{MON + 8 * HOUR},28800.0",
        f"lab,{MON + 10 * HOUR - 10_000},{MON + 34 * HOUR},86410.0",
        f"lab,{MON + 35 * HOUR - 10_000},{MON + 7 * 24 * HOUR},478810.0",
    ]
    bad = gpm("--db", week_db, "report", "--format", "csv", "--section", "gpus", "--section", "days", env=UTC)
    assert bad.returncode == 2 and bad.stderr.startswith("gpm: --format csv prints one section")


def test_gpu_filter_and_empty_range(gpm, week_db):
    only = report_json(gpm, week_db, "--week", WEEK, "--gpu", "1")
    assert [g["gpu_index"] for g in only["gpus"]] == [1]
    by_uuid = report_json(gpm, week_db, "--week", WEEK, "--gpu", "GPU-0aaa")
    assert [g["gpu_index"] for g in by_uuid["gpus"]] == [0]
    empty = gpm("--db", week_db, "report", "--week", "2025-W40", env=UTC, check=True).stdout
    assert "Per GPU: omitted, no GPU samples in this range." in empty
    assert "Coverage" in empty and "0.0%" in empty


@pytest.mark.parametrize("args, message", [
    (["--week", "2025-W54"], "--week '2025-W54': 2025 has no week 54"),
    (["--since", "yesterday"], "--since 'yesterday': expected a date"),
    (["--since", "1d", "--until", "2d"], "empty range"),
    (["--week", "2025-W47", "--since", "1d"], "--week cannot be combined"),
])
def test_bad_ranges_are_one_line_usage_errors(gpm, week_db, args, message):
    proc = gpm("--db", week_db, "report", *args, env=UTC)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_ranges():
    now = MON + 3 * 24 * HOUR + 5 * HOUR
    assert resolve_period(now_ms=now).since_ms == now - 7 * 24 * HOUR
    assert resolve_period(now_ms=now, since="24h").since_ms == now - 24 * HOUR
    p = resolve_period(now_ms=now, since="2025-11-17", until="2025-11-24")
    assert (p.since_ms, p.until_ms, p.iso_week) == (MON, MON + 7 * 24 * HOUR, WEEK)
    assert resolve_period(now_ms=now, since="2025-11-17T08:00:00Z").since_ms == MON + 8 * HOUR
    assert resolve_period(now_ms=now, since="2025-11-17T09:00+01:00").since_ms == MON + 8 * HOUR


def test_sparkline_marks_missing_days():
    assert sparkline([0, 50, 100, None], 100) == "▁▅█·"


def test_help_documents_every_option(gpm):
    out = gpm("report", "--help", check=True).stdout
    for option in ("--week", "--since", "--until", "--host", "--gpu", "--format", "--section", "--weeks",
                   "--archive-dir", "--busy-threshold", "--output", "--no-cache", "75"):
        assert option in out
