"""``gpm daemon``: sampling and every enabled job in one long-lived process."""

from __future__ import annotations

import click

from gpm.cli.context import AppContext, pass_app
from gpm.daemon.core import Daemon
from gpm.daemon.logs import FORMATS, LEVELS, apply_logging, setup_logging
from gpm.locks import exclusive_lock, lock_path


@click.command(short_help='Run sampling and every enabled job in one process.')
@click.option("-i", "--interval", type=click.FloatRange(min=0.1, max=3600),
              help="Seconds between GPU samples (default: [service] poll_interval_secs).")
@click.option("--log-level", type=click.Choice(list(LEVELS)),
              help="Least severe events logged (default: [daemon] log_level, info).")
@click.option("--log-format", type=click.Choice(FORMATS),
              help="Log lines as text or JSON objects (default: [daemon] log_format, text).")
@pass_app
def daemon(app: AppContext, interval: float | None, log_level: str | None, log_format: str | None) -> None:
    """Run sampling and every enabled job in one process, until SIGTERM.

    Samples every GPU each [service] poll_interval_secs with process
    classification, and, when enabled in the configuration, watches Ollama
    and runs the recording proxy ([ollama] enabled, enable_proxy), archives
    old rows to Parquet ([storage] enable_parquet_archival, every
    archive_interval_secs), serves Prometheus metrics ([telemetry]
    enable_prometheus) and exports OTLP ([telemetry] enable_opentelemetry).
    Each job has its own thread and schedule: a slow job never delays
    sampling, and a failing one is logged and retried with back-off.

    Without a GPU (driver not loaded yet) it logs why once, keeps the other
    jobs running and retries every [gpu] nvml_retry_secs.

    SIGTERM or SIGINT: finish the write in hand, stop, exit 0. SIGHUP: re-read
    the configuration and apply it (intervals, jobs on or off); a bad file is
    logged and the running configuration kept. Under systemd it speaks the
    notify protocol (Type=notify, WatchdogSec) and logs one line per event to
    the journal; `gpm install systemd` writes a suitable unit.

    \b
    One daemon per database: a second `gpm daemon` on the same database exits
    75 at once, naming the running one (`gpm sample` from cron may still run
    beside it).

    \b
    Exit codes: 0 stopped by a signal; 1 an error at start-up (the database
    cannot be opened, ...); 2 usage or configuration error; 75 another
    `gpm daemon` runs on this database.
    """
    overrides = {
        "service.poll_interval_secs": (interval, "--interval"),
        "daemon.log_level": (log_level, "--log-level"),
        "daemon.log_format": (log_format, "--log-format"),
    }
    first = app.config(overrides)
    handler = setup_logging(first["daemon.log_level"], first["daemon.log_format"])

    def load():
        fresh = AppContext(config_path=app.config_path, db_path=app.db_path, db_source=app.db_source)
        return fresh.config(overrides)

    def on_config(cfg) -> None:
        apply_logging(handler, cfg["daemon.log_level"], cfg["daemon.log_format"])

    # The database first, so a broken one is named as such rather than as its lock
    # file; then one daemon per database: a second would sample every GPU twice (#12).
    app.open_db().close()
    with exclusive_lock(lock_path(first.db_path, "daemon"), job="daemon", wait_secs=0):
        code = Daemon(load, on_config=on_config).run()
    raise SystemExit(code)
