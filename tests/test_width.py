"""Every human-readable output fits the terminal (issue #13.1, #13.5).

Each command of ``COMMANDS`` runs in a real pseudo-terminal of 80x24 (and
120x24), against the fake NVML with long GPU names and real processes with
long names and command lines, and no line it prints may be wider than the
terminal: a wider line is a row the terminal wraps. A command is added by
adding a line to ``COMMANDS``.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from gpm.humanize import display_width
from tests.terminal import run_in_pty, user_env

GiB = 1 << 30
LONG_GPU = "NVIDIA RTX 4000 SFF Ada Generation with an Unusually Long Board Name"
WIDE_GPU = "NVIDIA 演算加速装置 超長名前モデル"
LONG_PROGRAM = "inference-server-with-a-long-program-name"
WIDE_PROGRAM = "推論サーバー長い名前"
#: The sequences the live view draws with; any other escape is a finding.
CSI = re.compile(r"\x1b\[(\?25[lh]|H|K|J)")


def _report_wide():
    return pytest.mark.xfail(strict=True, reason="report width: #13.1, after the report rework")


#: (id, argv after `gpm`, frames to wait for before SIGINT (None: runs to its end), marks)
COMMANDS = [
    pytest.param(["ps"], None, id="ps"),
    pytest.param(["sample"], None, id="sample"),
    pytest.param(["sample", "--follow", "-i", "0.1"], 20, id="sample-follow"),
    pytest.param(["config", "show"], None, id="config-show"),
    pytest.param(["report", "--week", "2025-W47"], None, id="report", marks=_report_wide()),
]


def run_gpm_in_pty(argv: list[str], env: dict, columns: int, frames: int | None = None) -> tuple[int, str]:
    """``gpm ARGV`` on a ``columns`` x 24 terminal; with ``frames``, Ctrl-C once
    that many live frames were drawn."""
    code, out = run_in_pty([sys.executable, "-m", "gpm", *argv], env, columns=columns,
                           interrupt_when=None if frames is None else lambda out: out.count(b"\x1b[H") >= frames)
    return code, out.decode("utf-8", "replace").replace("\r\n", "\n")


def screen_lines(text: str) -> list[str]:
    """The lines a terminal shows, the live view's drawing sequences taken out."""
    return CSI.sub("", text.replace("\x1b[H", "\n")).split("\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three GPUs (a long name, a wide one, an A100) and real processes on
    them: a long program name, a wide one, and python with a long command line."""
    from tests.fakes.nvml import FakeProcess, Scenario, make_gpu

    home = tmp_path_factory.mktemp("width")
    tools = home / "tools"
    tools.mkdir()
    for name in (LONG_PROGRAM, WIDE_PROGRAM):
        shutil.copy(shutil.which("sleep"), tools / name)
    (tools / "python3").symlink_to(sys.executable)
    script = home / "train_a_model_with_a_rather_long_script_name.py"
    script.write_text("import time\ntime.sleep(600)\n")
    procs = [subprocess.Popen([tools / LONG_PROGRAM, "600"]), subprocess.Popen([tools / WIDE_PROGRAM, "600"]),
             subprocess.Popen([tools / "python3", script, "--epochs", "300", "--learning-rate", "0.0003",
                               "--data", "/srv/datasets/a-very-long-dataset-directory-name/shard-0001"])]
    try:
        scenario = home / "nvml.txt"
        Scenario(gpus=[
            make_gpu(0, name=LONG_GPU, processes=[FakeProcess(pid=procs[0].pid, used_memory=5 * GiB)]),
            make_gpu(1, name=WIDE_GPU, processes=[FakeProcess(pid=procs[1].pid, used_memory=3 * GiB)]),
            make_gpu(2, processes=[FakeProcess(pid=procs[2].pid, used_memory=21 * GiB)]),
        ]).write(scenario)
        env = user_env(home, scenario)
        for var in ("COLUMNS", "LINES"):  # the size comes from the terminal
            env.pop(var, None)
        yield env
    finally:
        for p in procs:
            p.kill()
            p.wait()


def too_wide(lines: list[str], columns: int) -> list[str]:
    return [f"{display_width(line)} columns: {line!r}" for line in lines if display_width(line) > columns]


@pytest.mark.parametrize("argv, frames", COMMANDS)
def test_fits_80_columns(world, argv, frames):
    code, text = run_gpm_in_pty(argv, world, 80, frames)
    assert code == 0, text
    lines = screen_lines(text)
    assert "\x1b" not in "".join(lines), f"an escape sequence other than the live view's: {text!r}"
    assert not too_wide(lines, 80), "\n".join(too_wide(lines, 80))
    assert len([line for line in lines if line.strip()]) >= 3, text


def test_tables_keep_one_row_per_gpu_and_process_and_the_numbers(world):
    """Shrinking cut names and reasons, never a row into two or a reading off."""
    _, text = run_gpm_in_pty(["sample"], world, 80)
    rows = [line for line in screen_lines(text) if re.match(r"\s*\d\s", line)]
    assert [r.split()[0] for r in rows] == ["0", "1", "2"], text
    assert "RTX 4000 SFF Ada" in rows[0] and rows[0].rstrip().endswith("1") and "/ 24.0 GiB" in rows[0]
    assert "演算加速装置" in rows[1] and "W / 400 W" in rows[1]
    _, text = run_gpm_in_pty(["ps"], world, 80)
    rows = [line for line in screen_lines(text) if re.match(r"\s*\d\s", line)]
    assert [r.split()[0] for r in rows] == ["0", "1", "2"], text
    assert [r for r in rows if "5.0 GiB" in r and "inference-ser" in r], text
    assert [r for r in rows if "3.0 GiB" in r and "推論" in r], text
    assert [r for r in rows if "21.0 GiB" in r and "ml_training" in r and r.endswith("…")], text


def test_at_120_columns_the_extra_width_is_used(world):
    _, text = run_gpm_in_pty(["ps"], world, 120)
    widths = [display_width(line) for line in screen_lines(text)]
    assert 80 < max(widths) <= 120, text


def test_live_view_redraws_in_place_and_leaves_the_last_frame(world):
    """--follow on a terminal: frames drawn from the top left, the cursor hidden
    then shown again, the history as wide as the terminal allows, and Ctrl-C
    is its normal end (exit 0)."""
    code, text = run_gpm_in_pty(["sample", "--follow", "-i", "0.1"], world, 120, 20)
    assert code == 0, text
    assert text.count("\x1b[?25l") == 1 and text.rstrip().endswith("\x1b[?25h"), repr(text[-200:])
    last = text.rsplit("\x1b[H", 1)[1]
    lines = screen_lines(last)
    assert len([line for line in lines if line.strip()]) <= 23
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d on .*, every 0\.1s", lines[0]), lines[0]
    history = [line for line in lines if re.match(r"GPU \d", line)]
    assert len(history) == 3, last
    sparks = [max(re.findall(r"[▁▂▃▄▅▆▇█]+", line), key=len) for line in history]
    assert all(len(s) > 15 for s in sparks), sparks
    assert len({display_width(line[:line.index("util")]) for line in history}) == 1, "the sparklines line up"
    assert not too_wide(lines, 120)


def test_live_view_only_on_a_terminal(world):
    """Piped, --follow prints what it printed before: nothing but --json lines."""
    proc = subprocess.Popen([sys.executable, "-m", "gpm", "sample", "--follow", "--json", "-i", "0.1"],
                            env=world, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = [proc.stdout.readline() for _ in range(6)]  # two samples of three GPUs
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    out = b"".join(first) + rest
    assert b"\x1b" not in out
    assert len(out.splitlines()) >= 6 and all(line.startswith(b'{"ts"') for line in out.splitlines())
