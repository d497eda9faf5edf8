"""nvidia-smi faults, through the real `gpm sample` and `gpm daemon` on the nvidia-smi fallback.

NVML is the fake with its driver "not loaded", so gpm falls back to the
stand-in ``tests/fakes/nvidia-smi``, which hangs, fails, prints garbage,
nothing, or far too much on demand.  gpm must time out, say what happened in
one line (exit 69 for a one-shot sample), store nothing made up, and the
daemon must go on and recover by itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, gpm_env, run_gpm
from tests.fakes.nvml import Scenario
from tests.faults.conftest import assert_no_traceback, integrity, query, ticks, wait_until

CAPTURE = FIXTURES / "nvidia-smi" / "netdata__rtx-4090-driver-535.xml"
FAKE_SMI = Path(__file__).resolve().parents[1] / "fakes" / "nvidia-smi"
NO_CAPTURE = pytest.mark.skipif(not CAPTURE.exists(), reason="../shared/fixtures/nvidia-smi is absent")


@pytest.fixture
def smi(fake_nvml, tmp_path):
    """An environment where NVML fails and nvidia-smi is the stand-in; ``smi.mode(text)`` changes it."""
    fake_nvml.set(Scenario(init_error="DRIVER_NOT_LOADED"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(FAKE_SMI, bindir / "nvidia-smi")
    env = fake_nvml.env()
    control = tmp_path / "smi.env"
    env.update(PATH=f"{bindir}:{env['PATH']}", FAKE_SMI_XML=str(CAPTURE), FAKE_SMI_ENV_FILE=str(control),
               GPM_GPU_NVIDIA_SMI_TIMEOUT_SECS="0.5")

    class Smi:
        def __init__(self):
            self.env = env

        def mode(self, text: str) -> None:
            tmp = control.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(control)

    return Smi()


@NO_CAPTURE
@pytest.mark.parametrize("mode, message", [
    ("FAKE_SMI_SLEEP=30", "nvidia-smi timed out after 0.5 s (killed)"),
    ("FAKE_SMI_EXIT=9; FAKE_SMI_STDERR='Unable to determine the device handle for GPU0000:01:00.0: Unknown Error'",
     "nvidia-smi failed (exit code 9): Unable to determine the device handle for GPU0000:01:00.0: Unknown Error"),
    ("FAKE_SMI_XML=GARBAGE", "nvidia-smi output unusable: not valid XML"),
    ("FAKE_SMI_XML=/dev/null", "nvidia-smi output unusable: empty output"),
])
def test_sample_says_what_nvidia_smi_did_in_one_line_and_stores_nothing(smi, tmp_path, mode, message):
    garbage = tmp_path / "garbage.xml"
    garbage.write_bytes(b"\x00\xff<nvidia_smi_log><gpu><fb_memory_usage>")
    smi.mode(mode.replace("GARBAGE", str(garbage)))
    db = tmp_path / "gpm.db"
    started = time.monotonic()
    result = run_gpm("--db", db, "sample", env=smi.env, timeout=30)
    assert time.monotonic() - started < 8
    assert result.returncode == 69
    # why nvidia-smi, then what it did: nothing else
    warning, line = result.stderr.splitlines()
    assert warning == "gpm: warning: NVML unavailable; using nvidia-smi" and line.startswith(f"gpm: {message}")
    assert_no_traceback(result.stderr)
    assert not db.exists() or query(db, "SELECT COUNT(*) FROM gpu_metrics") == [(0,)]


@NO_CAPTURE
def test_nvidia_smi_flooding_its_output_is_cut_off_with_bounded_memory(smi, tmp_path):
    smi.mode("exec yes '<nvidia_smi_log><gpu>garbage garbage garbage garbage garbage</gpu>'\n")
    smi.env["GPM_GPU_NVIDIA_SMI_TIMEOUT_SECS"] = "3"
    db = tmp_path / "gpm.db"
    # gpm's own peak: a child's ru_maxrss keeps the high-water mark of the process it was forked
    # from (the test run, hundreds of MiB late in the suite), so a small launcher forks gpm
    # and reports the peak of its one child.
    launcher = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
                "sys.exit(r.returncode)")
    proc = subprocess.run([sys.executable, "-c", launcher, sys.executable, "-m", "gpm", "--db", str(db), "sample"],
                          env=gpm_env(smi.env), capture_output=True, text=True, timeout=30)
    *lines, peak_kib = proc.stderr.splitlines()
    peak_mib = int(peak_kib) / 1024
    assert proc.returncode == 69
    assert lines[-1].startswith("gpm: nvidia-smi printed more than 32 MiB (killed); run `")
    assert peak_mib < 150, f"gpm peaked at {peak_mib:.0f} MiB"


@NO_CAPTURE
def test_daemon_rides_out_each_nvidia_smi_fault_and_recovers(smi, tmp_path, daemon):
    garbage = tmp_path / "garbage.xml"
    garbage.write_bytes(b"<nvidia_smi_log><gpu>")
    smi.env.update(GPM_SERVICE_POLL_INTERVAL_SECS="0.2")
    d = daemon(smi.env)
    done = 0

    def more_ticks(n):
        wait_until(lambda: len(ticks(d.db)) >= done + n, timeout=15, what=f"{n} more ticks")
        return len(ticks(d.db))

    done = more_ticks(2)
    for mode, said in [
        ("FAKE_SMI_SLEEP=30", "nvidia-smi timed out after 0.5 s (killed)"),
        ("FAKE_SMI_EXIT=3", "nvidia-smi failed (exit code 3)"),
        (f"FAKE_SMI_XML={garbage}", "nvidia-smi output unusable: not valid XML"),
        ("FAKE_SMI_XML=/dev/null", "nvidia-smi output unusable: empty output"),
    ]:
        smi.mode(mode)
        d.wait_for(re.escape(said), timeout=10)
        time.sleep(2.5)  # a few more failing tries (said once)
        during = len(ticks(d.db))
        smi.mode("")
        started = time.monotonic()
        done = more_ticks(2)
        assert done >= during + 2
        assert time.monotonic() - started < 2.5  # retried at the poll interval, not backed off
    rc, _ = d.stop()
    assert rc == 0
    seen = ticks(d.db)
    assert all(rows == ((0, "ok"),) for _, rows in seen)
    assert query(d.db, "SELECT DISTINCT source FROM gpu_samples") == [("nvidia-smi",)]
    assert integrity(d.db) == "ok"
    assert_no_traceback(d.log)
    warnings = [line.split(" WARNING sample: ", 1)[1] for line in d.log.splitlines() if " WARNING sample: " in line]
    for said in ("timed out after 0.5 s", "exit code 3", "not valid XML", "empty output"):
        assert any(said in w for w in warnings), d.log
    assert all(a != b for a, b in zip(warnings, warnings[1:])), d.log  # said once per change, not per try
    assert d.log.count("GPUs read again") == 4
