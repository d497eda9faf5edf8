"""What the recording proxy costs: TTFT added, and streaming throughput, against the fake Ollama direct.

    python tests/benchmarks/bench_ollama_proxy.py [--requests 300] [--streams 16] [--tokens 200]

The fake Ollama (tests/fakes/ollama_server.py) and the proxy (`gpm ollama-watch
--proxy`, recording into a temporary database) run as separate processes, as
they would for real; this process is the client (plain http.client, one
keep-alive connection per stream). Targets: under 2 ms median TTFT added, and
at least 95 % of direct throughput with 16 concurrent streams.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.fakes.ollama_server import free_port  # noqa: E402


def start_fake(first_token_delay: float, token_interval: float, tokens: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests/fakes/ollama_server.py"), "--first-token-delay", str(first_token_delay),
         "--token-interval", str(token_interval), "--tokens", str(tokens)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    return proc, proc.stdout.readline().strip()


def start_proxy(api_url: str, db: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "gpm", "-q", "--db", db, "ollama-watch", "--api-url", api_url,
                             "--proxy", f"127.0.0.1:{port}", "--interval", "60"], env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the proxy did not start")


def stream_once(conn: http.client.HTTPConnection, body: bytes) -> tuple[float, int]:
    """One streamed /api/generate: (seconds to the first token, tokens received)."""
    start = time.perf_counter()
    conn.request("POST", "/api/generate", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    first = None
    tokens = 0
    buffer = b""
    while True:
        piece = resp.read1(65536)
        if not piece:
            break
        buffer += piece
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line and json.loads(line).get("response"):
                tokens += 1
                if first is None:
                    first = time.perf_counter() - start
    return first or 0.0, tokens


def ttft_series(addr: str, n: int) -> list[float]:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))
    body = json.dumps({"model": "bench", "prompt": "x", "options": {"num_predict": 2}}).encode()
    for _ in range(20):  # warm up
        stream_once(conn, body)
    out = [stream_once(conn, body)[0] for _ in range(n)]
    conn.close()
    return out


def throughput(addr: str, streams: int, tokens: int) -> float:
    """Tokens per second received over ``streams`` concurrent streams (3 streams each, back to back)."""
    host, port = addr.rsplit(":", 1)
    body = json.dumps({"model": "bench", "prompt": "x", "options": {"num_predict": tokens}}).encode()
    counts = [0] * streams
    barrier = threading.Barrier(streams + 1)

    def run(i):
        conn = http.client.HTTPConnection(host, int(port))
        barrier.wait()
        for _ in range(3):
            counts[i] += stream_once(conn, body)[1]
        conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def p99(values: list[float]) -> float:
    return sorted(values)[max(int(len(values) * 0.99) - 1, 0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="streams per TTFT series")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams for throughput")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per stream for throughput")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        fake, url = start_fake(0.005, 0.001, 2)
        proxy, addr = start_proxy(url, db)
        try:
            direct_addr = url.removeprefix("http://")
            direct = ttft_series(direct_addr, args.requests)
            proxied = ttft_series(addr, args.requests)
            added_median = (statistics.median(proxied) - statistics.median(direct)) * 1000
            added_p99 = (p99(proxied) - p99(direct)) * 1000
            print(f"TTFT direct   median {statistics.median(direct) * 1000:7.2f} ms  p99 {p99(direct) * 1000:7.2f} ms")
            print(f"TTFT proxied  median {statistics.median(proxied) * 1000:7.2f} ms  p99 {p99(proxied) * 1000:7.2f} ms")
            print(f"TTFT added    median {added_median:7.2f} ms  p99 {added_p99:7.2f} ms  "
                  f"(target: median < 2 ms) {'OK' if added_median < 2 else 'MISSED'}")
        finally:
            proxy.terminate(), fake.stdin.close()
            proxy.wait(10), fake.wait(10)
        for interval, label in ((0.005, "200 tok/s per stream (a fast GPU)"), (0.0, "as fast as the fake can")):
            fake, url = start_fake(0.0, interval, args.tokens)
            proxy, addr = start_proxy(url, db)
            try:
                direct_runs, proxied_runs = [], []
                for _ in range(3):  # alternate, so that neither side gets the warm or the cold machine
                    direct_runs.append(throughput(url.removeprefix("http://"), args.streams, args.tokens))
                    proxied_runs.append(throughput(addr, args.streams, args.tokens))
                direct_tps, proxied_tps = statistics.median(direct_runs), statistics.median(proxied_runs)
            finally:
                proxy.terminate(), fake.stdin.close()
                proxy.wait(10), fake.wait(10)
            ratio = proxied_tps / direct_tps
            print(f"{args.streams} streams, {label}: direct {direct_tps:8.0f} tok/s, proxied {proxied_tps:8.0f} tok/s, "
                  f"ratio {ratio:6.1%} (target >= 95%) {'OK' if ratio >= 0.95 else 'MISSED'}")


if __name__ == "__main__":
    main()
