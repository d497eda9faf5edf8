"""``gpm ollama-watch``: Ollama's loaded models, and a recording proxy in front of it."""

from __future__ import annotations

import json
import sys
import threading

import click

from gpm.addresses import parse_listen
from gpm.alerts.conditions import ollama_observation
from gpm.alerts.engine import AlertEngine
from gpm.alerts.dispatch import Dispatcher
from gpm.cli.context import AppContext, pass_app
from gpm.cli.options import otlp_options, otlp_overrides
from gpm.errors import GpmError
from gpm.humanize import Column, cut, display_width, fmt_bytes, fmt_opt, table, terminal_size, visible
from gpm.llm.client import OllamaClient
from gpm.llm.proxy import RecordingProxy
from gpm.llm.sessions import poll
from gpm.repeat import Stopper, ticks
from gpm.store.llm import RequestLog, SessionLog, open_sessions
from gpm.telemetry.proxy_hooks import ProxyHooks
from gpm.telemetry.tracing import ProxyTracer


# The model's name gives way before its size or where it runs (#13.1).
_MODEL_COLUMNS = [Column("Model", min_width=12), Column("Size", right=True), Column("Processor"),
                  Column("Context", right=True), Column("Quant"), Column("Params")]


def _models_table(sessions: list[dict], width: int) -> str:
    rows = []
    for s in sessions:
        size, vram = s["size_bytes"], s["size_vram_bytes"]
        gpu = f"{100 * vram / size:.0f}% GPU" if size and vram is not None else "-"
        rows.append([s["model"], fmt_bytes(size), gpu, fmt_opt(s["context_length"], "{}"),
                     s["quantization"] or "-", s["parameter_size"] or "-"])
    return table(_MODEL_COLUMNS, rows, width, give_way=(0, 5, 4))


def _request_line(row: dict, width: int) -> str:
    """One proxied request (``/api/chat llama3.2 200 26 in 8 out ttft 0.051s 98.2 tok/s 0.132s stop``);
    the endpoint and model are cut so the numbers fit the terminal."""
    def num(value, fmt):
        return "-" if value is None else fmt.format(value)

    state = visible(row["error"] or row["done_reason"] or "ok")
    numbers = (f" {row['status']} {num(row['prompt_tokens'], '{}')} in {num(row['completion_tokens'], '{}')} out"
               f" ttft {num(row['ttft_seconds'], '{:.3f}s')} {num(row['tokens_per_second'], '{:.1f}')} tok/s"
               f" {row['duration_seconds']:.3f}s {state}")
    endpoint, model = visible(row["endpoint"]), visible(row["model"] or "?")
    room = width - display_width(numbers) - 1
    if display_width(endpoint) + display_width(model) > room:
        model = cut(model, max(8, room - min(display_width(endpoint), room // 2)))
        endpoint = cut(endpoint, max(4, room - display_width(model)))
    return cut(f"{endpoint} {model}{numbers}", width)


@click.command("ollama-watch", short_help="Record Ollama's loaded models and, via a proxy, its requests.")
@click.option("-f", "--follow", is_flag=True,
              help="Keep polling every [ollama] poll_interval_secs until Ctrl-C or SIGTERM "
                   "(default: poll once and exit, for cron).")
@click.option("-i", "--interval", type=click.FloatRange(min=0.5, max=3600),
              help="Seconds between polls of /api/ps (default: [ollama] poll_interval_secs, 5).")
@click.option("--api-url", metavar="URL",
              help="The Ollama server to watch and proxy to (default: [ollama] api_url, "
                   "http://127.0.0.1:11434).")
@click.option("--proxy", "proxy_listen", is_flag=False, flag_value="", default=None, metavar="[ADDR]",
              help="Also serve the recording proxy on HOST:PORT (default: [ollama] proxy_listen, "
                   "127.0.0.1:11435) until Ctrl-C or SIGTERM; point OLLAMA_HOST at it.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON Lines: each finished proxied request (the llm_requests columns); "
                   "without --proxy, each loaded model per poll (the llm_sessions columns).")
@otlp_options("With --proxy, export one OpenTelemetry span per recorded request over OTLP")
@pass_app
def ollama_watch(app: AppContext, follow: bool, interval: float | None, api_url: str | None,
                 proxy_listen: str | None, as_json: bool, otlp: bool | None, otlp_endpoint: str | None,
                 otlp_protocol: str | None) -> None:
    """Record Ollama's loaded models and, with --proxy, every request's tokens and timing.

    Polls GET /api/version and GET /api/ps: a model appearing opens an
    llm_sessions row, a model gone closes it; Ollama going down or coming
    back is an llm_events row and a warning, never a failure. Runs are
    idempotent, so cron can run it every minute. With [ollama] enabled,
    Ollama down is also the ollama_down alert (docs/alerts.md).

    With --proxy, serves a transparent reverse proxy to Ollama: every path,
    body and header is forwarded and streams pass through chunk by chunk.
    Each request to /api/generate, /api/chat, /api/embed, /api/embeddings,
    /v1/chat/completions, /v1/completions and /v1/embeddings becomes an
    llm_requests row (tokens, TTFT, TPOT, tokens/s, Ollama's durations).
    Prompts and responses are stored only with [ollama] store_prompts = true.
    Ctrl-C or SIGTERM records requests in flight as interrupted and exits 0.

    With --proxy and --otlp (or [telemetry] enable_opentelemetry), each of
    those requests is also a GenAI span ("chat llama3.2": model, token
    counts, time to first token, error status) sent to --otlp-endpoint. A
    request carrying a W3C traceparent header gets its span in the caller's
    trace, and Ollama receives a traceparent naming gpm's span as parent.

    \b
    Exit codes: 0 ok (also when Ollama is down: that is recorded);
    1 the proxy cannot listen, or another error; 2 usage or config error.
    """

    if otlp and proxy_listen is None:
        raise GpmError("--otlp needs --proxy: spans are made of proxied requests", exit_code=2)
    cfg = app.config({
        "ollama.poll_interval_secs": (interval, "--interval"),
        "ollama.api_url": (api_url, "--api-url"),
        "ollama.proxy_listen": (proxy_listen or None, "--proxy"),
        **otlp_overrides(otlp, otlp_endpoint, otlp_protocol),
    })
    api = cfg["ollama.api_url"]
    client = OllamaClient(api, cfg["ollama.timeout_secs"])
    out_lock = threading.Lock()
    tty = sys.stdout.isatty()

    def emit(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    conn = app.open_db()
    save = SessionLog(conn, api, cfg.hostname)
    alerts = AlertEngine.from_config(cfg)
    watch_down = cfg["ollama.enabled"] and alerts.enabled("ollama_down")
    proxy = proxy_conn = tracer = None
    dispatcher = Dispatcher(cfg) if watch_down else None
    try:
        if proxy_listen is not None:
            if cfg["telemetry.enable_opentelemetry"]:
                tracer = _start_tracer(app, cfg)
            proxy, proxy_conn = _start_proxy(app, cfg, parse_listen(cfg["ollama.proxy_listen"]), as_json,
                                             tty, emit, tracer)
        with Stopper() as stopper:
            count = None if (follow or proxy is not None) else 1
            for _ in ticks(cfg["ollama.poll_interval_secs"], count, stopper):
                result = save(poll(client))
                if watch_down:  # the ollama_down alert (#15), as the daemon's watcher does
                    alerts.run(conn, cfg.hostname, [ollama_observation(result.up, api, result.error)],
                               result.ts_ms, [dispatcher])
                if not result.up and (result.events or (tty and not as_json)):
                    app.warn(f"Ollama is down: {result.error}")
                elif "up" in result.events and count is None and not app.quiet:
                    click.echo(f"gpm: Ollama at {api} is up (version {result.version})", err=True)
                if app.quiet or not result.up or proxy is not None:
                    continue
                sessions = open_sessions(conn, api)
                if as_json:
                    for s in sessions:
                        emit(json.dumps(s))
                elif tty:
                    emit(_models_table(sessions, terminal_size()[0]) if sessions else "no model loaded")
    finally:
        if proxy is not None:
            proxy.stop()  # ends the spans of requests still in flight, as interrupted
        if tracer is not None:
            tracer.stop()  # exports what is left
            c = tracer.counter
            if c.failures:
                app.warn(f"OTLP: {c.successes} span exports succeeded, {c.failures} failed, "
                         f"{c.skipped} skipped during back-off")
        if proxy_conn is not None:
            proxy_conn.close()
        if dispatcher is not None:
            dispatcher.close()  # a cron run's hook and webhook still go out (bounded)
        conn.close()


def _start_tracer(app: AppContext, cfg):
    tracer = ProxyTracer(cfg.hostname, endpoint=cfg["telemetry.otlp_endpoint"],
                         protocol=cfg["telemetry.otlp_protocol"]).start()
    if not app.quiet:
        click.echo(f"gpm: exporting a span per proxied request to {cfg['telemetry.otlp_endpoint']}", err=True)
    return tracer


def _start_proxy(app: AppContext, cfg, listen: tuple[str, int], as_json: bool, tty: bool, emit, tracer):
    def saved(row: dict) -> None:
        if app.quiet:
            return
        if as_json:
            emit(json.dumps(row))
        elif tty:
            emit(_request_line(row, terminal_size()[0]))

    hooks = None
    if tracer is not None:
        hooks = ProxyHooks(tracer=tracer, upstream_url=cfg["ollama.api_url"])
    proxy_conn = app.open_db()
    try:
        proxy = RecordingProxy(listen, cfg["ollama.api_url"], sink=RequestLog(proxy_conn, saved),
                               host=cfg.hostname, store_prompts=cfg["ollama.store_prompts"], hooks=hooks)
    except OSError as err:
        proxy_conn.close()
        raise GpmError(f"cannot listen on {listen[0]}:{listen[1]} for the Ollama proxy: "
                       f"{err.strerror or err}") from None
    proxy.start()
    if not app.quiet:
        click.echo(f"gpm: recording proxy on {proxy.url} -> {cfg['ollama.api_url']} "
                   f"(OLLAMA_HOST={proxy.url}; Ctrl-C to stop)", err=True)
    return proxy, proxy_conn
