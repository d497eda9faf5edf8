"""process_events: one row per run, extended each sample; time, memory and energy shares add up."""

from __future__ import annotations

import sqlite3

from gpm.config import load_config
from gpm.gpu.sample import GpuProcess, GpuSample, ProcessDetails
from gpm.sampling import Sampler
from gpm.store.db import open_db

GiB = 1024**3
T0 = 1_700_000_000_000


def proc(pid, mem, sm=None, start=T0 - 60_000, category="gaming", label="Wildermyth"):
    return GpuProcess(pid=pid, used_memory_bytes=mem, sm_utilization_percent=sm, name=f"p{pid}",
                      category=category, label=label, reason="test",
                      details=ProcessDetails(user="me", exe=f"/bin/p{pid}", cmdline=["p", "--token", "***"],
                                             start_time_ms=start))


def gpu(ts, energy, procs, power=200.0):
    return GpuSample(ts_ms=ts, index=0, source="nvml", uuid="GPU-1", name="Fake", energy_joules=energy,
                     power_watts=power, processes=procs)


def runs(conn):
    conn.row_factory = sqlite3.Row
    return [dict(r) for r in conn.execute("SELECT * FROM process_runs ORDER BY pid, first_seen_ms")]


def store(tmp_path, samples):
    conn = open_db(tmp_path / "gpm.db")
    sampler = Sampler(load_config(), conn=conn, host="box")
    for s in samples:
        sampler.store([s])
    return conn, sampler


def test_energy_is_split_by_sm_share_and_time_is_counted_per_interval(tmp_path):
    conn, _ = store(tmp_path, [
        gpu(T0, 1000.0, [proc(1, 4 * GiB, 75), proc(2, 1 * GiB, 25, category="llm_inference", label="llama3")]),
        gpu(T0 + 10_000, 3000.0, [proc(1, 6 * GiB, 75), proc(2, 1 * GiB, 25, category="llm_inference",
                                                            label="llama3")]),
    ])
    game, llm = runs(conn)
    assert (game["samples"], game["gpu_seconds"], game["max_used_memory_bytes"]) == (2, 10.0, 6 * GiB)
    assert game["energy_joules"] == 1500.0 and llm["energy_joules"] == 500.0
    assert (game["host"], game["gpu_uuid"], llm["label"]) == ("box", "GPU-1", "llama3")
    assert game["mean_used_memory_bytes"] == 6 * GiB


def test_memory_share_without_sm_and_power_without_energy_counter(tmp_path):
    conn, _ = store(tmp_path, [
        gpu(T0, None, [proc(1, 3 * GiB), proc(2, 1 * GiB)]),
        gpu(T0 + 4_000, None, [proc(1, 3 * GiB), proc(2, 1 * GiB)], power=100.0),
    ])
    a, b = runs(conn)
    assert (a["energy_joules"], b["energy_joules"]) == (300.0, 100.0)


def test_new_process_is_credited_from_its_start_and_long_gaps_are_not_counted(tmp_path):
    late = proc(3, GiB, start=T0 + 8_000)
    conn, _ = store(tmp_path, [
        gpu(T0, 0.0, [proc(1, GiB)]),
        gpu(T0 + 10_000, 1000.0, [proc(1, GiB), late]),
        gpu(T0 + 3_600_000, 2000.0, [proc(1, GiB), late]),  # gpm was off for an hour
    ])
    first, third = runs(conn)
    assert first["gpu_seconds"] == 10.0 and first["samples"] == 3
    assert third["gpu_seconds"] == 2.0
    assert first["last_seen_ms"] == T0 + 3_600_000


def test_pid_reuse_starts_a_new_row_and_resaving_changes_nothing(tmp_path):
    s1 = gpu(T0, 0.0, [proc(7, GiB, start=T0 - 1000)])
    s2 = gpu(T0 + 2000, 10.0, [proc(7, GiB, start=T0 + 1000, category="ml_training", label="train.py")])
    conn, sampler = store(tmp_path, [s1, s2])
    gpu_id = conn.execute("SELECT id FROM gpus").fetchone()[0]
    for save in sampler.savers:  # the same sample again, as a retried cron run would
        save(conn, "box", [s2], {0: gpu_id})
    rows = runs(conn)
    assert [(r["label"], r["samples"]) for r in rows] == [("Wildermyth", 1), ("train.py", 1)]
    assert rows[1]["cmdline"] == '["p", "--token", "***"]'


def test_classification_of_a_run_follows_the_latest_sample(tmp_path):
    conn, _ = store(tmp_path, [
        gpu(T0, 0.0, [proc(5, GiB, category="general_compute", label="train.py")]),
        gpu(T0 + 2000, 1.0, [proc(5, GiB, category="ml_training", label="train.py")]),
    ])
    (row,) = runs(conn)
    assert row["category"] == "ml_training" and row["samples"] == 2


def test_readme_queries_run(tmp_path):
    import re
    import time

    from tests.conftest import REPO

    section = (REPO / "docs" / "classify.md").read_text()
    queries = re.findall(r'^sqlite3 -header \S+ "(.+)"$', section, re.M)
    now = int(time.time() * 1000)
    conn, _ = store(tmp_path, [gpu(now - 360_000, 0.0, [proc(1, GiB, start=now - 600_000)]),
                               gpu(now, 36_000.0, [proc(1, GiB, start=now - 600_000)])])
    (query,) = queries
    assert conn.execute(query).fetchall() == [("Wildermyth", 0.1, 0.01)]
