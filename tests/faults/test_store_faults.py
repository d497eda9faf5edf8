"""The database under faults (#12.1, #12.5, #12.6, #12.11): a full disk, a
deleted file, two samplers in one millisecond, and read-only, unwritable or
corrupt databases met by every command.

Real processes, a real 2 MB tmpfs, real permissions: as root, gpm runs
without CAP_DAC_OVERRIDE so the kernel applies file modes to it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpm.errors import EXIT_CANTCREAT, EXIT_DB_CORRUPT, EXIT_LOCKED, EXIT_NOPERM
from gpm.store.db import open_db
from gpm.store.samples import save_samples
from tests.conftest import gpm_env, run_gpm
from tests.test_daemon import fast_env
from tests.test_store import make_sample

STORED = re.compile(r"stored \d+ GPUs? at ts_ms=(\d+)")


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "2m"):
    """A real file system that fills up; skips where mounting is not allowed."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path) -> None:
    """Write ``path`` until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as err:
        assert err.errno == 28  # ENOSPC
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)


def rows(db: Path) -> list[tuple[int, int]]:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT ts_ms, g.gpu_index FROM gpu_metrics m JOIN gpus g ON g.id = m.gpu_id "
                            "ORDER BY ts_ms, gpu_index").fetchall()
    finally:
        conn.close()


class Daemon:
    """`gpm daemon` at debug level (it logs each stored sample's ts_ms)."""

    def __init__(self, tmp_path: Path, db: Path, env: dict):
        self.log_path = tmp_path / "daemon.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpm", "--db", str(db), "daemon", "--log-level", "debug"],
            env=gpm_env(env), stdout=subprocess.DEVNULL, stderr=self._log)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, pattern: str, count: int = 1, after: str | None = None, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log
            if after is not None:
                text = text[text.index(after):] if after in text else ""
            if len(re.findall(pattern, text)) >= count:
                return text
            assert self.proc.poll() is None, f"the daemon exited:\n{self.log}"
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} (x{count}) in the daemon's log:\n{self.log}")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()


@pytest.fixture
def daemon_env(fake_nvml):
    return fast_env(fake_nvml, GPM_STORAGE_ENABLE_PARQUET_ARCHIVAL="false")


def test_daemon_stores_again_after_the_disk_was_full(daemon_env, tmp_path):
    """#12.1: a GPU first seen while the disk is full used to poison the id
    cache: FOREIGN KEY failures for every sample until a restart."""
    with small_tmpfs(tmp_path / "fs") as fs:
        db = fs / "gpm.db"
        open_db(db).close()  # a new database, migrated, no GPU in it yet
        fill(fs / "filler")
        daemon = Daemon(tmp_path, db, daemon_env)
        try:
            daemon.wait_for("samples not stored")
            time.sleep(1.0)  # five more samples, none stored, none logged again
            assert rows(db) == []
            os.unlink(fs / "filler")
            daemon.wait_for("storing samples again")
            daemon.wait_for(STORED.pattern, count=3, after="storing samples again")
        finally:
            rc = daemon.stop()
        log = daemon.log
        assert rc == 0
        logged = {int(ts) for ts in STORED.findall(log)}
        assert len(logged) >= 3 and {ts for ts, _ in rows(db)} == logged  # every logged sample, nothing else
        full_lines = [line for line in log.splitlines() if "disk full" in line]
        assert len(full_lines) == 1, log
        assert str(db) in full_lines[0] and "free space" in full_lines[0]
        assert "Traceback" not in log and "FOREIGN KEY" not in log


def test_daemon_notices_its_database_deleted_and_starts_a_new_one(daemon_env, tmp_path):
    """#12.5: it used to go on writing into the deleted inode; every row vanished."""
    db = tmp_path / "data" / "gpm.db"
    daemon = Daemon(tmp_path, db, daemon_env)
    try:
        daemon.wait_for(STORED.pattern, count=3)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink()
        daemon.wait_for("was deleted")
        after = daemon.wait_for(STORED.pattern, count=3, after="was deleted")
    finally:
        rc = daemon.stop()
    log = daemon.log
    assert rc == 0
    assert log.count("was deleted") == 1
    new_rows = {int(ts) for ts in STORED.findall(log[log.index("was deleted"):])}
    assert len(new_rows) >= 3 and {ts for ts, _ in rows(db)} == new_rows
    assert "Traceback" not in log and after


def test_two_samplers_in_the_same_millisecond_both_store_and_a_retry_does_not_duplicate(tmp_path):
    """#12.6: the daemon and a cron `gpm sample`, two connections, one millisecond."""
    db = tmp_path / "gpm.db"
    daemon, cron = open_db(db), open_db(db)
    ts = 1_764_000_000_123
    first, second = make_sample(ts, utilization_gpu_percent=40), make_sample(ts, utilization_gpu_percent=41)
    save_samples(daemon, "box", [first])
    save_samples(cron, "box", [second])
    save_samples(cron, "box", [make_sample(ts, utilization_gpu_percent=42)])
    save_samples(daemon, "box", [make_sample(ts, utilization_gpu_percent=40)])  # the same write again
    save_samples(cron, "box", [make_sample(ts, utilization_gpu_percent=41)])  # and again
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT ts_ms, utilization_gpu_percent FROM gpu_metrics ORDER BY ts_ms").fetchall() == [
        (ts, 40), (ts + 1, 41), (ts + 2, 42)]
    assert second.ts_ms == ts + 1  # the sample says where it is stored (process rows use it)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --- every command against each broken database (#12.11) -------------------------

def _without_dac_override() -> None:
    """As root, drop the capabilities that ignore file modes (for gpm and its children)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _seed(db: Path, env: dict) -> None:
    proc = subprocess.run([sys.executable, "-m", "gpm", "--db", str(db), "sample"], env=gpm_env(env),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
    conn.close()


def _not_a_database(db: Path) -> None:
    with open(db, "r+b") as f:
        f.write(b"this is not a database" * 5)


def _truncated(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 2)


def _gpus_page_garbage(db: Path) -> None:
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'gpus'").fetchone()[0]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\xa5" * page)


def _read_only_file(db: Path) -> None:
    db.chmod(0o400)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.parent.chmod(0o500)


def _unwritable_folder(db: Path) -> None:
    db.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.parent.chmod(0o500)


BROKEN = {
    "not-a-database": (_not_a_database, EXIT_DB_CORRUPT, "database is corrupt"),
    "truncated": (_truncated, EXIT_DB_CORRUPT, "database is corrupt"),
    "garbage-page": (_gpus_page_garbage, EXIT_DB_CORRUPT, "database is corrupt"),
    "read-only": (_read_only_file, EXIT_NOPERM, "read-only"),
    "unwritable-folder": (_unwritable_folder, EXIT_CANTCREAT, "cannot create or open the database"),
}
COMMANDS = {
    "sample": ["sample"],
    "report": ["report", "--since", "7d", "--format", "json"],
    "archive": ["archive"],
    "export": ["export", "-t", "gpu_metrics", "--since", "7d", "-f", "csv"],
}


def _cases():
    for broken in BROKEN:
        for command in COMMANDS:
            if broken == "unwritable-folder" and command == "export":
                continue  # a reader of a database that does not exist: nothing to write, nothing broken
            yield pytest.param(broken, command, id=f"{broken}-{command}")


@pytest.mark.parametrize(("broken", "command"), list(_cases()))
def test_a_broken_database_is_one_line_naming_it_and_a_documented_exit_code(
        fake_nvml, tmp_path, broken, command):
    spoil, code, says = BROKEN[broken]
    folder = tmp_path / "data"
    folder.mkdir()
    db = folder / "gpm.db"
    env = fake_nvml.env()
    _seed(db, env)
    spoil(db)
    before = db.read_bytes() if db.exists() else None
    try:
        proc = subprocess.run([sys.executable, "-m", "gpm", "--db", str(db), *COMMANDS[command]],
                              env=gpm_env(env), capture_output=True, text=True, timeout=60,
                              preexec_fn=_without_dac_override)
    finally:
        folder.chmod(0o700)
    lines = proc.stderr.strip().splitlines()
    if broken == "garbage-page" and command == "archive":
        # nothing old to archive: it never reads the broken page, and writes nothing
        assert (proc.returncode, db.read_bytes() == before) == (0, True), proc.stderr
        return
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"gpm: {db}: {says}"), lines[0]
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    if before is not None:
        assert db.read_bytes() == before  # nothing written into a broken file
    if broken == "unwritable-folder":
        assert sorted(os.listdir(folder)) == []


@pytest.mark.parametrize("command", [["sample"], ["archive", "--older-than", "1"]])
def test_a_database_locked_past_the_busy_timeout_is_one_line_and_exit_75(fake_nvml, tmp_path, command):
    """Another program holds the write lock longer than `[storage] busy_timeout_secs`:
    the run waits that long, then says so in one line and stores nothing half-way."""
    db = tmp_path / "gpm.db"
    env = fake_nvml.env()
    run_gpm("--db", db, "sample", env=env, check=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(60)", str(db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        result = run_gpm("--db", db, *command, env={**env, "GPM_STORAGE_BUSY_TIMEOUT_SECS": "0.5"})
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == EXIT_LOCKED, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"gpm: {db}: database locked by another process for more than 0.5 s")
    assert "Traceback" not in result.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT COUNT(DISTINCT ts_ms) FROM gpu_metrics").fetchone() == (1,)
