"""NVML faults on the fake libnvidia-ml.so.1: init failures, a GPU lost and back, slow calls, a new GPU.

The daemon runs as a real process; the fake's world changes under it by
rewriting the scenario file.  After each fault: the healthy GPUs have a row
at every tick, the faulty one is recorded as it is, the daemon recovers by
itself, the database is intact and nothing printed a traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, run_gpm
from tests.fakes.nvml import Scenario
from tests.faults.conftest import assert_no_traceback, fast_env, integrity, query, ticks, wait_until

SMI_CAPTURE = FIXTURES / "nvidia-smi" / "netdata__rtx-4090-driver-535.xml"
FAKE_SMI = Path(__file__).resolve().parents[1] / "fakes" / "nvidia-smi"


@pytest.mark.parametrize("init_error, reason", [
    ("DRIVER_NOT_LOADED", "NVIDIA driver not loaded"),
    ("NO_PERMISSION", "no permission to open the GPU (check access to /dev/nvidia*)"),
    ("LIBRARY_NOT_FOUND", "libnvidia-ml.so.1 not found: is the NVIDIA driver installed?"),
    ("LIB_RM_VERSION_MISMATCH", "NVIDIA driver/library version mismatch"),
    ("INSUFFICIENT_SIZE", "answered 'Insufficient Size' at start-up"),
    ("UNKNOWN", "answered 'Unknown Error' at start-up"),
])
def test_each_init_failure_is_exit_69_and_a_line_per_backend_naming_the_reason(
        fake_nvml, tmp_path, init_error, reason):
    fake_nvml.set(Scenario(init_error=init_error))
    env = fake_nvml.env()
    env["GPM_GPU_FALLBACK_TO_NVIDIA_SMI"] = "false"
    db = tmp_path / "gpm.db"
    result = run_gpm("--db", db, "sample", env=env)
    assert result.returncode == 69
    assert result.stdout == ""
    nvml, smi, hint = result.stderr.splitlines()  # #13.10: one short line per backend, then where to read
    assert nvml.startswith("gpm: NVML: ") and reason in nvml, nvml
    assert smi == "gpm: nvidia-smi: fallback disabled by [gpu] fallback_to_nvidia_smi"
    assert hint == "gpm: no GPU here? see docs/without-gpu.md"
    assert_no_traceback(result.stderr)


@pytest.mark.skipif(not SMI_CAPTURE.exists(), reason="../shared/fixtures/nvidia-smi is absent")
@pytest.mark.parametrize("init_error", ["NO_PERMISSION", "INSUFFICIENT_SIZE", "UNKNOWN"])
def test_each_init_failure_falls_back_to_nvidia_smi_when_it_works(fake_nvml, tmp_path, init_error):
    fake_nvml.set(Scenario(init_error=init_error))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(FAKE_SMI, bindir / "nvidia-smi")
    env = fake_nvml.env()
    env.update(PATH=f"{bindir}:{env['PATH']}", FAKE_SMI_XML=str(SMI_CAPTURE))
    db = tmp_path / "gpm.db"
    result = run_gpm("--db", db, "sample", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["source"] == "nvidia-smi"
    assert query(db, "SELECT source, gpu_name FROM gpu_samples") == [("nvidia-smi", "NVIDIA GeForce RTX 4090")]
    assert result.stderr.count("\n") == 1 and "NVML unavailable; using nvidia-smi" in result.stderr
    assert_no_traceback(result.stderr)


def healthy_rows_at_every_tick(db: Path, healthy: set[int], total: int) -> list[tuple[int, tuple]]:
    """Every stored tick has a row for each GPU, and the healthy ones read ok."""
    seen = ticks(db)
    for ts, rows in seen:
        assert [i for i, _ in rows] == list(range(total)), (ts, rows)
        assert all(status == "ok" for i, status in rows if i in healthy), (ts, rows)
    return seen


def started(fake_nvml, daemon, scenario: Scenario):
    """A daemon on ``scenario`` that has stored 3 ticks."""
    fake_nvml.set(scenario)
    d = daemon(fast_env(fake_nvml))
    wait_until(lambda: len(ticks(d.db)) >= 3, what="3 ticks before the fault")
    return d


def test_gpu_lost_mid_run_is_recorded_and_comes_back_while_the_others_keep_sampling(fake_nvml, tmp_path, daemon):
    d = started(fake_nvml, daemon, Scenario.many(3))
    lost = Scenario.many(3)
    lost.gpus[1].lost_after = 2  # falls off the bus mid-read
    fake_nvml.set(lost)
    d.wait_for(r"GPU 1 \(GPU-[0-9a-f-]+\) failed: gpu_is_lost")
    wait_until(lambda: sum(r[1][1] == "gpu_is_lost" for _, r in ticks(d.db)) >= 4, what="4 lost ticks")
    fake_nvml.set(Scenario.many(3))
    d.wait_for("GPU 1 .* reads again")
    n = len(ticks(d.db))
    wait_until(lambda: len(ticks(d.db)) >= n + 3, what="3 ticks after recovery")
    rc, _ = d.stop()
    assert rc == 0
    seen = healthy_rows_at_every_tick(d.db, {0, 2}, 3)
    statuses = [rows[1][1] for _, rows in seen]
    first_lost = statuses.index("gpu_is_lost")
    back = first_lost + statuses[first_lost:].index("ok")
    assert set(statuses[:first_lost]) == {"ok"}
    assert set(statuses[first_lost:back]) == {"gpu_is_lost"}
    assert set(statuses[back:]) == {"ok"} and len(statuses) - back >= 3
    assert d.log.count("failed: gpu_is_lost") == 1 and d.log.count("reads again") == 1
    assert integrity(d.db) == "ok"
    assert_no_traceback(d.log)


def test_gpu_lost_when_the_daemon_starts_is_picked_up_when_it_comes_back(fake_nvml, tmp_path, daemon):
    lost = Scenario.many(2)
    lost.gpus[1].handle_error = "GPU_IS_LOST"  # no handle at all: lost before the daemon opened NVML
    d = started(fake_nvml, daemon, lost)
    fake_nvml.set(Scenario.many(2))
    d.wait_for("GPU 1 .* reads again", timeout=5)
    rc, _ = d.stop()
    assert rc == 0
    seen = healthy_rows_at_every_tick(d.db, {0}, 2)
    statuses = [rows[1][1] for _, rows in seen]
    assert statuses[0] == "gpu_is_lost" and statuses[-1] == "ok"
    # once back, it is the same GPU with its real identity
    uuids = {u for u, in query(d.db, "SELECT DISTINCT gpu_uuid FROM gpu_samples WHERE gpu_index = 1 AND status = 'ok'")}
    assert uuids == {Scenario.many(2).gpus[1].uuid}
    assert integrity(d.db) == "ok"
    assert_no_traceback(d.log)


def test_slow_gpu_calls_delay_ticks_but_every_gpu_keeps_its_row_and_speed_comes_back(fake_nvml, tmp_path, daemon):
    d = started(fake_nvml, daemon, Scenario.many(3))
    slow = Scenario.many(3)
    slow.gpus[2].slow_ms = 40  # ~15 calls a tick: ~0.6 s for one sample of this GPU
    fake_nvml.set(slow)
    n = len(ticks(d.db))
    wait_until(lambda: len(ticks(d.db)) >= n + 3, timeout=15, what="3 slow ticks")
    fake_nvml.set(Scenario.many(3))
    n = len(ticks(d.db))
    wait_until(lambda: len(ticks(d.db)) >= n + 5, what="5 ticks after the calls are fast again")
    rc, _ = d.stop()
    assert rc == 0
    seen = healthy_rows_at_every_tick(d.db, {0, 1, 2}, 3)
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:])]
    assert max(gaps) >= 500  # the slow ticks were slow...
    assert sorted(gaps[-4:])[1] < 400  # ...and the schedule is back to 0.2 s after
    assert integrity(d.db) == "ok"
    assert_no_traceback(d.log)


def test_gpu_added_while_the_daemon_runs_is_sampled_from_then_on(fake_nvml, tmp_path, daemon):
    d = started(fake_nvml, daemon, Scenario.many(2))
    fake_nvml.set(Scenario.many(3))
    wait_until(lambda: sum(len(rows) == 3 for _, rows in ticks(d.db)) >= 3, timeout=10,
               what="3 ticks with the new GPU")
    rc, _ = d.stop()
    assert rc == 0
    seen = ticks(d.db)
    sizes = [len(rows) for _, rows in seen]
    first3 = sizes.index(3)
    assert set(sizes[:first3]) == {2} and set(sizes[first3:]) == {3}
    assert all(status == "ok" for _, rows in seen for _, status in rows)
    new_uuid = Scenario.many(3).gpus[2].uuid
    assert query(d.db, "SELECT uuid, gpu_index FROM gpus WHERE uuid = ?", (new_uuid,)) == [(new_uuid, 2)]
    assert d.log.count("is a new GPU: sampling it too") == 1 and "GPU 2 (GPU-" in d.log
    assert integrity(d.db) == "ok"
    assert_no_traceback(d.log)
