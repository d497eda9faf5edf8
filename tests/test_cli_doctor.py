"""`gpm doctor`: each check's ok and problem outcome on real files, databases, locks and processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import gpm_env, run_gpm
from tests.fakes.nvml import Scenario
from tests.fakes.ollama_server import FakeOllama, free_port
from tests.test_archive import HOST, saved_db
from tests.test_cli_sample import CAPTURE, smi_env


def doctor(db: Path, *args, env: dict | None = None, archive: Path | None = None) -> subprocess.CompletedProcess:
    extra = {"GPM_SERVICE_HOSTNAME": HOST, "GPM_STORAGE_ARCHIVE_DIR": archive or db.parent / "archive"}
    return run_gpm("--db", db, "doctor", *args, env={**(env or {}), **extra})


def findings(db: Path, *args, **kw) -> tuple[int, list[dict]]:
    proc = doctor(db, "--json", *args, **kw)
    assert proc.stderr == "" and "Traceback" not in proc.stdout
    return proc.returncode, json.loads(proc.stdout)


def problems(found: list[dict], check: str | None = None) -> list[dict]:
    return [f for f in found if f["status"] == "problem" and check in (None, f["check"])]


def sampled_db(tmp_path: Path, fake_nvml) -> Path:
    db = tmp_path / "data" / "gpm.db"
    run_gpm("--db", db, "sample", env=fake_nvml.env(), check=True)
    return db


def snapshot(*folders: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every file (SQLite's -shm is left out: every reader writes its read marks there)."""
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns)
            for folder in folders if folder.exists() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith("-shm")}


def test_all_well_exits_0_with_one_ok_line_per_check(tmp_path, fake_nvml):
    db = sampled_db(tmp_path, fake_nvml)
    proc = doctor(db, env=fake_nvml.env())
    assert proc.returncode == 0, proc.stdout
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[-1] == "gpm doctor: all well"
    checks = [line.split(":")[0].split()[1] for line in lines[:-1]]
    assert {"database", "free-space", "permissions", "archive", "locks", "gpu", "ollama"} <= set(checks)
    # nvidia-smi is missing but NVML works: a note, not a problem.
    assert all(line.startswith(("ok ", "note ")) for line in lines[:-1]), lines
    assert "ok      gpu: NVML: 1 GPU, driver 550.54.14" in lines


def test_json_is_a_list_of_finding_objects(tmp_path, fake_nvml):
    db = sampled_db(tmp_path, fake_nvml)
    code, found = findings(db, env=fake_nvml.env())
    assert code == 0
    assert isinstance(found, list) and found
    for f in found:
        assert set(f) == {"check", "status", "message", "advice", "path", "fix"}
        assert f["status"] in ("ok", "note")
    database = next(f for f in found if f["check"] == "database")
    assert database["path"] == str(db) and database["message"].startswith("integrity ok, WAL")


def test_config_that_does_not_load_is_the_one_problem(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[storage]\nretention_days = 0\n")
    proc = run_gpm("--config", config, "doctor")
    assert proc.returncode == 1 and proc.stderr == ""
    assert proc.stdout.splitlines() == [
        f"problem config: {config}:2: [storage] retention_days = 0: expected an integer from 1 to 36500; "
        "fix the configuration, then run gpm doctor again",
        "gpm doctor: 1 problem"]


# --------------------------------------------------------------------------- database


def test_missing_database_is_a_problem(tmp_path, fake_nvml):
    db = tmp_path / "nothing.db"
    code, found = findings(db, env=fake_nvml.env())
    assert code == 1
    [problem] = problems(found, "database")
    assert problem["message"] == f"{db}: database not found" and "gpm sample" in problem["advice"]
    assert not db.exists()


def test_corrupt_database_is_found_and_left_untouched(tmp_path, fake_nvml):
    db = sampled_db(tmp_path, fake_nvml)
    run_gpm("--db", db, "sample", "-n", "40", "-i", "0.1", env=fake_nvml.env(), check=True)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    assert pages > 8
    with open(db, "r+b") as fh:  # garbage over every page but the first
        fh.seek(4096)
        fh.write(b"\xa5" * (4096 * (pages - 1)))
    before = snapshot(db.parent)
    proc = doctor(db, env=fake_nvml.env())
    assert proc.returncode == 1 and proc.stderr == ""
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("problem database:")]
    assert "database is damaged" in line and ".recover" in line
    assert snapshot(db.parent) == before


def test_database_out_of_wal_mode_fixed_by_fix_only(tmp_path, fake_nvml):
    db = sampled_db(tmp_path, fake_nvml)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    conn.close()
    before = snapshot(db.parent)
    code, found = findings(db, env=fake_nvml.env())
    assert code == 1
    [problem] = problems(found)
    assert "journal mode is delete, not wal" in problem["message"] and problem["fix"] == "set journal_mode = WAL"
    assert snapshot(db.parent) == before  # read-only without --fix

    fixed = doctor(db, "--fix", env=fake_nvml.env())
    assert fixed.returncode == 0, fixed.stdout
    assert f"fixed   database: {db}: journal mode set to WAL" in fixed.stdout.splitlines()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert doctor(db, env=fake_nvml.env()).returncode == 0


def test_free_pages_reclaimed_by_fix(tmp_path, fake_nvml):
    db = sampled_db(tmp_path, fake_nvml)
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("CREATE TABLE filler (x BLOB)")
        conn.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(1000),)] * 3000)
        conn.execute("DROP TABLE filler")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    assert free > 700
    size_before = db.stat().st_size
    before = snapshot(db.parent)
    code, found = findings(db, env=fake_nvml.env())
    assert code == 1
    [problem] = problems(found)
    assert "are free pages" in problem["message"] and problem["fix"] == "reclaim free pages"
    assert snapshot(db.parent) == before

    fixed = doctor(db, "--fix", env=fake_nvml.env())
    assert fixed.returncode == 0, fixed.stdout
    assert "incremental_vacuum gave back" in fixed.stdout and "(0 free pages left)" in fixed.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM gpu_metrics").fetchone()[0] == 1
    assert db.stat().st_size <= size_before - free * 4096 + 4096
    assert doctor(db, env=fake_nvml.env()).returncode == 0


# --------------------------------------------------------------------------- space and permissions


@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MiB tmpfs (root only; skipped elsewhere)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip() or 'not root'}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_nearly_full_disk_is_a_problem(tmp_path, tmpfs, fake_nvml):
    db = tmpfs / "gpm.db"
    run_gpm("--db", db, "sample", env=fake_nvml.env(), check=True)
    code, found = findings(db, env=fake_nvml.env(), archive=tmp_path / "archive")
    assert code == 1
    [problem] = problems(found)
    assert problem["check"] == "free-space" and problem["path"] == str(tmpfs)
    assert "free for the data folder (gpm wants 1.0 GiB)" in problem["message"]
    assert [f["status"] for f in found if f["check"] == "free-space"] == ["problem", "ok"]  # the archive's disk


def test_unwritable_database_is_a_problem(tmp_path, fake_nvml):
    db = sampled_db(tmp_path, fake_nvml)
    if os.geteuid() == 0:  # root writes anywhere but on a read-only mount
        view = tmp_path / "ro"
        view.mkdir()
        done = subprocess.run(["mount", "--bind", "-o", "ro", str(db.parent), str(view)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot make a read-only bind mount: {done.stderr.decode().strip()}")
        target = view / db.name
    else:
        db.chmod(0o444)
        target = db
    try:
        code, found = findings(target, env=fake_nvml.env(), archive=tmp_path / "archive")
    finally:
        if target != db:
            subprocess.run(["umount", str(view)], check=True)
    assert code == 1
    messages = [p["message"] for p in problems(found, "permissions")]
    assert f"{target}: database file not writable by this user (uid {os.geteuid()})" in messages


# --------------------------------------------------------------------------- archive


@pytest.fixture
def archived(tmp_path):
    """A database with three days archived into real Parquet part files."""
    db = saved_db(tmp_path)
    arch = tmp_path / "archive"
    run_gpm("--db", db, "archive", "--archive-dir", arch, "--older-than", "1",
            env={"GPM_SERVICE_HOSTNAME": HOST}, check=True)
    parts = sorted(arch.glob("gpu_metrics/host=test-host/date=*/part-*.parquet"))
    assert len(parts) == 3
    return db, arch, parts


def test_archive_files_against_the_manifest(archived, fake_nvml):
    db, arch, parts = archived
    code, found = findings(db, env=fake_nvml.env(), archive=arch)
    assert code == 0 and [f["message"] for f in found if f["check"] == "archive"] == [
        "3 archived files, all present"]

    parts[0].unlink()
    (parts[1].parent / ".part-1-dead.parquet.tmp").write_bytes(b"half a file")
    rejected = parts[2].with_name("part-2-x.parquet.rejected")
    rejected.write_bytes(b"set aside")
    orphan = parts[2].with_name("part-3-orphan.parquet")
    orphan.write_bytes(b"not listed")
    foreign = arch / "gpu_metrics" / "host=elsewhere" / "date=2020-01-01" / "part-4.parquet"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"another database's")
    before = snapshot(db.parent)

    code, found = findings(db, env=fake_nvml.env(), archive=arch)
    assert code == 1
    by_message = {f["message"]: f for f in found if f["check"] == "archive"}
    assert set(by_message) == {
        f"1 archived files missing, e.g. {parts[0]} (their rows are gone from the history)",
        f"1 temp files of a killed `gpm archive`, e.g. {parts[1].parent / '.part-1-dead.parquet.tmp'}",
        f"1 part files set aside as *.rejected, e.g. {rejected} (never read)",
        f"1 files not in this database's manifest, e.g. {orphan}",
        f"1 files belong to no database here (another host's or database's, or not gpm's), e.g. {foreign}",
    }
    assert [f["status"] for f in by_message.values()].count("problem") == 4
    assert snapshot(db.parent) == before

    fixed = doctor(db, "--fix", env=fake_nvml.env(), archive=arch)
    assert fixed.returncode == 1  # only the temp file is gpm's to remove
    assert "fixed   archive: removed 1 temp files of a killed `gpm archive`" in fixed.stdout.splitlines()
    assert not (parts[1].parent / ".part-1-dead.parquet.tmp").exists()
    assert rejected.read_bytes() == b"set aside" and orphan.read_bytes() == b"not listed"
    assert foreign.read_bytes() == b"another database's" and parts[1].exists() and parts[2].exists()


def test_temp_file_fix_then_all_well(archived, fake_nvml):
    db, arch, parts = archived
    tmp = parts[0].parent / ".part-9-killed.parquet.tmp"
    tmp.write_bytes(b"x")
    reductions = sorted(arch.glob("gpu_reductions/host=test-host/date=*"))
    assert [r.name for r in reductions] == [p.parent.name for p in parts]  # one reduction per archived day
    reduction_tmp = reductions[0] / ".hist.pq.tmp"
    reduction_tmp.write_bytes(b"y")
    code, found = findings(db, env=fake_nvml.env(), archive=arch)
    assert code == 1 and [p["message"] for p in problems(found)] == [
        f"2 temp files of a killed `gpm archive`, e.g. {tmp}"]
    assert tmp.exists() and reduction_tmp.exists()
    assert doctor(db, "--fix", env=fake_nvml.env(), archive=arch).returncode == 0
    assert not tmp.exists() and not reduction_tmp.exists() and all(p.exists() for p in parts)
    assert (reductions[0] / "hist.pq").exists()
    assert doctor(db, env=fake_nvml.env(), archive=arch).returncode == 0


def test_file_names_are_shown_visibly_and_json_stays_exact(archived, fake_nvml):
    db, arch, _ = archived
    hostile = arch / "gpu_metrics" / "host=x" / "evil\x1b]0;pwned\x07\nname"
    hostile.parent.mkdir(parents=True)
    hostile.write_bytes(b"")
    text = doctor(db, env=fake_nvml.env(), archive=arch).stdout
    assert "\x1b" not in text and "\x07" not in text
    assert "evil\\x1b]0;pwned\\x07\\nname" in text
    _, found = findings(db, env=fake_nvml.env(), archive=arch)
    assert any(f["path"] == str(hostile) for f in found)


# --------------------------------------------------------------------------- GPUs and Ollama


def test_nvml_and_nvidia_smi_failures_each_with_their_reason(tmp_path, fake_nvml):
    db = sampled_db(tmp_path, fake_nvml)
    fake_nvml.set(Scenario(init_error="DRIVER_NOT_LOADED"))
    code, found = findings(db, env={**fake_nvml.env(), "GPM_GPU_NVIDIA_SMI_PATH": str(tmp_path / "no-smi")})
    assert code == 1
    assert [p["message"] for p in problems(found, "gpu")] == [
        "NVML: NVIDIA driver not loaded (no /dev/nvidia*; is the kernel module loaded?)",
        f"nvidia-smi: not found: {tmp_path / 'no-smi'} does not exist",
    ]


def test_nvidia_smi_reachable(tmp_path, fake_nvml):
    if not CAPTURE.exists():
        pytest.skip(f"fixture {CAPTURE} absent")
    db = sampled_db(tmp_path, fake_nvml)
    fake_nvml.set(Scenario(init_error="LIBRARY_NOT_FOUND"))
    code, found = findings(db, env=smi_env(fake_nvml, tmp_path, CAPTURE))
    gpu = [(f["status"], f["message"]) for f in found if f["check"] == "gpu"]
    assert gpu[1] == ("ok", "nvidia-smi: 1 GPU") and gpu[0][0] == "problem" and code == 1


def test_ollama_checked_only_when_watched(tmp_path, fake_nvml):
    db = sampled_db(tmp_path, fake_nvml)
    with FakeOllama() as ollama:
        env = {**fake_nvml.env(), "GPM_OLLAMA_ENABLED": "true", "GPM_OLLAMA_API_URL": ollama.url}
        code, found = findings(db, env=env)
        assert code == 0
        [ok] = [f for f in found if f["check"] == "ollama"]
        assert ok["status"] == "ok" and ok["message"].endswith(f"at {ollama.url}")
    closed = f"http://127.0.0.1:{free_port()}"
    code, found = findings(db, env={**fake_nvml.env(), "GPM_OLLAMA_ENABLED": "true", "GPM_OLLAMA_API_URL": closed})
    assert code == 1
    [problem] = problems(found)
    assert problem["message"] == f"Ollama not reachable: {closed}/api/version: connection refused"


# --------------------------------------------------------------------------- locks

HOLD = """
import os, subprocess, sys, time
from gpm.locks import exclusive_lock
with exclusive_lock(sys.argv[1], job="archive", wait_secs=0) as lock:
    if sys.argv[2] == "orphan":  # a child inherits the lock, as gpm archive's day writers do
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=[lock.fd])
        print(child.pid, flush=True)
        os._exit(0)
    print(os.getpid(), flush=True)
    sys.stdin.read()
"""


def hold_lock(db: Path, how: str = "hold") -> tuple[subprocess.Popen, int]:
    """A real process holding the archive lock until its stdin closes; and the pid that holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(db.parent / "locks" / f"{db.name}.archive.lock"), how],
                            env=gpm_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def test_lock_held_briefly_is_fine_held_for_hours_is_a_problem(tmp_path, fake_nvml):
    db = sampled_db(tmp_path, fake_nvml)
    proc, pid = hold_lock(db)
    try:
        code, found = findings(db, env=fake_nvml.env())
        assert code == 0
        assert any(f["message"].startswith(f"`gpm archive` running (pid {pid}, ") for f in found)
        lock = db.parent / "locks" / f"{db.name}.archive.lock"
        three_hours_ago = time.time() - 3 * 3600
        os.utime(lock, (three_hours_ago, three_hours_ago))  # when the holder took it
        code, found = findings(db, env=fake_nvml.env())
        assert code == 1
        [problem] = problems(found)
        assert problem["message"].startswith(f"{lock}: `gpm archive` lock held for 3h 00m by pid {pid} (")
        assert f"kill {pid}" in problem["advice"]
    finally:
        proc.communicate("", timeout=10)
    assert doctor(db, env=fake_nvml.env()).returncode == 0  # released: the left file is harmless


def test_lock_held_by_a_leftover_child_names_it(tmp_path, fake_nvml):
    db = sampled_db(tmp_path, fake_nvml)
    proc, child = hold_lock(db, "orphan")
    proc.wait(timeout=10)
    try:
        code, found = findings(db, env=fake_nvml.env())
        assert code == 1
        [problem] = problems(found)
        assert f"lock held by pid {child} (" in problem["message"]
        assert f"though pid {proc.pid} that took it is gone" in problem["message"]
    finally:
        os.kill(child, 9)
        proc.stdin.close()
    for _ in range(100):  # the kernel drops the lock once the child is reaped by init
        if findings(db, env=fake_nvml.env())[0] == 0:
            break
        time.sleep(0.05)
    assert findings(db, env=fake_nvml.env())[0] == 0


def test_lock_file_of_a_deleted_database_removed_by_fix(tmp_path, fake_nvml):
    db = sampled_db(tmp_path, fake_nvml)
    gone = db.parent / "old.db"
    proc, _ = hold_lock(gone)
    proc.communicate("", timeout=10)
    lock = db.parent / "locks" / "old.db.archive.lock"
    stranger = db.parent / "locks" / "notes.txt"
    stranger.write_text("not gpm's")
    assert lock.exists()
    code, found = findings(db, env=fake_nvml.env())
    assert code == 0
    [note] = [f for f in found if f["check"] == "locks"]
    assert note["status"] == "note" and note["message"] == f"{lock}: lock file of a database that is gone"
    assert lock.exists()
    fixed = doctor(db, "--fix", env=fake_nvml.env())
    assert f"fixed   locks: {lock}: removed" in fixed.stdout.splitlines() and fixed.returncode == 0
    assert not lock.exists() and stranger.read_text() == "not gpm's"


def test_a_waiter_locks_the_new_file_when_fix_removed_the_old_one(tmp_path):
    """Removing a lock file is safe: a run that opened it before the unlink locks the new one."""
    db = tmp_path / "gpm.db"
    lock = tmp_path / "locks" / "gpm.db.archive.lock"
    holder, _ = hold_lock(db)
    waiter = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom gpm.locks import exclusive_lock\n"
         "with exclusive_lock(sys.argv[1], job='archive', wait_secs=20):\n"
         "    print('locked', flush=True); sys.stdin.read()", str(lock)],
        env=gpm_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)  # the waiter has opened the file and polls its flock
        lock.unlink()
        holder.communicate("", timeout=10)
        assert waiter.stdout.readline() == "locked\n"
        st = lock.stat()  # the waiter made a new file and holds it
        held = Path("/proc/locks").read_text()
        assert f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} " in held
        assert lock.read_text() == f"{waiter.pid}\n"
    finally:
        waiter.communicate("", timeout=10)
