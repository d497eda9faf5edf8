"""`gpm ollama-watch` as cron, a terminal user and a service manager run it."""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import ollama
import pytest

from gpm.llm.record import REQUEST_COLUMNS
from gpm.store.llm import SESSION_COLUMNS
from tests.conftest import gpm_env
from tests.fakes.ollama_server import FakeOllama, free_port


@pytest.fixture
def fake():
    with FakeOllama(first_token_delay=0.05, token_interval=0.01) as server:
        yield server


def query(db, sql):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def spawn(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gpm", *map(str, args)], env=gpm_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_help_documents_every_option(gpm):
    out = gpm("ollama-watch", "--help", check=True).stdout
    for option in ("--follow", "--interval", "--api-url", "--proxy", "--json", "Exit codes"):
        assert option in out
    assert "ollama-watch" in gpm("--help", check=True).stdout


def test_cron_poll_is_silent_idempotent_and_records_sessions(gpm, fake, tmp_path):
    db = tmp_path / "gpm.db"
    for _ in range(2):
        proc = gpm("--db", db, "ollama-watch", "--api-url", fake.url)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert query(db, "SELECT model, size_bytes, size_vram_bytes, context_length, unloaded_at_ms "
                     "FROM llm_sessions") == [("gemma4", 6591830464, 5333539264, 4096, None)]
    assert query(db, "SELECT kind, version FROM llm_events") == [("up", "0.12.6")]
    proc = gpm("--db", db, "ollama-watch", "--api-url", fake.url, "--json", check=True)
    (line,) = proc.stdout.splitlines()
    assert list(json.loads(line)) == list(SESSION_COLUMNS)


def test_ollama_down_is_a_warning_once_and_exit_0(gpm, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    db = tmp_path / "gpm.db"
    first = gpm("--db", db, "ollama-watch", "--api-url", url)
    assert first.returncode == 0
    assert first.stderr == f"gpm: warning: Ollama is down: {url}/api/version: connection refused\n"
    second = gpm("--db", db, "ollama-watch", "--api-url", url)
    assert (second.returncode, second.stderr) == (0, "")
    assert query(db, "SELECT kind FROM llm_events") == [("down",)]


def test_an_unknown_host_is_named_as_such(gpm, tmp_path):
    url = "http://ollama.invalid:11434"  # .invalid never resolves (RFC 6761)
    proc = gpm("--db", tmp_path / "gpm.db", "ollama-watch", "--api-url", url)
    assert proc.returncode == 0
    assert re.fullmatch(rf"gpm: warning: Ollama is down: {url}/api/version: name not resolved \(.+\)\n",
                        proc.stderr), proc.stderr


def test_proxy_variables_do_not_reroute_the_watcher(gpm, fake, tmp_path):
    """Ollama is polled straight, as the proxy reaches it: a user's HTTP_PROXY (here
    a closed port) would otherwise send the poll elsewhere (requests honours it)."""
    closed = f"http://127.0.0.1:{free_port()}"
    env = {"HTTP_PROXY": closed, "http_proxy": closed, "ALL_PROXY": closed, "NO_PROXY": "", "no_proxy": ""}
    db = tmp_path / "gpm.db"
    proc = gpm("--db", db, "ollama-watch", "--api-url", fake.url, env=env)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert query(db, "SELECT kind FROM llm_events ORDER BY id") == [("up",)]


def test_follow_stops_cleanly_on_sigterm(fake, tmp_path):
    db = tmp_path / "gpm.db"
    proc = spawn("--db", db, "ollama-watch", "--api-url", fake.url, "--follow", "--interval", "0.5", "--json")
    try:
        first = json.loads(proc.stdout.readline())
        assert first["model"] == "gemma4"
        fake.loaded = []
        time.sleep(0.7)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    assert query(db, "SELECT COUNT(*) FROM llm_sessions WHERE unloaded_at_ms IS NOT NULL") == [(1,)]


def test_proxy_prints_json_rows_and_records_interrupted_streams_on_sigterm(fake, tmp_path):
    db = tmp_path / "gpm.db"
    port = free_port()
    proc = spawn("--db", db, "ollama-watch", "--api-url", fake.url, "--proxy", f"127.0.0.1:{port}", "--json")
    try:
        banner = proc.stderr.readline()
        url = re.search(r"recording proxy on (http://\S+)", banner).group(1)
        assert url == f"http://127.0.0.1:{port}"
        client = ollama.Client(host=url)
        client.generate(model="gemma4", prompt="hi", stream=False)
        row = json.loads(proc.stdout.readline())
        assert list(row) == list(REQUEST_COLUMNS)
        assert (row["endpoint"], row["model"], row["completion_tokens"], row["stream"]) == (
            "/api/generate", "gemma4", 8, False)

        first_token = threading.Event()

        def long_stream():
            try:
                for _ in client.generate(model="gemma4", prompt="x", stream=True, options={"num_predict": 2000}):
                    first_token.set()
            except Exception:  # noqa: BLE001 - the proxy going away cuts this stream
                pass

        reader = threading.Thread(target=long_stream, daemon=True)
        reader.start()
        assert first_token.wait(5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        interrupted = json.loads(proc.stdout.readline())
        assert interrupted["error"] == "interrupted: gpm proxy stopped"
        reader.join(5)
    finally:
        proc.kill()
    assert query(db, "SELECT COUNT(*), COUNT(error) FROM llm_requests") == [(2, 1)]


def test_proxy_port_in_use_is_one_line_and_exit_1(gpm, fake, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = gpm("--db", tmp_path / "gpm.db", "ollama-watch", "--api-url", fake.url, "--proxy",
                   f"127.0.0.1:{port}")
    assert proc.returncode == 1
    assert proc.stderr == f"gpm: cannot listen on 127.0.0.1:{port} for the Ollama proxy: Address already in use\n"


def test_bad_proxy_address_is_a_usage_error(gpm, tmp_path):
    proc = gpm("--db", tmp_path / "gpm.db", "ollama-watch", "--proxy", "127.0.0.1:99999")
    assert proc.returncode == 2 and "expected HOST:PORT" in proc.stderr
