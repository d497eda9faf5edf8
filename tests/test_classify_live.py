"""Real processes, seen through /proc the way `gpm ps` and `gpm sample` see them on the fake NVML.

Each child is made to look like the program it imitates with real means: a
symlinked interpreter under the program's name, ``exec -a`` for argv[0], a
``libtorch_cuda.so`` built here and loaded with ctypes, environment
variables, a renamed parent, a game binary copied under a Steam library.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import run_gpm
from tests.fakes.nvml import FakeProcess, Scenario, make_gpu
from tests.steamtree import STEAM_FIXTURES

MiB = 1024 * 1024
PYTHON = os.path.realpath(sys.executable)
SECRET = "sk-live-4f9a8b7c6d5e4f3a2b1c"
BLOB = "sha256-" + "ab12" * 16

WAIT_SCRIPT = """
import ctypes, sys
for arg in sys.argv[1:]:
    if arg.endswith(".so"):
        ctypes.CDLL(arg)
print("ready", flush=True)
sys.stdin.read()
"""
PARENT_SCRIPT = """
import subprocess, sys
child = subprocess.Popen(sys.argv[sys.argv.index("--") + 1:], stdin=subprocess.DEVNULL)
print(child.pid, flush=True)
sys.stdin.read()
child.kill()
child.wait()
"""
GAME_C = "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n"


def cc(tmp: Path, name: str, source: str, *flags: str) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    src = tmp / (name + ".c")
    src.write_text(source)
    out = tmp / name
    subprocess.run(["cc", *flags, "-o", str(out), str(src)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("built")
    lib_dir = tmp / "site-packages/torch/lib"
    lib_dir.mkdir(parents=True)
    lib = cc(tmp, "libtorch_cuda.so", "int fake_torch_cuda_init(void) { return 0; }\n", "-shared", "-fPIC")
    lib = lib.rename(lib_dir / "libtorch_cuda.so")
    game = cc(tmp, "game", GAME_C)
    (tmp / "wait.py").write_text(WAIT_SCRIPT)
    (tmp / "parent.py").write_text(PARENT_SCRIPT)
    return {"tmp": tmp, "torch": lib, "game": game, "wait": tmp / "wait.py", "parent": tmp / "parent.py"}


class Children:
    """Started processes, each waiting until the test ends."""

    def __init__(self, stack: ExitStack):
        self.stack = stack

    def start(self, argv, env=None, ready=True) -> int:
        """Start ``argv``; with ``ready``, wait for its first line (the script is up)."""
        proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=dict(os.environ, **(env or {})), text=True)
        self.stack.callback(self._stop, proc)
        self.last_line = proc.stdout.readline().strip() if ready else ""
        return proc.pid

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def children():
    with ExitStack() as stack:
        yield Children(stack)


def named(tmp: Path, name: str) -> Path:
    """The interpreter under another name (a symlink: the kernel's comm is the link's name)."""
    link = tmp / "bin" / name
    link.parent.mkdir(exist_ok=True)
    if not link.exists():
        link.symlink_to(PYTHON)
    return link


def vanished_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def ps_json(fake_nvml, pids_mem: list[tuple[int, int]], env=None) -> dict[int, dict]:
    gpu = make_gpu(0)
    gpu.processes = [FakeProcess(pid=p, used_memory=m, type="compute", sm_util=50) for p, m in pids_mem]
    fake_nvml.set(Scenario(gpus=[gpu]))
    result = run_gpm("ps", "--json", env=fake_nvml.env(env))
    assert result.returncode == 0, result.stderr
    return {obj["pid"]: obj for obj in map(json.loads, result.stdout.splitlines())}


def test_ml_llm_desktop_and_vanished_processes_through_proc(fake_nvml, built, children, tmp_path):
    tmp = built["tmp"]
    trainer = children.start([PYTHON, built["wait"], built["torch"], "--epochs", "3", "--api-key", SECRET])
    llama = children.start([named(tmp, "llama-server"), built["wait"], "-m",
                            "/models/Qwen2.5-7B-Instruct-Q4_K_M.gguf", "--port", "8080"])
    ollama = children.start(["bash", "-c", 'exec -a ollama "$0" "$@"', PYTHON, built["wait"],
                             "runner", "--model", f"/var/lib/ollama/blobs/{BLOB}"])
    shell = children.start([named(tmp, "gnome-shell"), built["wait"]])
    ghost = vanished_pid()
    seen = ps_json(fake_nvml, [(trainer, 4000 * MiB), (llama, 6000 * MiB), (ollama, 5000 * MiB),
                               (shell, 300 * MiB), (ghost, 100 * MiB)])
    got = {pid: (seen[pid]["category"], seen[pid]["label"]) for pid in seen}
    assert got == {
        trainer: ("ml_training", "wait.py"),
        llama: ("llm_inference", "Qwen2.5-7B-Instruct-Q4_K_M.gguf"),
        ollama: ("llm_inference", "sha256-ab12ab12ab12"),
        shell: ("desktop", "GNOME Shell"),
        ghost: ("general_compute", f"pid {ghost}"),
    }
    assert "libtorch_cuda.so" in seen[trainer]["reason"] and "--epochs" in seen[trainer]["reason"]
    assert "exited" in seen[ghost]["reason"]
    assert seen[trainer]["user"] and seen[trainer]["start_time"].endswith("Z")
    assert SECRET not in json.dumps(seen) and "***" in seen[trainer]["cmdline"]
    assert seen[llama]["name"] == "llama-server"


def test_explain_lists_signals_and_the_deciding_rule(fake_nvml, built, children):
    trainer = children.start([PYTHON, built["wait"], built["torch"], "--epochs", "3", "--token", SECRET])
    gpu = make_gpu(0)
    gpu.processes = [FakeProcess(pid=trainer, used_memory=2048 * MiB)]
    fake_nvml.set(Scenario(gpus=[gpu]))
    result = run_gpm("ps", "--explain", trainer, env=fake_nvml.env())
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"PID {trainer} on GPU 0" in out
    assert "PyTorch (libtorch_cuda.so)" in out
    assert "training signal: training options --epochs" in out
    assert "decision: ml_training / wait.py (rule training:signals)" in out
    assert SECRET not in out and "--token ***" in out
    missing = run_gpm("ps", "--explain", vanished_pid(), env=fake_nvml.env())
    assert missing.returncode == 1 and "no such process" in missing.stderr


def steam_home(home: Path) -> Path:
    """~/.local/share/Steam from the real sample files, plus a second library in the old format."""
    if not (STEAM_FIXTURES / "BoilR__appmanifest_763890.acf").exists():
        pytest.skip("Steam fixtures not present")
    steam = home / ".local/share/Steam"
    (steam / "steamapps/common/Wildermyth").mkdir(parents=True)
    shutil.copy(STEAM_FIXTURES / "BoilR__appmanifest_763890.acf", steam / "steamapps/appmanifest_763890.acf")
    shutil.copy(STEAM_FIXTURES / "Steam-Library-Tracker__libraryfolders.vdf", steam / "steamapps/libraryfolders.vdf")
    return steam


def test_steam_game_by_exe_env_and_reaper_parent(fake_nvml, built, children, isolated_home, tmp_path):
    steam = steam_home(isolated_home)
    in_library = steam / "steamapps/common/Wildermyth/wildermyth"
    shutil.copy(built["game"], in_library)
    elsewhere = tmp_path / "games/Game.x86_64"
    elsewhere.parent.mkdir()
    shutil.copy(built["game"], elsewhere)

    by_exe = children.start([in_library], ready=False)
    by_env = children.start([elsewhere], env={"SteamAppId": "763890"}, ready=False)
    children.start(["bash", "-c", 'exec -a reaper "$0" "$@"', PYTHON, built["parent"],
                    "SteamLaunch", "AppId=763890", "--", elsewhere])
    by_parent = int(children.last_line)  # the game, started by "reaper"
    seen = ps_json(fake_nvml, [(by_exe, 900 * MiB), (by_env, 900 * MiB), (by_parent, 900 * MiB)])
    assert {pid: (o["category"], o["label"]) for pid, o in seen.items()} == {
        by_exe: ("gaming", "Wildermyth"), by_env: ("gaming", "Wildermyth"), by_parent: ("gaming", "Wildermyth"),
    }
    assert "steamapps/common/Wildermyth" in seen[by_exe]["reason"]
    assert "env SteamAppId" in seen[by_env]["reason"]
    assert "SteamLaunch AppId=763890" in seen[by_parent]["reason"]


def test_sample_stores_one_row_per_run_with_nothing_secret(fake_nvml, built, children, tmp_path):
    trainer = children.start([PYTHON, built["wait"], built["torch"], "--epochs", "3",
                              f"--api-key={SECRET}", f"https://me:{SECRET}@hub.example/x"])
    gpu = make_gpu(0)
    gpu.processes = [FakeProcess(pid=trainer, used_memory=3000 * MiB, sm_util=80)]
    fake_nvml.set(Scenario(gpus=[gpu]))
    db = tmp_path / "gpm.db"
    first = run_gpm("--db", db, "sample", "--json", "-n", "3", "-i", "0.2", env=fake_nvml.env())
    assert first.returncode == 0, first.stderr
    procs = [json.loads(line)["processes"][0] for line in first.stdout.splitlines()]
    assert {(p["category"], p["label"]) for p in procs} == {("ml_training", "wait.py")}
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM process_runs")]
    assert len(rows) == 1
    row = rows[0]
    assert (row["pid"], row["category"], row["label"], row["samples"]) == (trainer, "ml_training", "wait.py", 3)
    assert row["max_used_memory_bytes"] == 3000 * MiB
    assert 0.3 <= row["gpu_seconds"] <= 5 and row["energy_joules"] > 0
    cmdline = json.loads(row["cmdline"])
    assert "--api-key=***" in cmdline and "https://me:***@hub.example/x" in cmdline
    dump = "\n".join(conn.iterdump())
    assert SECRET not in dump
    conn.close()

    off = tmp_path / "off.toml"
    off.write_text("[classify]\nstore_cmdline = false\n")
    db2 = tmp_path / "off.db"
    assert run_gpm("--config", off, "--db", db2, "sample", env=fake_nvml.env()).returncode == 0
    conn = sqlite3.connect(db2)
    assert conn.execute("SELECT cmdline, category FROM process_events").fetchall() == [(None, "ml_training")]
    conn.close()


def test_ps_table_and_empty_gpu(fake_nvml, built, children):
    shell = children.start([named(built["tmp"], "gnome-shell"), built["wait"]])
    gpu = make_gpu(0)
    gpu.processes = [FakeProcess(pid=shell, used_memory=300 * MiB, type="graphics")]
    fake_nvml.set(Scenario(gpus=[gpu]))
    table = run_gpm("ps", env=fake_nvml.env())
    assert table.returncode == 0, table.stderr
    header, _rule, row = table.stdout.splitlines()
    assert header.split()[:7] == ["GPU", "PID", "User", "Name", "Category", "Label", "Memory"]
    assert f"{shell}" in row and "desktop" in row and "GNOME Shell" in row and "300.0 MiB" in row
    fake_nvml.set(Scenario(gpus=[make_gpu(0)]))
    empty = run_gpm("ps", env=fake_nvml.env())
    assert (empty.returncode, empty.stdout) == (0, "no processes on any GPU\n")


@pytest.mark.parametrize("name", ["ps", "classify"])
def test_every_option_has_help(name):
    from gpm.cli import cli

    command = cli.get_command(None, name)
    assert command.help and command.get_short_help_str()
    for param in command.params:
        if param.param_type_name == "option":
            assert param.help, f"gpm {name} {param.opts[0]} has no help"
