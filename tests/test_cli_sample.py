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
    assert not (tmp_path / "gpm.db").exists()


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
    env = {"PATH": "/nonexistent", "LD_LIBRARY_PATH": str(tmp_path)}
    result = run_gpm("--db", tmp_path / "gpm.db", "sample", env=env)
    assert result.returncode == 69
    assert "NVML library not found" in result.stderr
    assert "nvidia-smi: nvidia-smi not found" in result.stderr


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
    stamps = sorted({r["ts_ms"] for r in rows(db)})
    assert len(stamps) == 4
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(200 <= g <= 400 for g in gaps), gaps
    assert abs((stamps[-1] - stamps[0]) - 750) < 100  # no accumulated drift


def test_follow_stops_cleanly_on_sigterm(fake_nvml, tmp_path):
    db = tmp_path / "gpm.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpm", "--db", str(db), "sample", "--follow", "-i", "0.1"],
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
    assert len(rows(db, "SELECT ts_ms FROM gpu_metrics")) >= 3
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
# Standard-library modules are not counted: they cost little and read well.
CRON_OPTIONAL = ("psutil", "requests", "sqlite_utils", "tabulate", "gpm.store.schema_llm",
                 "gpm.store.schema_report")


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
    from gpm.schedule import Stopper, ticks

    now = [0.0]
    stopper = Stopper()
    slept: list[float] = []

    def sleep(seconds: float) -> bool:
        slept.append(round(seconds, 3))
        now[0] += max(seconds, 0)
        return False

    stopper.sleep = sleep  # a fake clock: no real waiting
    runs = []
    for run in ticks(1.0, 4, stopper, clock=lambda: now[0]):
        runs.append((run, now[0]))
        if run == 1:
            now[0] += 2.5  # this run overran two slots
    assert [r for r, _ in runs] == [0, 1, 2, 3]
    assert [t for _, t in runs] == [0.0, 1.0, 4.0, 5.0]  # slots 2 and 3 skipped, no burst


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
