"""GPU processes psutil cannot fully read (#14.5): each costs its own details, never the sample.

All real: a zombie (exited, not yet reaped by this test), a pid that exited
and was reaped, another user's process that ``gpm sample`` may not look into
(gpm runs without CAP_SYS_PTRACE, so its exe and cwd are AccessDenied), and
one ordinary process beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import gpm_env
from tests.fakes.nvml import FakeProcess, Scenario, make_gpu

MiB = 1024 * 1024
NO_PTRACE = ["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace"]


def wait_for_state(pid: int, state: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == state.encode():
                return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never reached state {state}")


def test_zombie_vanished_and_hidden_processes_cost_only_their_details(fake_nvml, tmp_path):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run gpm without CAP_SYS_PTRACE")
    zombie = subprocess.Popen(["true"])
    vanished = subprocess.Popen(["true"])
    vanished.wait()
    other_user = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                   "sleep", "60"], stdin=subprocess.DEVNULL)
    # root with gpm's capabilities, so gpm may look into it (a tracer needs all its tracee's capabilities)
    ordinary = subprocess.Popen([*NO_PTRACE, "sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        wait_for_state(zombie.pid, "Z")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                Path(f"/proc/{p.pid}/comm").read_text() != "sleep\n" for p in (other_user, ordinary)):
            time.sleep(0.01)  # setpriv has not exec'd sleep yet
        pids = [zombie.pid, vanished.pid, other_user.pid, ordinary.pid]
        scenario = Scenario(gpus=[make_gpu(0)])
        scenario.gpus[0].processes = [FakeProcess(pid=p, used_memory=100 * MiB, sm_util=10) for p in pids]
        fake_nvml.set(scenario)
        db = tmp_path / "gpm.db"
        result = subprocess.run(
            [*NO_PTRACE, sys.executable, "-m", "gpm", "--db", str(db), "sample", "--json"],
            env=gpm_env(fake_nvml.env()), capture_output=True, text=True, timeout=60)
    finally:
        for p in (other_user, ordinary):
            p.kill()
            p.wait()
        zombie.wait()
    assert (result.returncode, result.stderr) == (0, "")
    (line,) = result.stdout.splitlines()  # JSON Lines: one GPU
    shown = {p["pid"]: p for p in json.loads(line)["processes"]}
    assert sorted(shown) == sorted(pids)

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT COUNT(*) FROM gpu_metrics").fetchone() == (1,)
    rows = {r[0]: r[1:] for r in conn.execute("SELECT pid, name, exe, cmdline, user, reason FROM process_events")}
    conn.close()
    assert sorted(rows) == sorted(pids)
    name, exe, cmdline, user, reason = rows[other_user.pid]
    assert (name, exe, json.loads(cmdline), user) == ("sleep", None, ["sleep", "60"], "nobody")
    assert "could not read its exe" in reason
    name, exe, cmdline, user, _ = rows[zombie.pid]
    assert (name, exe, cmdline, user) == ("true", None, None, "root")
    assert rows[vanished.pid][:4] == (None, None, None, None) and "exited" in rows[vanished.pid][4]
    name, exe, cmdline, user, _ = rows[ordinary.pid]
    assert (name, os.path.basename(exe), json.loads(cmdline), user) == ("sleep", "sleep", ["sleep", "60"], "root")
