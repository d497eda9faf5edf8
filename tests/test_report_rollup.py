"""The report's rollup beside the archive (gpm.report.rollup): `gpm archive`
stores each archived day's rollup beside its Parquet, another host's raw
archive is rolled up once and stored beside its files, and a report read
from the rollup says exactly what the one read from every raw row says."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from gpm.gpu.sample import GpuSample
from gpm.humanize import display_width
from gpm.store.db import open_db
from gpm.store.samples import save_samples

DAY = 86_400_000
MIN = 60_000
D0 = 1740960000000  # 2025-03-03T00:00:00Z
GIB = 1 << 30


def gpu(ts_ms: int, index: int, **values) -> GpuSample:
    return GpuSample(ts_ms=ts_ms, index=index, source="nvml", uuid=f"GPU-{index}bbbbbbb-0000",
                     name="NVIDIA GeForce RTX 4090", memory_total_bytes=24 * GIB, **values)


def samples() -> list[GpuSample]:
    """Two days and a half of three GPUs with what makes a rollup hard to get right.

    GPU 0 every 10 s with a counter that resets (a driver reload), readings
    missing now and then, and none at all for the first 3 minutes of one
    quarter (its energy then starts from the previous quarter's last reading:
    only the minutes tell), a 4-minute gap and a 100-s stop inside quarters, a
    10-minute gap across two;
    GPUs 1 and 2 every 30 s (so the gap threshold is 150 s and the 100-s stop
    is no gap), GPU 2 without a counter (integrated power), throttled by day.
    """
    out = []
    energy = 5_000_000.0
    for i, ts in enumerate(range(D0 + 7_000, D0 + 2 * DAY + DAY // 2, 10_000)):
        offset = ts - D0
        if 10 * 3600_000 + 3 * MIN <= offset < 10 * 3600_000 + 7 * MIN:
            continue  # a gap inside one quarter
        if 15 * 3600_000 + 10 * MIN <= offset < 15 * 3600_000 + 20 * MIN:
            continue  # a gap across quarters
        if 30 * 3600_000 + 20 * MIN <= offset < 30 * 3600_000 + 20 * MIN + 100_000:
            continue  # a 100-s stop
        util = (i * 37) % 101
        power = 40.0 + util * 2.5
        energy += power * 10
        if offset == 20 * 3600_000 + 7_000:
            energy = 1_000.0  # counter reset
        reading = None if 40 * 3600_000 < offset < 40 * 3600_000 + 5 * MIN and i % 3 == 0 else round(energy, 3)
        if 44 * 3600_000 <= offset < 44 * 3600_000 + 3 * MIN:
            reading = None  # the counter unreadable for a quarter's first minutes
        out.append(gpu(ts, 0, utilization_gpu_percent=util, power_watts=power, energy_joules=reading,
                       temperature_celsius=35 + util // 4, memory_used_bytes=(util + 1) * 100_000_000,
                       throttle_reasons=4 if util > 90 else 0))
        if i % 3 == 0:
            for index in (1, 2):
                u = (i * 13 + index * 29) % 101
                out.append(gpu(ts + index * 1_000, index, utilization_gpu_percent=u, power_watts=30.0 + u,
                               energy_joules=(energy * index) if index == 1 else None,
                               temperature_celsius=40 + u // 5, memory_used_bytes=GIB,
                               throttle_reasons=(1 if u < 3 else 4 if u > 70 else 0)))
    return out


@pytest.fixture(scope="module")
def archived(tmp_path_factory) -> tuple[Path, Path]:
    """A database whose rows `gpm archive` moved (with their reductions) into an archive."""
    from tests.conftest import run_gpm

    folder = tmp_path_factory.mktemp("quarters")
    db, archive = folder / "lab.db", folder / "archive"
    conn = open_db(db)
    save_samples(conn, "lab", samples())
    conn.close()
    run_gpm("--db", db, "archive", "--archive-dir", archive, "--older-than", "1", env={"TZ": "UTC"}, check=True)
    return db, archive


def report(gpm, db: Path, archive: Path, tz: str, *args) -> dict:
    proc = gpm("--db", db, "report", "--archive-dir", archive, "--format", "json", *args,
               env={"TZ": tz, "NO_COLOR": "1", "XDG_CACHE_HOME": str(archive.parent / "cache")}, check=True)
    out = json.loads(proc.stdout)
    out["report"].pop("generated_ms")
    return out


def test_gpm_archive_stores_each_days_rollup_beside_its_files(archived):
    db, archive = archived
    assert sqlite3.connect(db).execute("SELECT count(*) FROM gpu_metrics").fetchone()[0] == 0
    days = sorted(p.name for p in (archive / "gpu_reductions" / "host=lab").iterdir())
    assert days == ["date=2025-03-03", "date=2025-03-04", "date=2025-03-05"]
    meta = json.loads((archive / "gpu_reductions" / "host=lab" / days[0] / "sources.json").read_text())
    files = sorted(p.name for p in (archive / "gpu_metrics" / "host=lab" / days[0]).glob("*.parquet"))
    assert [name for name, _ in meta["files"]] == files
    assert meta["busy_threshold_percent"] == 5.0


@pytest.mark.parametrize("tz, since, until", [
    ("UTC", "2025-03-03", "2025-03-05"),  # whole days: rollup only
    ("Asia/Kolkata", "2025-03-03", "2025-03-05"),  # +05:30: days cut at a half hour, edge hours raw
    ("XST-05:20", "2025-03-03", "2025-03-06"),  # +05:20: local midnight at 40 past the hour
    ("UTC", "2025-03-03T06:07:30", "2025-03-05T09:10:20"),  # partial minutes and hours at both ends
])
def test_the_rollup_gives_exactly_the_raw_rows_report(gpm, archived, tmp_path, tz, since, until):
    db, archive = archived
    empty = tmp_path / "other.db"
    minutes = report(gpm, empty, archive, tz, "--since", since, "--until", until, "--no-cache")
    assert minutes["gpus"][0]["energy_method"] == "energy_counter"
    assert minutes["gpus"][2]["energy_method"] == "integrated_power"
    assert len(minutes["coverage"][0]["gaps"]) >= 2
    # A copied archive (another database), the archiving database itself
    # (through its manifest), and the same archive without stored rollups
    # (rolled up by the first report and stored beside the files, then read from there).
    assert report(gpm, empty, archive, tz, "--since", since, "--until", until) == minutes
    assert report(gpm, db, archive, tz, "--since", since, "--until", until) == minutes
    bare = tmp_path / "bare"
    shutil.copytree(archive / "gpu_metrics", bare / "gpu_metrics")
    assert report(gpm, empty, bare, tz, "--since", since, "--until", until) == minutes
    stored = sorted(p.name for p in (bare / "gpu_reductions" / "host=lab").iterdir())
    assert stored and all((bare / "gpu_reductions" / "host=lab" / d / "sources.json").is_file() for d in stored)
    assert report(gpm, empty, bare, tz, "--since", since, "--until", until) == minutes


def test_a_changed_day_is_read_raw_not_from_its_stale_rollup(gpm, archived, tmp_path):
    db, archive = archived
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    day = copy / "gpu_metrics" / "host=lab" / "date=2025-03-04"
    import polars as pl

    part = next(day.glob("*.parquet"))
    frame = pl.read_parquet(part)
    part.unlink()
    frame.head(frame.height // 2).write_parquet(day / "part-1-half.parquet")
    empty = tmp_path / "other.db"
    args = ("--since", "2025-03-03", "--until", "2025-03-05")
    assert report(gpm, empty, copy, "UTC", *args) == report(gpm, empty, copy, "UTC", *args, "--no-cache")


def test_a_long_range_shows_weeks_in_80_columns_and_json_keeps_every_day(gpm, archived):
    db, archive = archived
    args = ("--db", db, "report", "--archive-dir", archive, "--since", "2025-01-01", "--until", "2025-06-01")
    text = gpm(*args, env={"TZ": "UTC", "NO_COLOR": "1"}, check=True).stdout
    assert max(display_width(line) for line in text.splitlines()) <= 80
    days = text[text.index("Per day"):]
    assert "weeks        Jan" in days and "2025-W10  " in days and "Mon 03-03" not in days
    assert "0–" in days and "per week" in days
    # A year is 53 weeks: its strip wraps within 80 columns (#13.1; it was 87 wide).
    year = gpm("--db", db, "report", "--archive-dir", archive, "--since", "2025-01-01", "--until", "2026-01-01",
               "--section", "days", env={"TZ": "UTC", "NO_COLOR": "1"}, check=True).stdout
    assert max(display_width(line) for line in year.splitlines()) <= 80
    assert [line.split()[0] for line in year.splitlines() if line.startswith(("weeks ", "energy "))] == \
        ["weeks", "energy", "weeks", "energy"]
    data = json.loads(gpm(*args, "--format", "json", env={"TZ": "UTC"}, check=True).stdout)
    assert len(data["days"]) == 151
    assert data["days"][61]["date"] == "2025-03-03" and data["days"][61]["sampled_seconds"] > 0


def test_gpm_archive_rolls_up_days_archived_without_a_rollup(gpm, archived, tmp_path):
    db, archive = archived
    shutil.copy(db, tmp_path / "lab.db")
    shutil.copytree(archive, tmp_path / "archive")
    shutil.rmtree(tmp_path / "archive" / "gpu_reductions" / "host=lab" / "date=2025-03-04")
    gpm("--db", tmp_path / "lab.db", "archive", "--archive-dir", tmp_path / "archive", "--older-than", "1",
        env={"TZ": "UTC"}, check=True)
    day = tmp_path / "archive" / "gpu_reductions" / "host=lab" / "date=2025-03-04"
    assert sorted(p.name for p in day.iterdir()) == ["hist.pq", "minutes.pq", "sources.json"]
