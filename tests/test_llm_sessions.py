"""Loaded-model sessions and Ollama's ups and downs, polled like cron would."""

from __future__ import annotations

import json
import time

import pytest

from gpm.llm.client import OllamaClient, parse_ps, parse_time_ms
from gpm.llm import sessions
from gpm.llm.sessions import OllamaWatcher
from gpm.store.db import open_db
from gpm.store.llm import SessionLog, open_sessions
from tests.conftest import FIXTURES
from tests.fakes.ollama_server import PS_MODEL, FakeOllama, free_port

OLLAMA = FIXTURES / "ollama"


@pytest.fixture
def conn(tmp_path):
    c = open_db(tmp_path / "gpm.db")
    yield c
    c.close()


@pytest.fixture
def fake():
    with FakeOllama() as server:
        yield server


def poll(conn, url, ts_ms):
    """One cron run: a fresh session log each time, as a new process would have."""
    return SessionLog(conn, url, "box")(sessions.poll(OllamaClient(url, 2.0), ts_ms))


@pytest.mark.skipif(not OLLAMA.is_dir(), reason="../shared/fixtures/ollama not present")
def test_parse_ps_on_the_docs_examples():
    new = parse_ps(json.loads((OLLAMA / "openapi.api-ps.example.json").read_text()))[0]
    assert (new.model, new.size_bytes, new.size_vram_bytes, new.context_length) == (
        "gemma4", 6591830464, 5333539264, 4096)
    assert (new.quantization, new.parameter_size, new.family) == ("Q4_K_M", "8.0B", "gemma4")
    assert new.expires_at_ms == parse_time_ms("2025-10-17T23:47:07.93355Z")
    old = parse_ps(json.loads((OLLAMA / "api-ps.response.json").read_text()))[0]
    assert old.model == "mistral:latest" and old.context_length is None  # older servers omit it


def test_go_times_with_nanoseconds_and_zero_time():
    assert parse_time_ms("2024-06-04T14:38:31.83753-07:00") == 1717537111837
    assert parse_time_ms("2023-08-04T08:52:19.385406455-07:00") == 1691164339385
    assert parse_time_ms("0001-01-01T00:00:00Z") is None
    assert parse_time_ms("garbage") is None


def test_model_appears_stays_and_goes(conn, fake):
    fake.loaded = []
    assert poll(conn, fake.url, 1000).events == ["up"]
    fake.loaded = [dict(PS_MODEL)]
    first = poll(conn, fake.url, 2000)
    assert first.opened == ["gemma4"] and first.events == []
    again = poll(conn, fake.url, 3000)  # the next cron run: same session, no duplicate
    assert again.opened == [] and again.closed == []
    (session,) = open_sessions(conn)
    assert session["loaded_at_ms"] == 2000 and session["last_seen_ms"] == 3000
    assert session["size_bytes"] == 6591830464 and session["size_vram_bytes"] == 5333539264
    assert session["context_length"] == 4096 and session["quantization"] == "Q4_K_M"
    assert session["parameter_size"] == "8.0B" and session["digest"] == PS_MODEL["digest"]
    fake.loaded = []
    assert poll(conn, fake.url, 4000).closed == ["gemma4"]
    assert open_sessions(conn) == []
    rows = conn.execute("SELECT loaded_at_ms, unloaded_at_ms FROM llm_sessions").fetchall()
    assert rows == [(2000, 4000)]


def test_reload_with_a_larger_context_is_a_new_session(conn, fake):
    poll(conn, fake.url, 1000)
    fake.loaded = [dict(PS_MODEL, context_length=8192, size=7000000000)]
    result = poll(conn, fake.url, 2000)
    assert result.closed == ["gemma4"] and result.opened == ["gemma4"]
    assert [s["context_length"] for s in open_sessions(conn)] == [8192]
    assert conn.execute("SELECT COUNT(*) FROM llm_sessions").fetchone()[0] == 2


def test_down_and_up_are_events_once_each_and_close_sessions(conn, fake):
    url = fake.url
    poll(conn, url, 1000)
    fake.stop()
    down = poll(conn, url, 2000)
    assert not down.up and down.events == ["down"] and "connection refused" in down.error
    assert down.closed == ["gemma4"]
    assert poll(conn, url, 3000).events == []  # still down: nothing new
    with FakeOllama(port=int(url.rsplit(":", 1)[1]), version="0.13.0") as back:
        up = poll(conn, back.url, 4000)
    assert up.events == ["up"] and up.opened == ["gemma4"]
    events = conn.execute("SELECT ts_ms, kind, version FROM llm_events ORDER BY id").fetchall()
    assert events == [(1000, "up", "0.12.6"), (2000, "down", None), (4000, "up", "0.13.0")]


def test_version_change_without_downtime(conn, fake):
    poll(conn, fake.url, 1000)
    fake.version = "0.14.0"
    assert poll(conn, fake.url, 2000).events == ["version"]
    assert poll(conn, fake.url, 3000).events == []


def test_never_reachable_is_one_down_event(conn):
    url = f"http://127.0.0.1:{free_port()}"
    assert poll(conn, url, 1000).events == ["down"]
    assert poll(conn, url, 2000).events == []


def test_not_ollama_answers_count_as_down(conn):
    with FakeOllama() as other:
        other.loaded = "nonsense"  # /api/ps answers {"models": "nonsense"}
        result = poll(conn, other.url, 1000)
    assert not result.up and "no 'models' list" in result.error


def test_watcher_thread_for_the_daemon(tmp_path, fake):
    conn = open_db(tmp_path / "w.db")
    seen = []
    watcher = OllamaWatcher(fake.url, SessionLog(conn, fake.url, "box"), interval_secs=0.5,
                            on_poll=seen.append).start()
    try:
        for _ in range(100):
            if seen:
                break
            time.sleep(0.02)
    finally:
        watcher.stop()
    assert seen and seen[0].up and seen[0].opened == ["gemma4"]
    assert len(open_sessions(conn, fake.url)) == 1
    conn.close()
