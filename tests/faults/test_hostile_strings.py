"""Hostile process names and command lines (#12.2, #12.9, #12.10), through the real gpm.

Every process here is real: a small C program that renames itself with
prctl(PR_SET_NAME) and rewrites its own argv area the way setproctitle does
(both from its environment, so its argv stays whatever the test gave), started
under a file name or with arguments that are not UTF-8. The fake NVML lists
them as GPU processes by pid; gpm reads them from /proc.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpm.humanize import md_cell, os_text, visible
from tests.conftest import run_gpm
from tests.fakes.nvml import FakeProcess, Scenario, make_gpu
from tests.test_classify_live import Children as LiveChildren

MiB = 1024 * 1024

HOSTILE_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *comm = getenv("HOSTILE_COMM"), *title = getenv("HOSTILE_TITLE");
    if (comm) prctl(PR_SET_NAME, comm, 0, 0, 0);
    if (title) {  /* setproctitle: the title over the whole argv area, NUL-padded */
        char *end = argv[argc - 1] + strlen(argv[argc - 1]);
        size_t room = (size_t)(end - argv[0]);
        char *copy = strdup(title);
        memset(argv[0], 0, room);
        strncpy(argv[0], copy, room);
    }
    printf("ready\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    return 0;
}
"""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "hostile.c").write_text(HOSTILE_C)
    subprocess.run(["cc", "-O1", "-o", str(tmp / "hostile"), str(tmp / "hostile.c")], check=True)
    return tmp / "hostile"


class Children(LiveChildren):
    """Like test_classify_live's, with bytes argv, a chosen executable and the helper's knobs."""

    def __init__(self, stack: ExitStack, program: Path):
        super().__init__(stack)
        self.program = program

    def start(self, argv: list, *, exe: bytes | Path | None = None, comm: bytes | None = None,
              title: bytes | None = None, extra_env: dict[bytes, bytes] | None = None) -> int:
        """Run the helper as ``argv`` (argv[0] included), from ``exe`` (default: the helper)."""
        env = {k: v for k, v in os.environb.items() if not k.startswith(b"HOSTILE_")}
        if comm is not None:
            env[b"HOSTILE_COMM"] = comm
        if title is not None:
            env[b"HOSTILE_TITLE"] = title
        env.update(extra_env or {})
        proc = subprocess.Popen(argv, executable=exe or self.program, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.stack.callback(self._stop, proc)
        assert proc.stdout.readline() == b"ready\n"
        return proc.pid


@pytest.fixture
def children(hostile):
    with ExitStack() as stack:
        yield Children(stack, hostile)


def on_gpu(fake_nvml, pids: list[int], gpus: int = 1) -> None:
    """``pids`` on GPU 0 of ``gpus`` distinct GPUs."""
    scenario = Scenario(gpus=[make_gpu(i) for i in range(gpus)])
    scenario.gpus[0].processes = [FakeProcess(pid=p, used_memory=700 * MiB, sm_util=40) for p in pids]
    fake_nvml.set(scenario)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return result.stdout


def db_dump(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


# ------------------------------------------------------------ #12.2 undecodable bytes

def test_a_non_utf8_program_name_and_arguments_do_not_stop_sampling(fake_nvml, children, hostile, tmp_path):
    bad_exe = os.path.join(os.fsencode(tmp_path), b"bad\xff\xfe")
    shutil.copy(hostile, bad_exe)
    from_bad_file = children.start([bad_exe, b"--data", b"caf\xe9"], exe=bad_exe)
    bad_comm = children.start([b"worker", b"\xc3\x28"], comm=b"w\xff\x80k")
    on_gpu(fake_nvml, [from_bad_file, bad_comm], gpus=2)
    db = tmp_path / "gpm.db"

    ok(run_gpm("--db", db, "sample", env=fake_nvml.env()))

    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM gpu_metrics").fetchone() == (2,)
    rows = {r[0]: r[1:] for r in conn.execute("SELECT pid, name, exe, cmdline, label FROM process_events")}
    conn.close()
    exe = os_text(bad_exe)
    assert exe.endswith("/bad\\xff\\xfe")
    assert rows[from_bad_file] == ("bad\\xff\\xfe", exe, json.dumps([exe, "--data", "caf\\xe9"]), "bad\\xff\\xfe")
    assert rows[bad_comm][0] == "w\\xff\\x80k"
    assert json.loads(rows[bad_comm][2]) == ["worker", "\\xc3("]

    seen = {o["pid"]: o for o in map(json.loads, ok(run_gpm("ps", "--json", env=fake_nvml.env())).splitlines())}
    assert (seen[from_bad_file]["name"], seen[from_bad_file]["exe"]) == ("bad\\xff\\xfe", exe)
    table = ok(run_gpm("ps", env=fake_nvml.env()))
    assert "bad\\xff\\xfe" in table and "w\\xff\\x80k" in table and "\ufffd" not in table


def test_a_hostile_steam_library_file_costs_nothing_but_its_games(fake_nvml, children, isolated_home, tmp_path):
    """A user's own libraryfolders.vdf is read when their process shows a Steam sign;
    a NUL in a library path there used to fail the whole sample (ValueError)."""
    steamapps = isolated_home / ".steam/steam/steamapps"
    steamapps.mkdir(parents=True)
    (steamapps / "libraryfolders.vdf").write_bytes(
        b'"libraryfolders"\n{\n "1"\n {\n  "path" "/srv/ga\x00mes"\n }\n}\n')
    game = children.start([b"game.exe"], comm=b"game.exe", extra_env={b"SteamAppId": b"4000"})
    on_gpu(fake_nvml, [game], gpus=2)
    db = tmp_path / "gpm.db"

    ok(run_gpm("--db", db, "sample", env=fake_nvml.env()))

    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM gpu_metrics").fetchone() == (2,)
    assert conn.execute("SELECT COUNT(*) FROM process_events").fetchone() == (1,)
    conn.close()


# ------------------------------------------------------------ #12.9 secrets

SECRETS = {
    "vllm": "tok-SECRET-A7q",
    "title_key": "SECRET-B1x",
    "title_pw": "SECRET-B2y",
    "one_string": "SECRET-C1z",
    "mysql_attached": "SECRET-D1w",
    "sshpass": "SECRET-D2v",
    "jvm": "SECRET-E1u",
    "jvm_dotted": "SECRET-E2t",
    "bearer": "SECRET-F1sabc",
    "url_pw": "SECRET-F2r",
    "url_query": "SECRET-F3q",
    "env_like": "SECRET-G1p",
}


def test_secrets_reach_no_column_no_output_and_no_label(fake_nvml, children, tmp_path):
    s = SECRETS
    pids = {
        "vllm": children.start([b"vllm", b"serve", b"--api-key", s["vllm"].encode(), b"meta-llama/Llama-3-8B"],
                               comm=b"vllm"),
        # setproctitle: the whole title in argv[0], the rest of the argv area NULs
        "title": children.start([b"python3", b"x" * 120], comm=b"python3",
                                title=f"python3 serve.py --api-key {s['title_key']} --password {s['title_pw']}"
                                .encode()),
        # exec -a with one string: argv[0] is all there is
        "one_string": children.start([f"python3 train.py --token {s['one_string']} --epochs 3".encode()],
                                     comm=b"python3"),
        "mysql": children.start([b"mysqldump", f"-p{s['mysql_attached']}".encode(), b"shop"], comm=b"mysqldump"),
        "sshpass": children.start([b"sshpass", b"-p", s["sshpass"].encode(), b"rsync", b"a", b"b"],
                                  comm=b"sshpass"),
        "jvm": children.start([b"java", f"-Dpassword={s['jvm']}".encode(),
                               f"-Dspring.datasource.password={s['jvm_dotted']}".encode(), b"-jar", b"app.jar"],
                              comm=b"java"),
        "curl": children.start([b"curl", b"-H", f"Authorization: Bearer {s['bearer']}".encode(),
                                f"https://bob:{s['url_pw']}@example.com/x?api_key={s['url_query']}&q=1".encode()],
                               comm=b"curl"),
        "env": children.start([b"env", f"FOO_TOKEN={s['env_like']}".encode(), b"python3", b"infer.py"],
                              comm=b"env"),
    }
    on_gpu(fake_nvml, list(pids.values()))
    db = tmp_path / "gpm.db"

    sample = ok(run_gpm("--db", db, "sample", "--json", env=fake_nvml.env()))
    ps_json = ok(run_gpm("ps", "--json", env=fake_nvml.env()))
    outputs = [sample, ps_json, ok(run_gpm("ps", env=fake_nvml.env())), db_dump(db)]
    outputs += [ok(run_gpm("ps", "--explain", pid, env=fake_nvml.env())) for pid in pids.values()]
    for secret in s.values():
        for out in outputs:
            assert secret not in out

    seen = {o["pid"]: o for o in map(json.loads, ps_json.splitlines())}
    assert seen[pids["vllm"]]["cmdline"] == ["vllm", "serve", "--api-key", "***", "meta-llama/Llama-3-8B"]
    assert seen[pids["vllm"]]["label"] == "meta-llama/Llama-3-8B"
    assert seen[pids["title"]]["cmdline"] == ["python3 serve.py --api-key *** --password ***"]
    assert seen[pids["title"]]["label"] == "serve.py"
    assert seen[pids["one_string"]]["cmdline"] == ["python3 train.py --token *** --epochs 3"]
    assert seen[pids["mysql"]]["cmdline"] == ["mysqldump", "-p***", "shop"]
    assert seen[pids["sshpass"]]["cmdline"] == ["sshpass", "-p", "***", "rsync", "a", "b"]
    assert seen[pids["jvm"]]["cmdline"] == ["java", "-Dpassword=***", "-Dspring.datasource.password=***",
                                            "-jar", "app.jar"]
    assert seen[pids["curl"]]["cmdline"] == ["curl", "-H", "Authorization: Bearer ***",
                                             "https://bob:***@example.com/x?api_key=***&q=1"]
    assert seen[pids["env"]]["cmdline"] == ["env", "FOO_TOKEN=***", "python3", "infer.py"]


def test_gpm_classify_labels_no_secret(tmp_path):
    line = {"name": "vllm", "cmdline": ["vllm", "serve", "--api-key", SECRETS["vllm"], "meta-llama/Llama-3-8B"]}
    out = json.loads(ok(run_gpm("classify", input=json.dumps(line) + "\n")))
    assert (out["category"], out["label"]) == ("llm_inference", "meta-llama/Llama-3-8B")


# ------------------------------------------------------------ #12.10 terminal injection

OSC_TITLE = b"\x1b]0;pwned\x07"
CLEAR = b"\x1b[2J\nrow|x"


def _no_raw_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text


def test_escape_sequences_and_newlines_are_shown_not_obeyed(fake_nvml, children, tmp_path):
    osc = children.start([b"pwn", b"--x", "\u202eevil".encode(), b"two\nlines"], comm=OSC_TITLE)
    clear = children.start([b"clr"], comm=CLEAR)
    on_gpu(fake_nvml, [osc, clear])

    table = ok(run_gpm("ps", env=fake_nvml.env()))
    _no_raw_controls(table)
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, one row per process
    assert "\\x1b]0;pwned\\x07" in table and "\\x1b[2J\\nrow|x" in table

    explain = ok(run_gpm("ps", "--explain", osc, env=fake_nvml.env()))
    _no_raw_controls(explain)
    assert "\\u202eevil two\\nlines" in explain
    assert "\\x1b]0;pwned\\x07" in explain

    # JSON stays exact
    seen = {o["pid"]: o for o in map(json.loads, ok(run_gpm("ps", "--json", env=fake_nvml.env())).splitlines())}
    assert seen[osc]["name"] == OSC_TITLE.decode()
    assert seen[osc]["cmdline"] == ["pwn", "--x", "\u202eevil", "two\nlines"]

    db = tmp_path / "gpm.db"
    ok(run_gpm("--db", db, "sample", "-n", "2", "-i", "0.2", env=fake_nvml.env()))
    report = ok(run_gpm("--db", db, "report", "--since", "1h", "--section", "processes", env=fake_nvml.env()))
    _no_raw_controls(report)
    assert "\\x1b]0;pwned\\x07" in report
    md = tmp_path / "week.md"
    ok(run_gpm("--db", db, "report", "--since", "1h", "--section", "processes", "--format", "markdown",
               "-o", md, env=fake_nvml.env()))
    text = md.read_text()
    _no_raw_controls(text)
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 2 * 2  # header, rule; two processes ranked by GPU time and by energy
    assert all(line.count("|") - line.count("\\|") == 8 for line in rows)
    assert "\\x1b[2J\\nrow\\|x" in text


def test_a_hostile_file_name_in_an_error_is_shown_not_obeyed(tmp_path):
    bad = tmp_path / "in\x1b[2J\n.jsonl"
    bad.write_text("not json\n")
    result = run_gpm("classify", "-i", bad)
    assert result.returncode == 1
    assert "\x1b" not in result.stderr and result.stderr.count("\n") == 1
    assert "in\\x1b[2J\\n.jsonl:1: not valid JSON" in result.stderr


# ------------------------------------------------------------ visible()

@given(st.text())
def test_visible_leaves_no_control_character(text):
    shown = visible(text)
    assert shown.isprintable()
    assert "|" not in md_cell(text).replace("\\|", "")


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_visible_keeps_printable_ascii(text):
    assert visible(text) == text


def test_visible_spells_out_what_it_hides():
    assert visible("a\x1b[2J\n\t\x7f\x85\u202e\u200b\udcff b") == "a\\x1b[2J\\n\\t\\x7f\\x85\\u202e\\u200b\\xff b"
    assert os_text(b"ok \xe2\x82\xac bad\xff") == "ok \u20ac bad\\xff"


def test_a_value_sqlite_refuses_costs_that_process_its_details_only(tmp_path):
    """A surrogate (what os.readlink gives for an undecodable byte) in one process's
    details; before #12.2 the whole sample's transaction failed on it."""
    from gpm.config import load_config
    from gpm.gpu.sample import GpuProcess, GpuSample, ProcessDetails
    from gpm.sampling import Sampler
    from gpm.store.db import open_db

    def process(pid: int, exe: str) -> GpuProcess:
        return GpuProcess(pid, used_memory_bytes=MiB, name=f"p{pid}", category="general_compute", label=f"p{pid}",
                          reason="test", details=ProcessDetails(user="me", exe=exe, start_time_ms=1))

    conn = open_db(tmp_path / "gpm.db")
    sample = GpuSample(ts_ms=1_700_000_000_000, index=0, source="nvml", uuid="GPU-1", name="Fake",
                       processes=[process(1, "/bin/bad\udcff"), process(2, "/bin/good")])
    Sampler(load_config(), conn=conn, host="box").store([sample])
    assert conn.execute("SELECT COUNT(*) FROM gpu_metrics").fetchone() == (1,)
    assert conn.execute("SELECT pid, exe, reason FROM process_events ORDER BY pid").fetchall() == [
        (1, None, "details not storable"), (2, "/bin/good", "test")]
    conn.close()


# ------------------------------------------------------------ #12 a command line made to be slow

@pytest.mark.parametrize("arg", [b"A" * 100_000, b"a=" * 50_000, b"a-" * 50_000, b"a: " * 33_000],
                         ids=["letters", "pairs", "dashes", "colons"])
def test_a_command_line_built_to_stall_the_redaction_does_not(fake_nvml, children, tmp_path, arg):
    """The secret masking once rescanned a run from every position: one 100 kB argument
    held `gpm sample` for five minutes (a trial, as any local user could). Now it is
    linear: the sample is stored and the secret before the long argument still masked."""
    pid = children.start([b"python3", b"train.py", b"--password", b"hunter2xyz", arg], comm=b"python3")
    on_gpu(fake_nvml, [pid])
    db = tmp_path / "gpm.db"
    ok(run_gpm("--db", db, "sample", env=fake_nvml.env(), timeout=60))
    dump = db_dump(db)
    assert "hunter2xyz" not in dump and "--password" in dump
