"""Run a program on a real pseudo-terminal of a given size, as a user's terminal would.

Used by the README test (its runnable examples) and the width tests (#13.1):
stdin, stdout and stderr are the terminal, so ``isatty()`` is true and the
program reads the window size from it (pass an environment without
``COLUMNS``/``LINES`` to test that).
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Callable


def run_in_pty(argv: list, env: dict, *, columns: int = 80, lines: int = 24, cwd=None, timeout: float = 60,
               interrupt_when: Callable[[bytes], bool] | None = None) -> tuple[int, bytes]:
    """Run ``argv`` on a new ``columns`` x ``lines`` pseudo-terminal: its exit
    code and all it wrote. ``interrupt_when(output so far)`` true sends SIGINT
    to its process group once, as Ctrl-C does."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                            start_new_session=True)
    os.close(slave)
    out = b""
    interrupted = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if interrupt_when is not None and not interrupted and interrupt_when(out):
                os.killpg(proc.pid, signal.SIGINT)
                interrupted = True
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal has gone
                break
            if not chunk:
                break
            out += chunk
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{argv!r} still running after {timeout} s:\n{out.decode(errors='replace')}")
    finally:
        os.close(master)
    return proc.wait(timeout=10), out


def user_env(home: Path, scenario: Path, extra: dict | None = None) -> dict:
    """The environment of a user whose home is ``home`` (XDG folders in it, no
    ``GPM_*`` variables, TZ=UTC, NO_COLOR, PAGER=cat) on the fake NVML serving
    ``scenario``, with the test suite's known week (``tests.test_report``)
    already stored for this host in the default database."""
    from tests.conftest import gpm_env
    from tests.fakes.nvml import build_fake_nvml, fake_env
    from tests.test_report import fill_week

    env = fake_env(build_fake_nvml(), scenario, gpm_env({
        "HOME": home, "XDG_CONFIG_HOME": home / ".config", "XDG_DATA_HOME": home / ".local/share",
        "XDG_STATE_HOME": home / ".local/state", "XDG_CACHE_HOME": home / ".cache",
        "TZ": "UTC", "NO_COLOR": "1", "PAGER": "cat", "TERM": "xterm", **(extra or {}),
    }))
    for var in [v for v in env if v.startswith("GPM_")]:
        del env[var]
    data = home / ".local/share/gpm"
    data.mkdir(parents=True, mode=0o700)
    fill_week(data / "gpm.db", host=socket.gethostname())
    return env
