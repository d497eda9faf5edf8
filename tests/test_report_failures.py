"""#13.2: the report names the spans a GPU failed (``GPU 1 (RTX A6000): lost ... back at``)."""

from __future__ import annotations

import json
import sqlite3

from gpm.humanize import short_gpu_name
from gpm.report.period import fmt_local
from tests.conftest import run_gpm
from tests.fakes.nvml import Scenario


def _sample(fake_nvml, db, scenario: Scenario) -> int:
    fake_nvml.set(scenario)
    return run_gpm("--db", db, "sample", env=fake_nvml.env()).returncode


def test_a_lost_gpu_is_one_span_in_the_report_from_its_first_failure_to_its_return(fake_nvml, tmp_path):
    good, lost = Scenario.many(2), Scenario.many(2)
    lost.gpus[1].lost_after = 0
    db = tmp_path / "gpm.db"
    assert [_sample(fake_nvml, db, s) for s in (good, lost, lost, good)] == [0, 1, 1, 0]
    gpu = good.gpus[1]
    times = [t for (t,) in sqlite3.connect(db).execute(
        "SELECT ts_ms FROM gpu_samples WHERE gpu_uuid = ? ORDER BY ts_ms", (gpu.uuid,))]
    assert len(times) == 4

    result = run_gpm("--db", db, "report", "--format", "json", env=fake_nvml.env())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["failures"] == [{
        "host": json.loads(result.stdout)["coverage"][0]["host"], "gpu_index": 1, "gpu_uuid": gpu.uuid,
        "gpu_name": gpu.name, "status": "gpu_is_lost", "since_ms": times[1], "until_ms": times[3], "samples": 2}]

    text = run_gpm("--db", db, "report", env=fake_nvml.env()).stdout
    since, back = fmt_local(times[1]), fmt_local(times[3])
    back = back[11:] if back[:10] == since[:10] else back
    line = f"GPU 1 ({short_gpu_name(gpu.name)}): lost (gpu_is_lost) at {since}, back at {back}."
    assert text.splitlines().count(line) == 1
    assert "GPU failures: none." not in text


def test_a_gpu_still_lost_at_the_end_is_said_so_and_a_gpu_never_seen_good_is_gpu_n(fake_nvml, tmp_path):
    lost = Scenario.many(2)
    lost.gpus[1].lost_after = 0
    db = tmp_path / "gpm.db"
    assert [_sample(fake_nvml, db, lost) for _ in range(2)] == [1, 1]
    first = sqlite3.connect(db).execute("SELECT MIN(ts_ms) FROM gpu_samples WHERE gpu_index = 1").fetchone()[0]

    obj = json.loads(run_gpm("--db", db, "report", "--format", "json", env=fake_nvml.env()).stdout)
    assert [(f["gpu_index"], f["gpu_uuid"], f["gpu_name"], f["since_ms"], f["until_ms"], f["samples"])
            for f in obj["failures"]] == [(1, None, None, first, None, 2)]
    text = run_gpm("--db", db, "report", env=fake_nvml.env()).stdout
    assert f"GPU 1: lost (gpu_is_lost) at {fmt_local(first)}, still failing at the end of the range." in " ".join(text.split())
    assert max(map(len, text.splitlines())) <= 80  # wrapped, not cut


def test_a_report_without_failures_says_none(fake_nvml, tmp_path):
    db = tmp_path / "gpm.db"
    assert _sample(fake_nvml, db, Scenario.many(2)) == 0
    text = run_gpm("--db", db, "report", env=fake_nvml.env()).stdout
    assert text.splitlines().count("GPU failures: none.") == 1
    obj = json.loads(run_gpm("--db", db, "report", "--format", "json", env=fake_nvml.env()).stdout)
    assert obj["failures"] == []
