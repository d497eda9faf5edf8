"""`gpm daemon` as systemd runs it: a real process on the fake NVML, signals, sd_notify."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import gpm_env
from tests.fakes.nvml import FakeProcess, Scenario


class DaemonProcess:
    """`python -m gpm ... daemon` with its stderr in a file we can read while it runs."""

    def __init__(self, tmp_path: Path, env: dict, *args: str, db: Path | None = None):
        self.db = db or tmp_path / "gpm.db"
        self.log_path = tmp_path / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpm", "--db", str(self.db), "daemon", *args],
            env=gpm_env(env), stdout=subprocess.DEVNULL, stderr=self._log, text=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, pattern: str, timeout: float = 10.0, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log
            if len(re.findall(pattern, text)) >= count:
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} (x{count}) in the daemon's log:\n{self.log}")

    def stop(self, sig=signal.SIGTERM) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=10)
        finally:
            self.kill()
        return rc, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def metric_rows(self) -> int:
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute("SELECT COUNT(*) FROM gpu_metrics").fetchone()[0]
        finally:
            conn.close()


@pytest.fixture
def daemons():
    started: list[DaemonProcess] = []

    def start(*args, **kwargs) -> DaemonProcess:
        d = DaemonProcess(*args, **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


def fast_env(fake_nvml, **extra) -> dict:
    env = fake_nvml.env()
    env.update({"GPM_SERVICE_POLL_INTERVAL_SECS": "0.2", "GPM_GPU_FALLBACK_TO_NVIDIA_SMI": "false",
                "GPM_GPU_NVML_RETRY_SECS": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


class NotifyListener:
    """A stand-in for systemd's notify socket (abstract namespace, like systemd's own)."""

    def __init__(self):
        self.name = f"@gpm-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name[1:].encode())
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def drain(self, until: str | None = None, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                if until is None:
                    break
            if until is not None and any(until in m for m in self.messages):
                break
        return self.messages

    def close(self):
        self.sock.close()


def test_samples_notifies_systemd_and_exits_0_within_2_s_of_sigterm(fake_nvml, tmp_path, daemons):
    scenario = Scenario.many(2)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    scenario.gpus[1].processes = [FakeProcess(pid=worker.pid, used_memory=1 << 30)]
    fake_nvml.set(scenario)
    listener = NotifyListener()
    try:
        env = fast_env(fake_nvml, NOTIFY_SOCKET=listener.name, WATCHDOG_USEC=400_000)
        d = daemons(tmp_path, env)
        listener.drain(until="READY=1")
        d.wait_for(r"stored 2 GPUs", count=0)
        time.sleep(1.5)
        rc, elapsed = d.stop()
        messages = listener.drain()
        # Read after the daemon ran: right after Popen the child may not have
        # exec'd yet and still carry the parent's name.
        comm = Path(f"/proc/{worker.pid}/comm").read_text().strip()
    finally:
        listener.close()
        worker.kill()
        worker.wait()
    assert rc == 0, d.log
    assert elapsed < 2.0
    ready = next(m for m in messages if "READY=1" in m)
    assert "STATUS=sampling 2 GPUs via nvml every 0.2 s" in ready
    assert sum("WATCHDOG=1" in m for m in messages) >= 3  # every 0.2 s for 1.5 s
    assert "STOPPING=1" in messages[-1]
    rows = d.metric_rows()
    assert rows >= 2 * 6 and rows % 2 == 0  # about 8 samples of both GPUs, each whole
    conn = sqlite3.connect(d.db)
    events = conn.execute("SELECT pid, name, category FROM process_events").fetchall()
    conn.close()
    assert [(pid, name) for pid, name, _ in events] == [(worker.pid, comm)]  # classified, stored once
    assert events[0][2]
    log = d.log
    assert "stopping (SIGTERM)" in log and "stopped sample after" in log and "(0 failed)" in log
    assert "Traceback" not in log


def test_sigint_also_stops_cleanly(fake_nvml, tmp_path, daemons):
    d = daemons(tmp_path, fast_env(fake_nvml))
    d.wait_for("ready: sampling 1 GPU")
    rc, elapsed = d.stop(signal.SIGINT)
    assert rc == 0 and elapsed < 2.0
    assert "stopping (SIGINT)" in d.log


def write_config(home: Path, text: str) -> Path:
    path = home / ".config" / "gpm" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def sample_times(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT DISTINCT ts_ms FROM gpu_metrics ORDER BY ts_ms")]
    finally:
        conn.close()


def wait_for_samples(db: Path, count: int, after_ms: int = 0, timeout: float = 10.0) -> list[int]:
    """The first ``count`` sample times after ``after_ms``, once there are that many."""
    deadline = time.monotonic() + timeout
    while len(got := [t for t in sample_times(db) if t > after_ms]) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(got) >= count, f"{len(got)} samples after {after_ms}, not {count}"
    return got[:count]


def test_sighup_applies_a_new_interval_and_keeps_the_old_config_when_the_new_one_is_bad(
        fake_nvml, tmp_path, daemons, isolated_home):
    write_config(isolated_home, "[service]\npoll_interval_secs = 1.0\n")
    env = fast_env(fake_nvml)
    del env["GPM_SERVICE_POLL_INTERVAL_SECS"]
    d = daemons(tmp_path, env, "--log-level", "debug")
    d.wait_for(r"stored 1 GPU at", count=2)
    write_config(isolated_home, "[service]\npoll_interval_secs = 0.1\n")
    hup_ms = time.time_ns() // 1_000_000
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(r"sample now every 0\.1 s")
    after = wait_for_samples(d.db, 7, after_ms=hup_ms + 150)
    gaps = sorted(b - a for a, b in zip(after, after[1:]))
    assert gaps[3] < 500, gaps  # median: 0.1 s apart now, not 1 s (exact times: test_daemon_jobs.py)

    write_config(isolated_home, "[service]\npoll_interval_secs = 'fast'\n")
    d.proc.send_signal(signal.SIGHUP)
    log = d.wait_for("configuration not reloaded, keeping the previous one")
    assert "poll_interval_secs = 'fast': expected a number" in log
    wait_for_samples(d.db, 3, after_ms=sample_times(d.db)[-1])  # still sampling
    rc, _ = d.stop()
    assert rc == 0


def test_starts_without_a_gpu_and_picks_one_up_when_the_driver_loads(fake_nvml, tmp_path, daemons):
    fake_nvml.set(Scenario(init_error="DRIVER_NOT_LOADED"))
    listener = NotifyListener()
    try:
        d = daemons(tmp_path, fast_env(fake_nvml, NOTIFY_SOCKET=listener.name), "--log-level", "debug")
        # ready (the daemon is up and doing its job: waiting for the driver)
        messages = listener.drain(until="READY=1")
        assert any("STATUS=waiting for a GPU" in m for m in messages)
        time.sleep(2.5)  # two more NVML retries, logged only once
        assert d.metric_rows() == 0
        warnings = [line for line in d.log.splitlines() if " WARNING sample: " in line]
        assert len(warnings) == 1 and "NVIDIA driver not loaded" in warnings[0], d.log
        fake_nvml.set(Scenario.many(3))
        d.wait_for("GPU backend available now", timeout=5)
        messages = listener.drain(until="sampling 3 GPUs")
        assert any("STATUS=sampling 3 GPUs" in m for m in messages)
        rc, _ = d.stop()
    finally:
        listener.close()
    assert rc == 0
    stored = len(re.findall(r"stored 3 GPUs at", d.log))
    assert stored >= 1 and d.metric_rows() == 3 * stored  # every sample logged as stored is there


def test_journald_lines_have_a_priority_and_no_timestamp(fake_nvml, tmp_path):
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err:
        st = os.fstat(err.fileno())
        env = gpm_env(fast_env(fake_nvml, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"))
        proc = subprocess.Popen([sys.executable, "-m", "gpm", "--db", str(tmp_path / "g.db"), "daemon",
                                 "--log-format", "json"], env=env, stderr=err)
        try:
            time.sleep(1.5)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    lines = err_path.read_text().splitlines()
    assert lines and all(re.match(r"^<[0-7]>\{", line) for line in lines), lines
    first = json.loads(lines[0][3:])
    assert set(first) == {"level", "logger", "message"}  # the journal has the time
    assert first["logger"] == "daemon"


def test_text_log_lines_carry_time_level_and_job(fake_nvml, tmp_path, daemons):
    d = daemons(tmp_path, fast_env(fake_nvml))
    d.wait_for("ready")
    d.stop()
    for line in d.log.splitlines():
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) [\w.-]+: ", line), line


def test_a_database_it_cannot_create_is_one_line_and_exit_73(fake_nvml, tmp_path):
    from gpm.errors import EXIT_CANTCREAT
    from tests.conftest import run_gpm

    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_gpm("--db", blocker / "gpm.db", "daemon", env=fast_env(fake_nvml), timeout=20)
    assert result.returncode == EXIT_CANTCREAT
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"gpm: {blocker / 'gpm.db'}: cannot create or open the database")
    assert "Traceback" not in result.stderr


def _ms(iso: str) -> int:
    from datetime import datetime

    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _seed_old_rows(db: Path, env: dict, count: int) -> set[int]:
    """``count`` samples of GPU 0 from ten days ago (retention: 7), for `gpm archive` to move."""
    from tests.conftest import run_gpm

    run_gpm("--db", db, "sample", env=env, check=True)
    start = time.time_ns() // 1_000_000 - 10 * 86_400_000
    conn = sqlite3.connect(db)
    with conn:
        gpu_id = conn.execute("SELECT id FROM gpus WHERE gpu_index = 0").fetchone()[0]
        conn.executemany(
            "INSERT INTO gpu_metrics (ts_ms, gpu_id, source, utilization_gpu_percent) VALUES (?, ?, 0, 50)",
            [(start + 1000 * i, gpu_id) for i in range(count)])
    conn.close()
    return {start + 1000 * i for i in range(count)}


@pytest.mark.slow
def test_daemon_and_one_shot_sample_and_archive_share_the_database_for_30_s_without_losing_a_row(
        fake_nvml, tmp_path, daemons):
    """The daemon writes every 0.1 s (and archives) while cron-style runs write and archive too."""
    import polars as pl

    from tests.conftest import run_gpm

    fake_nvml.set(Scenario.many(2))
    archive_dir = tmp_path / "archive"
    env = fast_env(fake_nvml, GPM_SERVICE_POLL_INTERVAL_SECS="0.1", GPM_STORAGE_ARCHIVE_DIR=archive_dir,
                   GPM_STORAGE_ARCHIVE_INTERVAL_SECS=60)
    db = tmp_path / "gpm.db"
    old = _seed_old_rows(db, env, 3000)
    first = set(sample_times(db)) - old  # the seeding sample
    d = daemons(tmp_path, env, "--log-level", "debug", db=db)
    d.wait_for("stored 2 GPUs")
    one_shot: set[tuple[int, int]] = {(ts, gpu) for ts in first for gpu in (0, 1)}
    runs = archives = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if runs % 5 == 4:
            result = run_gpm("--db", db, "archive", env=env)
            assert result.returncode in (0, 75), result.stderr  # 75: the daemon's archive run holds the lock
            archives += result.returncode == 0
        else:
            result = run_gpm("--db", db, "sample", "--json", env=env)
            assert result.returncode == 0, result.stderr
            assert result.stderr == ""
            for line in result.stdout.splitlines():
                obj = json.loads(line)
                one_shot.add((_ms(obj["ts"]), obj["gpu_index"]))
        runs += 1
    rc, _ = d.stop()
    assert rc == 0
    log = d.log
    assert " ERROR " not in log and " WARNING " not in log and "locked" not in log, log
    assert "`gpm archive` exited " in log  # the daemon's own archive job ran too (or found the lock held)
    daemon_rows = {(int(ts), gpu) for ts in re.findall(r"stored 2 GPUs at ts_ms=(\d+)", log) for gpu in (0, 1)}
    conn = sqlite3.connect(db)
    stored = set(conn.execute(
        "SELECT m.ts_ms, g.gpu_index FROM gpu_metrics m JOIN gpus g ON g.id = m.gpu_id").fetchall())
    conn.close()
    assert runs >= 10 and archives >= 1 and len(daemon_rows) >= 2 * 100
    # a one-shot sample in the same millisecond as the daemon's is the same reading
    assert stored == daemon_rows | one_shot
    archived = pl.read_parquet(str(archive_dir / "gpu_metrics" / "**" / "*.parquet"), hive_partitioning=False)
    assert sorted(archived["ts"].dt.epoch("ms").to_list()) == sorted(old)  # every old row moved once, none lost or doubled


def test_watches_ollama_and_records_requests_through_the_proxy(fake_nvml, tmp_path, daemons):
    import urllib.request

    from tests.fakes.ollama_server import FakeOllama, free_port
    from tests.fakes.otlp_receiver import Receiver

    port = free_port()
    with FakeOllama() as ollama, Receiver() as receiver:
        env = fast_env(fake_nvml, GPM_OLLAMA_ENABLED="true", GPM_OLLAMA_ENABLE_PROXY="true",
                       GPM_OLLAMA_API_URL=ollama.url, GPM_OLLAMA_POLL_INTERVAL_SECS="0.5",
                       GPM_OLLAMA_PROXY_LISTEN=f"127.0.0.1:{port}",
                       GPM_TELEMETRY_ENABLE_OPENTELEMETRY="true", GPM_TELEMETRY_OTLP_ENDPOINT=receiver.endpoint,
                       GPM_TELEMETRY_EXPORT_INTERVAL_SECS="1")
        d = daemons(tmp_path, env)
        d.wait_for("recording proxy on")
        body = json.dumps({"model": "llama3.2", "prompt": "Why is the sky blue?"}).encode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/generate", data=body, timeout=10) as resp:
            assert resp.status == 200
            resp.read()
        time.sleep(1.0)
        rc, elapsed = d.stop()
        spans = receiver.spans()
    assert rc == 0 and elapsed < 2.0, d.log
    assert [s.name for s in spans] == ["text_completion llama3.2"]  # the request's span (gen_ai naming)
    conn = sqlite3.connect(d.db)
    try:
        assert conn.execute("SELECT model FROM llm_sessions").fetchall() == [("gemma4",)]  # what /api/ps shows
        assert conn.execute("SELECT COUNT(*) FROM llm_requests").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM gpu_metrics").fetchone()[0] >= 3
    finally:
        conn.close()
    assert " ERROR " not in d.log, d.log
    for job in ("sample", "ollama-watch", "ollama-proxy", "otlp"):
        assert f"started {job}" in d.log


def test_serves_prometheus_and_pushes_otlp_from_its_own_samples(fake_nvml, tmp_path, daemons):
    import urllib.request

    from tests.fakes.ollama_server import free_port
    from tests.fakes.otlp_receiver import Receiver
    from tests.test_telemetry_alerts import event, save_alerts

    fake_nvml.set(Scenario.many(2))
    port = free_port()
    with Receiver() as receiver:
        env = fast_env(fake_nvml, GPM_TELEMETRY_ENABLE_PROMETHEUS="true",
                       GPM_TELEMETRY_METRICS_LISTEN=f"127.0.0.1:{port}",
                       GPM_TELEMETRY_ENABLE_OPENTELEMETRY="true", GPM_TELEMETRY_OTLP_ENDPOINT=receiver.endpoint,
                       GPM_TELEMETRY_EXPORT_INTERVAL_SECS="1", GPM_SERVICE_HOSTNAME="box")
        d = daemons(tmp_path, env)
        d.wait_for("serving metrics on")
        d.wait_for("stored 2 GPUs|ready: sampling 2 GPUs")
        save_alerts(d.db, [event("temperature", 1)])  # as gpm's alert engine stores a firing alert
        deadline = time.monotonic() + 10
        while True:  # the first scrape may come before the first sample reaches the exporters
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                text = resp.read().decode()
            if ("gpm_gpu_utilization_ratio{" in text and "gpm_alerts_firing{" in text) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert receiver.got.wait(10)
        rc, elapsed = d.stop()
    assert rc == 0 and elapsed < 2.0, d.log
    utilization = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^gpm_gpu_utilization_ratio\{[^}]*gpu="(\d)"[^}]*\} (\S+)$', text, re.M)}
    expected = {str(i): g.util_gpu / 100 for i, g in enumerate(Scenario.many(2).gpus)}
    assert utilization == expected, text
    assert "hw.gpu.utilization" in receiver.metrics()
    assert 'gpm_alerts_firing{gpu="1",rule="temperature",severity="warning"} 1.0' in text.splitlines()
    assert " ERROR " not in d.log, d.log


def test_a_second_daemon_on_the_same_database_exits_75_and_the_first_keeps_sampling(fake_nvml, tmp_path, daemons):
    """Two daemons once sampled every GPU twice, 20 ms apart (#12, found by a trial)."""
    fake_nvml.set(Scenario.many(1))
    first = daemons(tmp_path, fast_env(fake_nvml))
    first.wait_for(r"ready")
    second = subprocess.run([sys.executable, "-m", "gpm", "--db", str(first.db), "daemon"],
                            env=gpm_env(fast_env(fake_nvml)), capture_output=True, text=True, timeout=30)
    assert second.returncode == 75
    (line,) = second.stderr.splitlines()
    assert "another `gpm daemon` is running (lock held by pid" in line and str(first.proc.pid) in line
    before = first.metric_rows()
    deadline = time.monotonic() + 10
    while first.metric_rows() <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.metric_rows() > before and first.proc.poll() is None


def test_a_stop_signal_that_lands_inside_the_wake_events_lock_still_stops():
    """A handler runs between two bytecodes of the main thread, which may be
    inside ``with event._cond`` (Event.wait on its way out, Event.clear; the
    daemon's loop does both five times a second with the sampler's news):
    a handler that set the event there waited for its own thread's lock, and
    SIGTERM never stopped the daemon. Here the handlers run holding that lock."""
    from gpm.daemon.core import Daemon
    from gpm.repeat import Stopper

    daemon, stopper = Daemon(load=lambda: None), Stopper()
    for event, handle in ((daemon._wake, daemon._on_stop), (daemon._wake, daemon._on_hup),
                          (stopper.event, stopper._handle)):
        event.clear()
        returned = threading.Event()

        def main_thread_inside_the_lock(event=event, handle=handle):
            with event._cond:
                handle(signal.SIGTERM, None)
            returned.set()

        threading.Thread(target=main_thread_inside_the_lock, daemon=True).start()
        assert returned.wait(5), f"{handle.__qualname__} waited for a lock its own thread holds"
        assert event.wait(5)
    assert (daemon._stop_signal, daemon._reload_requested, stopper.signal, stopper.stopped) == (
        signal.SIGTERM, True, signal.SIGTERM, True)
