"""`gpm sample` on the fake NVML: exact values, faults, schedules and quietness."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, gpm_env, run_gpm
from tests.fakes.clock import FakeClock
from tests.fakes.nvml import FakeProcess, Scenario, make_gpu

MiB = 1024 * 1024


def rows(db, sql="SELECT * FROM gpu_samples ORDER BY ts_ms, gpu_index"):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    return [dict(r) for r in conn.execute(sql)]


def expected_json(gpu, index: int, scenario: Scenario) -> dict:
    """What `gpm sample --json` must print for a fake GPU, from the scenario alone."""
    names = {0x1: "gpu_idle", 0x4: "sw_power_cap", 0x40: "hw_thermal_slowdown"}
    return {
        "gpu_index": index,
        "gpu_uuid": gpu.uuid,
        "gpu_name": gpu.name,
        "utilization_gpu_percent": gpu.util_gpu,
        "utilization_memory_percent": gpu.util_memory,
        "memory_used_bytes": gpu.memory_used,
        "memory_total_bytes": gpu.memory_total,
        "temperature_celsius": gpu.temperature,
        "power_watts": gpu.power_mw / 1000,
        "power_limit_watts": gpu.power_limit_mw / 1000,
        "energy_joules": gpu.energy_mj / 1000,
        "sm_clock_mhz": gpu.clock_sm,
        "memory_clock_mhz": gpu.clock_mem,
        "fan_percent": gpu.fan,
        "pstate": f"P{gpu.pstate}",
        "throttle_reasons": [n for bit, n in sorted(names.items()) if gpu.clocks_event_reasons & bit],
        "driver_version": scenario.driver_version,
        "cuda_version": "12.4",
        "pci_bus_id": gpu.pci_bus_id,
        "source": "nvml",
        "status": "ok",
    }


def four_gpus() -> Scenario:
    me = os.getpid()
    gpus = [make_gpu(i, energy_fixed=True) for i in range(4)]
    gpus[1].fan = None  # a datacenter GPU: no fan
    gpus[2].clocks_event_reasons = 0x4 | 0x40
    gpus[3].processes = [
        FakeProcess(pid=me, used_memory=1536 * MiB, type="compute", sm_util=42),
        FakeProcess(pid=1, used_memory=None, type="graphics"),
    ]
    return Scenario(gpus=gpus)


def test_json_prints_exactly_the_scenario_and_the_database_agrees(fake_nvml, tmp_path):
    scenario = fake_nvml.set(four_gpus())
    db = tmp_path / "gpm.db"
    result = run_gpm("--db", db, "sample", "--json", env=fake_nvml.env())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(objects) == 4
    for index, (obj, gpu) in enumerate(zip(objects, scenario.gpus)):
        want = expected_json(gpu, index, scenario)
        assert {k: obj[k] for k in want} == want
        assert obj["host"] and obj["ts"].endswith("Z")
    procs = objects[3]["processes"]
    assert [(p["pid"], p["used_memory_bytes"], p["type"]) for p in procs] == [
        (1, None, "graphics"), (os.getpid(), 1536 * MiB, "compute")]
    assert procs[1]["name"] == open(f"/proc/{os.getpid()}/comm").read().strip()
    assert procs[1]["sm_utilization_percent"] == 42
    assert objects[1]["fan_percent"] is None

    stored = rows(db)
    assert len(stored) == 4
    for obj, row in zip(objects, stored):
        assert row["ts"] == obj["ts"]
        for key in ("gpu_index", "gpu_uuid", "gpu_name", "utilization_gpu_percent",
                    "utilization_memory_percent", "memory_used_bytes", "memory_total_bytes",
                    "temperature_celsius", "power_watts", "power_limit_watts", "energy_joules",
                    "sm_clock_mhz", "memory_clock_mhz", "fan_percent", "source", "status"):
            assert row[key] == obj[key], key
        assert f"P{row['pstate']}" == obj["pstate"]
    assert rows(db, "SELECT throttle_reasons FROM gpu_samples WHERE gpu_index = 2")[0]["throttle_reasons"] == 0x44


def test_silent_on_success_when_not_a_terminal(fake_nvml, tmp_path):
    result = run_gpm("--db", tmp_path / "gpm.db", "sample", env=fake_nvml.env())
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert len(rows(tmp_path / "gpm.db")) == 1


def test_no_store_writes_nothing(fake_nvml, tmp_path):
    result = run_gpm("--db", tmp_path / "gpm.db", "sample", "--no-store", "--json", env=fake_nvml.env())
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 1


def test_lost_gpu_is_reported_and_the_others_are_stored(fake_nvml, tmp_path):
    scenario = Scenario.many(3)
    scenario.gpus[1].lost_after = 0
    fake_nvml.set(scenario)
    db = tmp_path / "gpm.db"
    result = run_gpm("--db", db, "sample", "--json", env=fake_nvml.env())
    assert result.returncode == 1
    # Lost before its handle could be read: the driver gives no uuid.
    assert result.stderr == "gpm: GPU 1 failed: gpu_is_lost\n"
    assert result.stderr.count("\n") == 1
    statuses = [json.loads(line)["status"] for line in result.stdout.splitlines()]
    assert statuses == ["ok", "gpu_is_lost", "ok"]
    stored = rows(db)
    assert [r["status"] for r in stored] == ["ok", "gpu_is_lost", "ok"]
    assert stored[0]["utilization_gpu_percent"] == scenario.gpus[0].util_gpu
    assert stored[2]["utilization_gpu_percent"] == scenario.gpus[2].util_gpu


def test_gpu_lost_mid_sample_keeps_the_rest(fake_nvml, tmp_path):
    scenario = Scenario.many(2)
    scenario.gpus[0].lost_after = 3  # a few fields read, then the GPU falls off the bus
    fake_nvml.set(scenario)
    result = run_gpm("--db", tmp_path / "gpm.db", "sample", "--json", env=fake_nvml.env())
    assert result.returncode == 1
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["status"] == "gpu_is_lost"
    assert second["status"] == "ok" and second["power_watts"] == scenario.gpus[1].power_mw / 1000


def _gpu_statuses(db) -> dict[str, list[str]]:
    """{gpus.uuid: the statuses of its rows, in time order}, straight from the tables."""
    out: dict[str, list[str]] = {}
    for uuid, status in sqlite3.connect(db).execute(
            "SELECT g.uuid, COALESCE(m.status, 'ok') FROM gpu_metrics m JOIN gpus g ON g.id = m.gpu_id "
            "ORDER BY m.ts_ms, g.gpu_index"):
        out.setdefault(uuid, []).append(status)
    return out


def test_a_lost_gpu_is_stored_under_the_gpu_it_was(fake_nvml, tmp_path):
    """#13.2: good in one run, lost in the next (a new process: only the database
    knows it), back in a third; one GPU, one history."""
    good = Scenario.many(2)
    lost = Scenario.many(2)
    lost.gpus[1].lost_after = 0  # lost before NVML hands out its handle: no UUID from the driver
    db = tmp_path / "gpm.db"
    fake_nvml.set(good)
    assert run_gpm("--db", db, "sample", env=fake_nvml.env()).returncode == 0
    fake_nvml.set(lost)
    result = run_gpm("--db", db, "sample", "--json", env=fake_nvml.env())
    fake_nvml.set(good)
    assert run_gpm("--db", db, "sample", env=fake_nvml.env()).returncode == 0

    gpu = good.gpus[1]
    assert result.returncode == 1
    assert result.stderr == f"gpm: GPU 1 ({gpu.uuid}) failed: gpu_is_lost\n"
    obj = json.loads(result.stdout.splitlines()[1])
    assert (obj["gpu_index"], obj["gpu_uuid"], obj["gpu_name"], obj["pci_bus_id"], obj["status"]) == (
        1, gpu.uuid, gpu.name, gpu.pci_bus_id, "gpu_is_lost")
    assert obj["utilization_gpu_percent"] is None and obj["power_watts"] is None
    assert _gpu_statuses(db) == {good.gpus[0].uuid: ["ok", "ok", "ok"], gpu.uuid: ["ok", "gpu_is_lost", "ok"]}
    assert sqlite3.connect(db).execute("SELECT gpu_index, name, pci_bus_id FROM gpus WHERE uuid = ?",
                                       (gpu.uuid,)).fetchall() == [(1, gpu.name, gpu.pci_bus_id)]


def test_a_gpu_lost_on_a_new_database_is_adopted_when_it_comes_back(fake_nvml, tmp_path):
    """Nothing knows the GPU at its first, lost, sample: it is stored by index with
    no name (nothing invented); back with its UUID, it takes that row over."""
    lost = Scenario.many(2)
    lost.gpus[1].lost_after = 0
    db = tmp_path / "gpm.db"
    fake_nvml.set(lost)
    result = run_gpm("--db", db, "sample", "--json", env=fake_nvml.env())
    assert result.returncode == 1
    obj = json.loads(result.stdout.splitlines()[1])
    assert (obj["gpu_uuid"], obj["gpu_name"], obj["status"]) == (None, None, "gpu_is_lost")
    assert rows(db, "SELECT uuid, name FROM gpus ORDER BY gpu_index")[1] == {"uuid": "index:1", "name": None}

    good = fake_nvml.set(Scenario.many(2))
    assert run_gpm("--db", db, "sample", env=fake_nvml.env()).returncode == 0
    gpu = good.gpus[1]
    assert _gpu_statuses(db) == {good.gpus[0].uuid: ["ok", "ok"], gpu.uuid: ["gpu_is_lost", "ok"]}
    assert rows(db, "SELECT COUNT(*) AS n FROM gpus")[0]["n"] == 2


def test_unsupported_fields_are_null_never_zero(fake_nvml, tmp_path):
    scenario = Scenario.many(1)
    scenario.gpus[0].fails = {
        "nvmlDeviceGetFanSpeed": "NOT_SUPPORTED",
        "nvmlDeviceGetTotalEnergyConsumption": "NOT_SUPPORTED",
        "nvmlDeviceGetPowerUsage": "NOT_SUPPORTED",
        "nvmlDeviceGetCurrentClocksEventReasons": "NOT_SUPPORTED",
        "nvmlDeviceGetCurrentClocksThrottleReasons": "NOT_SUPPORTED",
    }
    fake_nvml.set(scenario)
    result = run_gpm("--db", tmp_path / "gpm.db", "sample", "--json", env=fake_nvml.env())
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["fan_percent"] is None
    assert obj["energy_joules"] is None
    assert obj["power_watts"] is None
    assert obj["throttle_reasons"] is None
    assert obj["temperature_celsius"] == scenario.gpus[0].temperature


def test_missing_library_and_missing_nvidia_smi(tmp_path):
    """#13.10: two short lines, one per backend, and where to read about running without a GPU."""
    env = {"PATH": "/nonexistent", "LD_LIBRARY_PATH": str(tmp_path)}
    result = run_gpm("--db", tmp_path / "gpm.db", "sample", env=env)
    assert (result.returncode, result.stdout) == (69, "")
    assert result.stderr == (
        "gpm: NVML: libnvidia-ml.so.1 not found: is the NVIDIA driver installed?\n"
        "gpm: nvidia-smi: not found on PATH (no GPU here? see docs/without-gpu.md)\n")
    assert (Path(__file__).parents[1] / "docs" / "without-gpu.md").is_file()


def smi_env(fake_nvml, tmp_path, capture, **extra):
    import shutil

    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    stand_in = bindir / "nvidia-smi"
    shutil.copy(Path(__file__).parent / "fakes" / "nvidia-smi", stand_in)
    stand_in.chmod(0o755)
    env = fake_nvml.env()
    env["PATH"] = f"{bindir}:{env['PATH']}"
    env["FAKE_SMI_XML"] = str(capture)
    env.update(extra)
    return env


CAPTURE = FIXTURES / "nvidia-smi" / "netdata__rtx-4090-driver-535.xml"


@pytest.mark.skipif(not CAPTURE.exists(), reason="../shared/fixtures is absent")
def test_falls_back_to_nvidia_smi_when_nvml_cannot_start(fake_nvml, tmp_path):
    fake_nvml.set(Scenario(init_error="DRIVER_NOT_LOADED"))
    db = tmp_path / "gpm.db"
    result = run_gpm("--db", db, "sample", "--json", env=smi_env(fake_nvml, tmp_path, CAPTURE))
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["source"] == "nvidia-smi"
    assert obj["gpu_name"] == "NVIDIA GeForce RTX 4090"
    assert "NVML unavailable; using nvidia-smi" in result.stderr
    assert rows(db)[0]["source"] == "nvidia-smi"


@pytest.mark.skipif(not CAPTURE.exists(), reason="../shared/fixtures is absent")
def test_hanging_nvidia_smi_is_killed_and_said(fake_nvml, tmp_path):
    fake_nvml.set(Scenario(init_error="DRIVER_NOT_LOADED"))
    env = smi_env(fake_nvml, tmp_path, CAPTURE, FAKE_SMI_SLEEP="30", GPM_GPU_NVIDIA_SMI_TIMEOUT_SECS="0.5")
    started = time.monotonic()
    result = run_gpm("--db", tmp_path / "gpm.db", "sample", env=env)
    assert time.monotonic() - started < 10
    assert result.returncode == 69
    assert "nvidia-smi timed out after 0.5 s (killed)" in result.stderr


def test_count_and_interval_follow_a_drift_free_schedule(fake_nvml, tmp_path):
    fake_nvml.set(Scenario.many(2))
    db = tmp_path / "gpm.db"
    result = run_gpm("--db", db, "sample", "-n", 4, "-i", 0.25, env=fake_nvml.env())
    assert result.returncode == 0, result.stderr
    got = rows(db)
    stamps = [r["ts_ms"] for r in got[::2]]
    assert [r["gpu_index"] for r in got] == [0, 1] * 4 and [r["ts_ms"] for r in got[1::2]] == stamps
    assert len(set(stamps)) == 4  # 4 samples of both GPUs; the grid's exact times: test_ticks_*


def test_follow_stops_cleanly_on_sigterm(fake_nvml, tmp_path):
    db = tmp_path / "gpm.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpm", "--db", str(db), "sample", "--follow", "-i", "0.1", "--json"],
        env=gpm_env(fake_nvml.env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if len(rows(db, "SELECT ts_ms FROM gpu_metrics")) >= 3:
                break
        except sqlite3.OperationalError:
            pass  # not created yet
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    assert err == ""
    assert len(rows(db, "SELECT ts_ms FROM gpu_metrics")) == len(out.splitlines()) >= 3  # every sample shown is stored
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


CHECK_MODULES = """
import sys
from gpm.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('polars', 'opentelemetry', 'prometheus_client', 'grpc'))
print('HEAVY:' + ','.join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["sample"], ["sample", "--json"], ["sample", "--help"]])
def test_help_and_sample_never_import_heavy_modules(fake_nvml, tmp_path, args):
    result = subprocess.run(
        [sys.executable, "-c", CHECK_MODULES, "--db", str(tmp_path / "gpm.db"), *args],
        env=gpm_env(fake_nvml.env()), capture_output=True, text=True, timeout=60,
    )
    assert "HEAVY:\n" in result.stderr, result.stderr


# What a cron `gpm sample` loads only when it needs it (#14.3, #14.5): psutil
# when a GPU has processes to classify, requests never (Ollama is not sampled).
# Standard-library modules are not counted: they cost little and read well; nor are
# gpm's schema modules, which count the migrations (#14.3).
CRON_OPTIONAL = ("psutil", "requests", "sqlite_utils", "tabulate")


def cron_loads(fake_nvml, db) -> list[str]:
    """The modules of CRON_OPTIONAL that a `gpm sample` on an already-migrated ``db`` loads."""
    env = gpm_env(fake_nvml.env())
    # Only what gpm loads counts: an editable install's path hook, for one, imports pathlib at start-up.
    check = ("import sys\nbefore = set(sys.modules)\n" + CHECK_MODULES + "print('LOADED:' + ','.join(sorted("
             f"m for m in {CRON_OPTIONAL!r} if m in sys.modules and m not in before)))\n")
    result = subprocess.run([sys.executable, "-c", check, "--db", db, "sample"], env=env, capture_output=True,
                            text=True, timeout=60)
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("LOADED:")]
    return [m for m in line.removeprefix("LOADED:").split(",") if m]


def test_a_cron_sample_loads_only_what_it_uses(fake_nvml, tmp_path):
    db = str(tmp_path / "gpm.db")
    subprocess.run([sys.executable, "-m", "gpm", "--db", db, "sample"], env=gpm_env(fake_nvml.env()), check=True,
                   timeout=60)
    assert cron_loads(fake_nvml, db) == []
    assert sqlite3.connect(db).execute("SELECT COUNT(DISTINCT ts_ms) FROM gpu_metrics").fetchone()[0] == 2

    scenario = Scenario(gpus=[make_gpu(0)])
    scenario.gpus[0].processes = [FakeProcess(pid=os.getpid(), used_memory=1 << 20)]
    fake_nvml.set(scenario)
    assert cron_loads(fake_nvml, db) == ["psutil"]
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM process_events WHERE pid = ?",
                                       (os.getpid(),)).fetchone() == (1,)


def test_version_and_python_dash_m(gpm):
    from gpm import __version__

    assert gpm("--version", check=True).stdout.strip() == f"gpm {__version__}"


def test_ticks_skip_missed_slots_but_keep_the_count():
    from gpm.repeat import Stopper, ticks

    clock = FakeClock(until=60.0)
    runs = []
    for run in ticks(1.0, 4, Stopper(wait=clock.wait), clock=clock):
        runs.append((run, clock()))
        clock.advance(0.25)  # every run takes a while: the grid does not drift
        if run == 1:
            clock.advance(2.25)  # this run overran two slots
    assert runs == [(0, 0.0), (1, 1.0), (2, 4.0), (3, 5.0)]  # slots 2 and 3 skipped, no burst
    assert clock() == 5.25  # no sleep after the last run


@pytest.mark.parametrize("args, says", [
    (["--follow", "-n", "3"], "--follow samples until stopped, -n 3 takes 3: give one"),
    (["-i", "1"], "-i 1 spaces repeated samples: add -n COUNT or --follow"),
])
def test_repetition_options_that_say_two_things_are_usage_errors(fake_nvml, tmp_path, args, says):
    db = tmp_path / "gpm.db"
    result = run_gpm("--db", db, "sample", *args, env=fake_nvml.env())
    assert result.returncode == 2
    assert says in result.stderr and "Traceback" not in result.stderr
    assert not db.exists()


def _wait_for_rows(db, n: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(rows(db, "SELECT ts_ms FROM gpu_metrics")) >= n:
                return
        except sqlite3.OperationalError:
            pass  # not created yet
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} rows after {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopped_before_the_count_exits_130_and_keeps_what_it_took(fake_nvml, tmp_path, sig):
    fake_nvml.set(Scenario.many(2))
    db = tmp_path / "gpm.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpm", "--db", str(db), "sample", "-n", "5", "-i", "30"],
        env=gpm_env(fake_nvml.env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_for_rows(db, 2)  # the first sample of both GPUs; the next one is 30 s away
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert err == "gpm: interrupted after 1 of 5 samples (stored)\n"
    assert len(rows(db, "SELECT ts_ms FROM gpu_metrics")) == 2
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_follow_stopped_by_ctrl_c_is_its_normal_end(fake_nvml, tmp_path):
    db = tmp_path / "gpm.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpm", "--db", str(db), "sample", "--follow", "-i", "30"],
        env=gpm_env(fake_nvml.env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_for_rows(db, 1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert (proc.returncode, err) == (0, "")


def test_a_gpu_lost_when_sampling_starts_is_read_again_when_it_comes_back(fake_nvml, tmp_path):
    """--follow keeps NVML open (as the daemon does): a GPU lost at open is
    tried again at each sample, and its rows stay under one `gpus` row."""
    good = fake_nvml.set(Scenario.many(2))
    db = tmp_path / "gpm.db"
    run_gpm("--db", db, "sample", env=fake_nvml.env(), check=True)  # the database knows both GPUs
    lost = Scenario.many(2)
    lost.gpus[1].lost_after = 0
    fake_nvml.set(lost)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpm", "--db", str(db), "sample", "--follow", "-i", "0.2"],
        env=gpm_env(fake_nvml.env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(db, "SELECT 1 FROM gpu_metrics WHERE status = 'gpu_is_lost'")
        fake_nvml.set(good)
        _wait_for(db, "SELECT 1 FROM gpu_metrics m JOIN gpus g ON g.id = m.gpu_id "
                      "WHERE g.gpu_index = 1 AND m.status IS NULL AND m.ts_ms > "
                      "(SELECT MAX(ts_ms) FROM gpu_metrics WHERE status = 'gpu_is_lost')")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1  # a GPU failed during the run
    assert err == f"gpm: GPU 1 ({good.gpus[1].uuid}) failed: gpu_is_lost\n"
    statuses = _gpu_statuses(db)
    assert set(statuses) == {good.gpus[0].uuid, good.gpus[1].uuid}
    assert set(statuses[good.gpus[0].uuid]) == {"ok"}
    history = statuses[good.gpus[1].uuid]
    first_lost = history.index("gpu_is_lost")
    back = history.index("ok", first_lost)
    assert history[:first_lost] == ["ok"] and set(history[first_lost:back]) == {"gpu_is_lost"}
    assert set(history[back:]) == {"ok"}


def _wait_for(db, sql: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sqlite3.connect(db).execute(sql).fetchone():
                return
        except sqlite3.OperationalError:
            pass  # locked for a moment by the writer
        time.sleep(0.05)
    raise AssertionError(f"nothing matched {sql!r} after {timeout} s")
