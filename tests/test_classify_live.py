"""Real processes, seen through /proc the way `gpm ps` and `gpm sample` see them on the fake NVML.

Each child is made to look like the program it imitates with real means: a
symlinked interpreter under the program's name, ``exec -a`` for argv[0], a
``libtorch_cuda.so`` built here and loaded with ctypes, environment
variables, a renamed parent, a game binary copied under a Steam library.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from gpm.classify.live import Classifier
from gpm.classify.rules import classify
from gpm.config import load_config
from gpm.gpu.sample import GpuProcess, GpuSample
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
        self.last = proc
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


# ---------------------------------------------------------------- a long-lived Classifier (the daemon's)

LATE_TORCH_SCRIPT = """
import ctypes, sys
print("ready", flush=True)
ctypes.CDLL(sys.stdin.readline().strip())
print("loaded", flush=True)
sys.stdin.read()
"""


def gpu_sample(ts_ms: int, *pids: int, util: int = 30) -> GpuSample:
    return GpuSample(ts_ms=ts_ms, index=0, source="nvml", utilization_gpu_percent=util,
                     processes=[GpuProcess(pid=pid, used_memory_bytes=500 * MiB) for pid in pids])


def decisions(clf: Classifier, ts_ms: int, *pids: int) -> dict[int, tuple[str, str]]:
    s = gpu_sample(ts_ms, *pids)
    clf.enrich([s])
    return {p.pid: (p.category, p.reason) for p in s.processes}


def test_a_long_lived_classifier_notices_torch_loaded_after_it_first_saw_the_process(built, children, tmp_path):
    script = tmp_path / "late.py"
    script.write_text(LATE_TORCH_SCRIPT)
    pid = children.start([PYTHON, script, "--port", "8080"])
    clf = Classifier(load_config(), refresh_secs=0)
    category, reason = decisions(clf, 1_000, pid)[pid]
    assert category == "general_compute" and "no ML" in reason
    assert decisions(clf, 2_000, pid)[pid][0] == "general_compute"

    children.last.stdin.write(f"{built['torch']}\n")
    children.last.stdin.flush()
    assert children.last.stdout.readline().strip() == "loaded"
    category, reason = decisions(clf, 3_000, pid)[pid]
    assert category == "llm_inference"
    assert "libtorch_cuda.so" in reason and "--port" in reason


# A /proc of our own making (psutil.PROCFS_PATH, psutil's own setting), to see
# what the classifier reads and to reuse pids.
BTIME = 1_700_000_000


@pytest.fixture
def proc_root(tmp_path, monkeypatch) -> Path:
    import psutil

    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text(f"cpu 1 2 3\nbtime {BTIME}\n")
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(root))
    return root


def proc_stat_line(pid: int, comm: str, start_ticks: int, vsize: int = 1 << 30, ppid: int = 1) -> str:
    """A /proc/PID/stat line with all 52 fields of a current kernel."""
    return f"{pid} ({comm}) S {ppid} {' '.join(['0'] * 17)} {start_ticks} {vsize} {' '.join(['0'] * 29)}\n"


def fake_proc(root: Path, pid: int, *, comm: str, cmdline: list[str], start_ticks: int = 1000,
              vsize: int = 1 << 30, libraries: tuple[str, ...] = ("/usr/lib/x86_64-linux-gnu/libc.so.6",)) -> Path:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text(proc_stat_line(pid, comm, start_ticks, vsize))
    (d / "status").write_text(f"Name:\t{comm}\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in cmdline) + b"\0")
    (d / "environ").write_bytes(b"LANG=C\0")
    (d / "maps").write_text("".join(f"7f00{i:04x}000-7f00{i:04x}fff r-xp 00000000 08:01 {i} {lib}\n"
                                    for i, lib in enumerate(libraries)))
    for link, target in (("exe", f"/usr/bin/{comm}"), ("cwd", "/srv")):
        if (d / link).is_symlink():
            (d / link).unlink()
        (d / link).symlink_to(target)
    return d


class Opens:
    """The files opened under some folders, seen with inotify (no hooks into gpm)."""

    IN_OPEN = 0x20

    def __init__(self, *folders: Path):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            pytest.skip(f"inotify: {os.strerror(ctypes.get_errno())}")
        self.watches = {libc.inotify_add_watch(self.fd, str(d).encode(), self.IN_OPEN): d.name for d in folders}

    def take(self) -> list[str]:
        """``["100/stat", ...]`` opened since the last call, sorted."""
        out = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError as err:
                if err.errno == errno.EAGAIN:
                    return sorted(out)
                raise
            i = 0
            while i < len(data):
                wd, _mask, _cookie, size = struct.unpack_from("iIII", data, i)
                name = data[i + 16:i + 16 + size].rstrip(b"\0").decode()
                out.append(f"{self.watches[wd]}/{name}")
                i += 16 + size

    def close(self) -> None:
        os.close(self.fd)


def test_unchanged_processes_cost_one_stat_read_per_sample(proc_root):
    root = proc_root
    torch = "/opt/venv/lib/python3.12/site-packages/torch/lib/libtorch_cuda.so"
    a = fake_proc(root, 100, comm="python3", cmdline=["python3", "serve.py", "--port", "8080"])
    b = fake_proc(root, 200, comm="python3", cmdline=["python3", "job.py"])
    opens = Opens(a, b)
    try:
        clf = Classifier(load_config(), refresh_secs=30)
        first = decisions(clf, 1_000, 100, 200)
        assert first[100][0] == "general_compute"
        assert {"100/stat", "100/cmdline", "100/environ", "100/maps", "200/maps"} <= set(opens.take())
        for ts in range(2_000, 31_000, 1_000):
            assert decisions(clf, ts, 100, 200) == first
            assert opens.take() == ["100/stat", "200/stat"]

        # torch appears in the maps, but the address space did not change size: not read again
        fake_proc(root, 100, comm="python3", cmdline=["python3", "serve.py", "--port", "8080"],
                  libraries=("/usr/lib/libc.so.6", torch))
        opens.take()
        assert decisions(clf, 31_000, 100, 200) == first
        assert opens.take() == ["100/cmdline", "100/stat", "200/cmdline", "200/stat"]
        fake_proc(root, 100, comm="python3", cmdline=["python3", "serve.py", "--port", "8080"],
                  libraries=("/usr/lib/libc.so.6", torch), vsize=3 << 30)
        opens.take()
        assert decisions(clf, 32_000, 100, 200) == first  # within the refresh period
        assert opens.take() == ["100/stat", "200/stat"]
        after = decisions(clf, 61_000, 100, 200)
        assert after[100][0] == "llm_inference" and "libtorch_cuda.so" in after[100][1]
        assert after[200] == first[200]
        assert opens.take() == ["100/cmdline", "100/maps", "100/stat", "200/cmdline", "200/stat"]
    finally:
        opens.close()


def test_a_reused_pid_is_a_new_process_and_vanished_pids_are_forgotten(proc_root):
    root = proc_root
    fake_proc(root, 100, comm="python3", cmdline=["python3", "train.py", "--epochs", "3"])
    fake_proc(root, 200, comm="gnome-shell", cmdline=["/usr/bin/gnome-shell"])
    fake_proc(root, 300, comm="mpv", cmdline=["mpv", "film.mkv"])
    clf = Classifier(load_config())
    first = decisions(clf, 1_000, 100, 200, 300)
    assert {pid: c for pid, (c, _) in first.items()} == {
        100: "ml_training", 200: "desktop", 300: "desktop"}

    # pid 100 ends and a new process (same name, later start) gets its number
    fake_proc(root, 100, comm="python3", cmdline=["python3", "job.py"], start_ticks=5000)
    again = decisions(clf, 2_000, 100, 200)
    assert again[100][0] == "general_compute" and again[200] == first[200]
    assert set(clf.processes) == {100, 200}  # 300 left the GPU

    shutil.rmtree(root / "200")
    gone = decisions(clf, 3_000, 100, 200)
    assert gone[200][0] == "general_compute" and "exited" in gone[200][1]
    assert set(clf.processes) == {100, 200}  # still on the GPU: remembered as not shown
    decisions(clf, 4_000, 100)
    assert set(clf.processes) == {100}


def test_a_pid_this_proc_cannot_see_is_classified_once_until_it_shows_up(proc_root, monkeypatch):
    """NVML reports host pids into a container; each scrape must not classify them again (#14)."""
    import gpm.classify.live as live

    root = proc_root
    fake_proc(root, 100, comm="python3", cmdline=["python3", "train.py", "--epochs", "3"])
    clf = Classifier(load_config())
    calls = []

    def counting(facts, ctx):
        calls.append(facts.pid)
        return classify(facts, ctx)

    monkeypatch.setattr(live, "classify", counting)
    first = decisions(clf, 1_000, 100, 40_000)
    for ts in range(2_000, 6_000, 1_000):
        assert decisions(clf, ts, 100, 40_000) == first
    assert sorted(calls) == [100, 40_000]
    assert first[40_000][0] == "general_compute"

    fake_proc(root, 40_000, comm="mpv", cmdline=["mpv", "film.mkv"])  # now it shows
    assert decisions(clf, 7_000, 100, 40_000)[40_000][0] == "desktop"
    assert sorted(calls) == [100, 40_000, 40_000]
