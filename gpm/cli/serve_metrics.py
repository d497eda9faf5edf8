"""``gpm serve-metrics``: Prometheus /metrics (and optionally OTLP push), standalone."""

from __future__ import annotations

import functools
import logging

import click

from gpm.addresses import parse_listen
from gpm.cli.context import AppContext, pass_app
from gpm.cli.options import otlp_options, otlp_overrides
from gpm.errors import GpmError
from gpm.sampling import Sampler
from gpm.repeat import Stopper
from gpm.telemetry.alerts_feed import DbAlertFeed
from gpm.telemetry.llm import DbRequestFeed, fetch_loaded_models
from gpm.telemetry.otlp import OtlpMetrics
from gpm.telemetry.server import MetricsServer
from gpm.telemetry.state import MetricsState, ScrapeRefresher

log = logging.getLogger("gpm.telemetry")


def _note(app: AppContext, message: str) -> None:
    if not app.quiet:
        click.echo(f"gpm: {message}", err=True)


@click.command("serve-metrics", short_help='Serve Prometheus /metrics (and push OTLP).')
@click.option("--listen", metavar="ADDR",
              help="HOST:PORT to serve /metrics on (default: [telemetry] metrics_listen, "
                   "127.0.0.1:10435). Use 0.0.0.0:PORT to accept scrapes from other machines.")
@click.option("--per-process/--no-per-process", default=None,
              help="Also export one series per GPU process (pid, name, category labels); "
                   "default: [telemetry] per_process (off).")
@click.option("--cache-secs", type=click.FloatRange(min=0, max=3600),
              help="Reuse a GPU sample younger than this for further scrapes "
                   "(default: [telemetry] scrape_cache_secs, 1).")
@click.option("--ollama/--no-ollama", "poll_ollama", default=None,
              help="Export the models Ollama has loaded (GET /api/ps at [ollama] api_url); "
                   "default: [ollama] enabled.")
@otlp_options("Also push metrics over OTLP every export interval")
@click.option("--export-interval", type=click.FloatRange(min=1, max=86400), metavar="SECS",
              help="Seconds between OTLP exports (default: [telemetry] export_interval_secs, 10).")
@click.option("--no-prometheus", is_flag=True,
              help="Do not serve /metrics; only push OTLP (needs --otlp).")
@pass_app
def serve_metrics(app: AppContext, listen, per_process, cache_secs, poll_ollama, otlp, otlp_endpoint,
                  otlp_protocol, export_interval, no_prometheus) -> None:
    """Serve GPU, workload and LLM metrics for Prometheus at /metrics.

    GPUs are read at scrape time (NVML, or nvidia-smi as a fallback), at most
    once per --cache-secs however many servers scrape. Processes are summed
    per category (gpm_category_*); LLM request totals come from the recording
    proxy's llm_requests table, gpm_alerts_firing from gpm's alerts table;
    gpm_collector_success{collector} says which sources worked. `/` links to /metrics; other paths are 404.

    With --otlp the same state is also pushed to an OpenTelemetry receiver
    with semantic-convention names (hw.gpu.*, hw.power, hw.energy,
    gen_ai.*); an unreachable receiver is logged once and retried with
    back-off, never stopping /metrics.

    Runs until Ctrl-C or SIGTERM.

    \b
    Exit codes: 0 stopped by a signal; 1 cannot listen on ADDR or another
    error; 2 usage or config error.
    """

    cfg = app.config({
        "telemetry.metrics_listen": (listen, "--listen"),
        "telemetry.per_process": (per_process, "--per-process"),
        "telemetry.scrape_cache_secs": (cache_secs, "--cache-secs"),
        "ollama.enabled": (poll_ollama, "--ollama"),
        **otlp_overrides(otlp, otlp_endpoint, otlp_protocol),
        "telemetry.export_interval_secs": (export_interval, "--export-interval"),
    })
    use_otlp = cfg["telemetry.enable_opentelemetry"]
    if no_prometheus and not use_otlp:
        raise GpmError("--no-prometheus needs --otlp (or [telemetry] enable_opentelemetry): "
                       "nothing would be exported", exit_code=2)

    sampler = Sampler(cfg)
    state = MetricsState(cfg.hostname)
    poll_llm = DbRequestFeed(cfg.db_path, state.llm).poll  # the database may appear later
    ollama = None
    if cfg["ollama.enabled"]:
        ollama = functools.partial(fetch_loaded_models, cfg["ollama.api_url"], cfg["ollama.timeout_secs"])
    state.refresher = ScrapeRefresher(
        sampler, cache_secs=cfg["telemetry.scrape_cache_secs"], retry_secs=cfg["gpu.nvml_retry_secs"],
        poll_ollama=ollama, poll_llm=poll_llm, poll_alerts=DbAlertFeed(cfg.db_path, cfg.hostname).poll)

    server = exporter = None
    try:
        if not no_prometheus:
            host, port = parse_listen(cfg["telemetry.metrics_listen"])
            server = MetricsServer(state, host, port, per_process=cfg["telemetry.per_process"]).start()
            _note(app, f"serving metrics on {server.url}")
        if use_otlp:
            exporter = OtlpMetrics(state, endpoint=cfg["telemetry.otlp_endpoint"],
                                   protocol=cfg["telemetry.otlp_protocol"],
                                   interval_secs=cfg["telemetry.export_interval_secs"]).start()
            _note(app, f"pushing OTLP metrics to {cfg['telemetry.otlp_endpoint']} "
                          f"every {cfg['telemetry.export_interval_secs']:g} s")
        with Stopper() as stopper:
            while not stopper.sleep(1.0):
                pass
    finally:
        if server is not None:
            server.stop()
        if exporter is not None:
            exporter.stop()
            c = exporter.counter
            if c.failures:
                app.warn(f"OTLP: {c.successes} exports succeeded, {c.failures} failed, "
                         f"{c.skipped} skipped during back-off")
        sampler.close()
