"""gpm's servers under hostile clients (#12.7, #12.8): real sockets on 127.0.0.1, real gpm processes.

The proxy is ``gpm ollama-watch --proxy`` in front of the fake Ollama; its
memory is read from /proc/PID/status (VmHWM, the peak). ``gpm serve-metrics``
runs on the fake NVML.
"""

from __future__ import annotations

import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import ollama
import pytest
import requests

from gpm.http_server import Limits
from gpm.llm.proxy import MAX_RECORDED_REQUEST_BYTES, RecordingProxy
from tests.conftest import gpm_env
from tests.fakes.ollama_server import FakeOllama, free_port
from tests.test_cli_serve_metrics import serving

MB = 1024 * 1024


def peak_rss_bytes(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) * 1024


def open_files_limit(n: int) -> None:
    """Raise this test process's own soft RLIMIT_NOFILE to ``n`` (it opens a thousand sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"needs {n} open files, the hard limit is {hard}")
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def ulimit_n(n: int):
    """A preexec_fn giving the child the soft RLIMIT_NOFILE of the reported case (``ulimit -n 1024``)."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return apply


@contextmanager
def proxy_process(fake, db, *args, nofile: int | None = None):
    """``gpm ollama-watch --proxy`` in the background; yields (process, proxy URL)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpm", *args, "--db", str(db), "ollama-watch", "--api-url", fake.url,
         "--interval", "0.5", "--proxy", f"127.0.0.1:{port}"],
        env=gpm_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=ulimit_n(nofile) if nofile else None,
    )
    try:
        banner = proc.stderr.readline()
        assert "recording proxy on" in banner, banner + proc.stderr.read()
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def finish(proc) -> str:
    """Stop the process; its stderr, which must hold no traceback."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    err = proc.stderr.read()
    assert "Traceback" not in err, err
    return err


def generate_ok(url: str, prompt: str = "hi") -> str:
    return ollama.Client(host=url, timeout=20).generate(model="gemma4", prompt=prompt, stream=False).response


def raw_request(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data``, half-close, return everything the server answers."""
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before reading it all
        out = b""
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            out += piece
        return out


def query(db, sql):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


# -- the proxy: bodies ------------------------------------------------------

def test_chunked_upload_far_over_the_cap_streams_in_bounded_memory(tmp_path):
    total = 400 * MB
    with FakeOllama(max_body_bytes=MB) as fake, proxy_process(fake, tmp_path / "gpm.db") as (proc, url):
        generate_ok(url)
        head = b'{"model": "gemma4", "prompt": "'

        halfway, answered = threading.Event(), threading.Event()

        def body():
            yield head
            piece = b"x" * (1 * MB)
            sent = len(head)
            while sent + len(piece) < total - 2:
                yield piece
                sent += len(piece)
                if sent >= total // 2 and not halfway.is_set():
                    halfway.set()  # the upload waits here until normal requests were answered
                    answered.wait(30)
            yield b"x" * (total - 2 - sent) + b'"}'

        answers, during = [], []
        uploader = threading.Thread(target=lambda: answers.append(
            requests.post(f"{url}/api/generate", data=body(), timeout=120)))
        uploader.start()
        assert halfway.wait(60)
        during = [generate_ok(url, "during") for _ in range(2)]  # answered while the upload is open
        answered.set()
        uploader.join(120)
        peak = peak_rss_bytes(proc.pid)
        finish(proc)
    assert [a.status_code for a in answers] == [413]  # Ollama's (the fake's) answer, relayed
    assert during == ["tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "] * 2
    assert total in fake.body_bytes  # every byte reached Ollama
    assert peak < 100 * MB, f"proxy peak RSS {peak / MB:.0f} MB"
    assert total > 10 * MAX_RECORDED_REQUEST_BYTES
    # The upload was not recorded (over the cap); the normal requests were.
    assert query(tmp_path / "gpm.db", "SELECT prompt_tokens IS NOT NULL, status FROM llm_requests "
                                      "ORDER BY id")[:1] == [(1, 200)]


MALFORMED = {
    "negative Content-Length": b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
    "non-numeric Content-Length": b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    "two Content-Lengths": b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "bad chunk size": b"POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "bad chunk size, unrecorded path": b"POST /api/pull HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                       b"2\r\n{}\r\n-1\r\n\r\n",
    "deeply nested JSON": b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"
                          + b"[" * 100000 + b"]" * 100000,
}


def test_malformed_requests_get_400_with_a_reason_and_no_traceback(tmp_path):
    with FakeOllama() as fake, proxy_process(fake, tmp_path / "gpm.db", "-v") as (proc, url):
        address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
        answers = {name: raw_request(address, data) for name, data in MALFORMED.items()}
        assert generate_ok(url) == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
        err = finish(proc)
    for name, answer in answers.items():
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 400 Bad Request", (name, answer[:200])
        assert b"Connection: close" in rest and b'"error": "gpm proxy: ' in rest, (name, answer[:300])
    assert b"Content-Length" in answers["non-numeric Content-Length"].split(b"\r\n\r\n", 1)[1]
    assert b"nested too deeply" in answers["deeply nested JSON"]
    bad_lines = [line for line in err.splitlines() if "(400)" in line]
    assert len(bad_lines) == len(MALFORMED), err
    # Nothing malformed reached Ollama but the start of the one streamed body, cut at the bad chunk.
    posts = [r[1] for r in fake.received if r[0] == "POST"]
    assert posts.count("/api/generate") == 1 and set(posts) <= {"/api/generate", "/api/pull"}


def test_a_body_that_stalls_gets_408_after_the_read_timeout():
    limits = Limits(read_timeout_secs=0.5, head_timeout_secs=0.5)
    with FakeOllama() as fake, RecordingProxy(("127.0.0.1", 0), fake.url, limits=limits) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as body_sock, \
                socket.create_connection(proxy.address, timeout=5) as head_sock:
            body_sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"m")
            head_sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            assert generate_ok(proxy.url).startswith("tok0")  # meanwhile
            body_answer = body_sock.recv(65536)
            head_answer = head_sock.recv(65536)
            elapsed = time.monotonic() - started
    assert body_answer.startswith(b"HTTP/1.1 408 ") and b"stalled" in body_answer
    assert head_answer.startswith(b"HTTP/1.1 408 ")
    assert elapsed < 4
    assert [r[1] for r in fake.received if r[0] == "POST"] == ["/api/generate"]  # only the good one


# -- the proxy: connections --------------------------------------------------

def test_a_thousand_idle_connections_under_ulimit_1024_leave_room_for_requests(tmp_path):
    open_files_limit(4096)
    db = tmp_path / "gpm.db"
    with FakeOllama() as fake, proxy_process(fake, db, nofile=1024) as (proc, url):
        generate_ok(url)
        address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
        idle = []
        try:
            for i in range(1100):
                sock = socket.create_connection(address, timeout=5)
                if i % 10 == 0:  # a slow client: a head that never ends
                    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\n")
                idle.append(sock)
            answered = [generate_ok(url, str(i)) for i in range(3)]
            time.sleep(1.2)  # two polls of Ollama by the watcher in the same process
            peak = peak_rss_bytes(proc.pid)
        finally:
            for sock in idle:
                sock.close()
        assert answered == ["tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "] * 3
        assert generate_ok(url).startswith("tok0")
        finish(proc)
    assert peak < 100 * MB, f"proxy peak RSS {peak / MB:.0f} MB"
    assert query(db, "SELECT kind FROM llm_events") == [("up",)]  # never a false "Ollama down"
    assert query(db, "SELECT COUNT(*) FROM llm_requests WHERE status = 200 AND error IS NULL") == [(5,)]


# -- serve-metrics -------------------------------------------------------------

def test_200_concurrent_scrapes_are_all_answered_in_full(fake_nvml):
    n = 200
    with serving(env=fake_nvml.env()) as (proc, url):
        reference = urllib.request.urlopen(url, timeout=10).read()
        port = int(url.split(":")[2].split("/")[0])
        start = threading.Barrier(n)

        def scrape(_):
            start.wait()
            # Under 1 s, the kernel's first SYN retransmission: a connection the listen
            # backlog dropped (it was 5) cannot make it, however fast the machine.
            with socket.create_connection(("127.0.0.1", port), timeout=0.9) as sock:
                sock.settimeout(20)
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = b""
                while piece := sock.recv(65536):
                    answer += piece
            head, _, body = answer.partition(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            return head.split(b"\r\n")[0], length, body

        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(scrape, range(n)))
    assert [status for status, _, _ in results] == [b"HTTP/1.1 200 OK"] * n
    assert all(len(body) == length and body.count(b"\n# HELP ") == reference.count(b"\n# HELP ")
               for _, length, body in results)


def test_idle_and_slow_clients_do_not_block_a_scrape(fake_nvml):
    open_files_limit(4096)
    port = free_port()
    env = fake_nvml.env()
    with serving(env=env, port=port) as (proc, url):
        pass  # only to learn it comes up; now the case of the report, under ulimit -n 1024
    proc = subprocess.Popen([sys.executable, "-m", "gpm", "serve-metrics", "--listen", f"127.0.0.1:{port}"],
                            env=gpm_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ulimit_n(1024))
    clients = []
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url.replace("/metrics", "/"), timeout=2).close()
                break
            except OSError:
                time.sleep(0.1)
        for i in range(1100):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError as err:
                pytest.fail(f"connection {i + 1} of 1100 not accepted: {err}")
            if i % 10 == 0:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            clients.append(sock)
        started = time.monotonic()
        with urllib.request.urlopen(url, timeout=10) as resp:
            status, body = resp.status, resp.read()
        elapsed = time.monotonic() - started
    finally:
        for sock in clients:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
    assert (status, rc) == (200, 0)
    assert b"gpm_gpu_" in body and elapsed < 5
    assert "Traceback" not in proc.stderr.read()
