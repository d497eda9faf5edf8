"""``gpm sample``: read every GPU once (or repeatedly) and store it."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from pathlib import Path

import click

from gpm.alerts.dispatch import Dispatcher
from gpm.cli.context import AppContext, pass_app
from gpm.errors import EXIT_FAILURE, EXIT_INTERRUPTED
from gpm.gpu.sample import now_ms
from gpm.humanize import terminal_size
from gpm.outfile import check_output
from gpm.sampling import Sampler
from gpm.repeat import Stopper, ticks
from gpm.store.rollup import refresh
from gpm.telemetry.prometheus import write_textfile
from gpm.telemetry.state import MetricsState
from gpm.view import History, frame, sample_table


class _LiveView:
    """``--follow`` on a terminal: each sample redrawn in place (#13.5), the
    cursor hidden while drawing and shown again however the loop ends, the
    last frame left on screen."""

    def __init__(self, out, host: str, interval: float) -> None:
        self.out, self.host, self.interval = out, host, interval
        self.history = History()

    def __enter__(self) -> "_LiveView":
        self.out.write(HIDE_CURSOR)
        return self

    def draw(self, samples) -> None:
        self.history.add(samples)
        width, height = terminal_size()
        text = frame(samples, self.history, width, height, self.interval, self.host)
        self.out.write(HOME + CLEAR_LINE.join(text.split("\n")) + CLEAR_LINE + CLEAR_BELOW)
        self.out.flush()

    def __exit__(self, *exc) -> None:
        self.out.write(SHOW_CURSOR + "\n")
        self.out.flush()


HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K\n", "\x1b[J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def _write_textfile(path: str, sampler, samples, duration_seconds: float) -> None:
    state = MetricsState(sampler.host)
    state.publish_gpus(samples, source=sampler.reader.source, duration_seconds=duration_seconds)
    write_textfile(path, state.snapshot(), per_process=sampler.cfg["telemetry.per_process"])


def _roll_up_closed_hours(app: AppContext, conn, cfg) -> None:
    """Keep `gpm report`'s rollup current: one indexed query
    unless an hour closed since the last run (then that hour's rows, a few
    hundred under cron, are reduced). A failure here never fails the sample."""
    try:
        refresh(conn, cfg["report.busy_threshold_percent"], now_ms=now_ms(), max_hours=REDUCE_HOURS_PER_RUN)
    except sqlite3.Error as err:
        if app.verbose:
            app.warn(f"report rollup not updated ({err}); `gpm report` rolls those hours up itself")


# A backlog of unreduced hours (a database from before the rollup) is
# taken this many hours per run, so no cron run is slow.
REDUCE_HOURS_PER_RUN = 2


@click.command(short_help='Sample every GPU and store it (cron-friendly).')
@click.option("-n", "--count", type=click.IntRange(min=1),
              help="Take COUNT samples (default 1), -i seconds apart.")
@click.option("-i", "--interval", type=click.FloatRange(min=0.1, max=3600),
              help="Seconds between samples, with -n or --follow (default: [service] poll_interval_secs).")
@click.option("-f", "--follow", is_flag=True, help="Keep sampling until Ctrl-C or SIGTERM (not with -n).")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON Lines: one object per GPU per sample.")
@click.option("--no-store", is_flag=True, help="Sample without writing to the database.")
@click.option("--textfile", type=click.Path(dir_okay=False, writable=True), metavar="PATH",
              help="Also write the Prometheus exposition to PATH after each sample, atomically "
                   "(for node_exporter's textfile collector; name it *.prom).")
@pass_app
def sample(app: AppContext, count: int, interval: float | None, follow: bool,
           as_json: bool, no_store: bool, textfile: str | None) -> None:
    """Sample every GPU and store it in the database.

    Reads each GPU through NVML (nvidia-smi when NVML cannot be used) with
    the processes on it. Silent on success when stdout is not a terminal or
    with -q; a table on a terminal (with --follow, redrawn in place with a
    minute of utilization and power history); JSON Lines with --json.
    Repeats on a drift-free schedule with --count/--follow; Ctrl-C or
    SIGTERM stops after the current write.

    Each stored sample is checked against the alert rules ([alerts],
    docs/alerts.md); their state is kept in the database, so cron every
    minute fires an alert once and resolves it once. A firing alert is a
    warning line on stderr; a resolved one is logged with -v.

    \b
    Exit codes: 0 ok; 1 a GPU failed to read (the others are stored) or
    another error; 2 usage or config error; 69 no GPU backend could be opened.
    """
    count = _repetition(count, interval, follow)
    if textfile:
        check_output(Path(textfile), "--textfile")  # before sampling, not after the first sample
    cfg = app.config({"service.poll_interval_secs": (interval, "--interval")})
    conn = None if no_store else app.open_db()
    # Alert events go to the log and every configured channel (docs/alerts.md).
    dispatcher = Dispatcher(cfg) if conn is not None and cfg["alerts.enabled"] else None
    sampler = Sampler(cfg, conn=conn, alert_sinks=[dispatcher] if dispatcher else [])
    show_table = not as_json and not app.quiet and sys.stdout.isatty()
    live = _LiveView(sys.stdout, sampler.host, cfg["service.poll_interval_secs"]) \
        if show_table and follow else contextlib.nullcontext()
    reported: dict[int, str] = {}
    failed = stopped_early = False
    taken = -1
    try:
        sampler.open()
        if sampler.reader is not None and sampler.reader.source != "nvml" and cfg["gpu.enable_nvml"]:
            app.warn("NVML unavailable; using nvidia-smi")
        with Stopper() as stopper, live:
            for taken in ticks(cfg["service.poll_interval_secs"], None if follow else count, stopper):
                t0 = time.perf_counter()
                samples = sampler.sample(store=not no_store)
                if textfile:
                    _write_textfile(textfile, sampler, samples, time.perf_counter() - t0)
                for s in samples:
                    if not s.ok:
                        failed = True
                    if reported.get(s.index, "ok") != s.status:
                        reported[s.index] = s.status
                        if not s.ok:
                            click.echo(f"gpm: {s.failure()}", err=True)
                if as_json:
                    out = sys.stdout
                    for s in samples:
                        out.write(json.dumps(s.to_json(sampler.host)) + "\n")
                    out.flush()
                elif follow and show_table:
                    live.draw(samples)
                elif show_table:
                    click.echo(sample_table(samples, terminal_size()[0]))
                if not samples and not app.quiet and not as_json:
                    click.echo("gpm: no GPUs found", err=True)
            stopped_early = stopper.stopped and not follow and taken + 1 < count
        if conn is not None:
            _roll_up_closed_hours(app, conn, cfg)
    finally:
        sampler.close()
        if dispatcher is not None:
            dispatcher.close()  # a cron run's hook and webhook still go out (bounded)
        if conn is not None:
            conn.close()
    if stopped_early:
        kept = " (stored)" if conn is not None else ""
        click.echo(f"gpm: interrupted after {taken + 1} of {count} samples{kept}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if failed:
        sys.exit(EXIT_FAILURE)


def _repetition(count: int | None, interval: float | None, follow: bool) -> int:
    """The number of samples asked for; a combination that says two things is a usage error (#13.4)."""
    if follow and count is not None:
        raise click.UsageError(
            f"--follow samples until stopped, -n {count} takes {count}: give one "
            f"(`gpm sample -n {count} -i SECS` or `gpm sample --follow -i SECS`)")
    if interval is not None and count is None and not follow:
        raise click.UsageError(
            f"-i {interval:g} spaces repeated samples: add -n COUNT or --follow "
            f"(`gpm sample -n 10 -i {interval:g}` or `gpm sample --follow -i {interval:g}`)")
    return count or 1
