"""``gpm report``: a one-shot report of what the GPUs did, for a terminal or a file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from gpm.cli.context import AppContext, pass_app
from gpm.cli.options import time_range_options
from gpm.cli.pager import echo_paged
from gpm.errors import EXIT_USAGE, GpmError
from gpm.gpu.sample import now_ms as clock
from gpm.humanize import terminal_size
from gpm.locks import exclusive_lock, lock_path
from gpm.outfile import check_output, write_atomic
from gpm.report.build import Report
from gpm.report.cost import Pricing, add_pricing
from gpm.report.html import render_html
from gpm.report.make import make_report
from gpm.report.period import Period, check_timezone, fill_week, resolve_period
from gpm.report.render import render
from gpm.report.sections import SECTIONS
from gpm.report.summaries import make_trend, save_week, week_period


NOTHING_YET = """\
gpm report: nothing sampled yet (database {db}).
Take a sample now:        gpm sample
Keep sampling (systemd):  gpm install systemd --user --write
Then run `gpm report` again.
"""


@click.command(short_help='Report what the GPUs did over a week or a range.')
@click.option("--week", metavar="YYYY-Www|last|this",
              help="One ISO week, Monday to Monday in local time: 2026-W47; last (the last finished "
                   "week, what a weekly timer reports) or this (this week up to now).")
@time_range_options(since_default="7 days before --until", until_default="now")
@click.option("--host", "hosts", multiple=True, metavar="HOST",
              help="Only this host (repeatable). Default: every host in the database and archive.")
@click.option("--gpu", "gpus", multiple=True, metavar="INDEX|UUID",
              help="Only this GPU, by index or UUID prefix (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json", "csv", "html"]), default="text",
              show_default=True,
              help="text: tables in human units for a terminal; markdown; json: every figure in machine "
                   "units (seconds, bytes, joules) with stable keys; csv: one section (--section); "
                   "html: one self-contained page of charts and their numbers, no script, nothing "
                   "fetched (-o week.html).")
@click.option("--section", "sections", multiple=True, type=click.Choice(SECTIONS), metavar="SECTION",
              help=f"Only these sections (repeatable): {', '.join(SECTIONS)}; csv prints exactly one "
                   "(default: gpus).")
@click.option("--weeks", type=click.IntRange(1, 520), metavar="N",
              help="A trend table of the last N finished ISO weeks, from stored weekly summaries "
                   "(weeks not summarised yet are computed once and stored).")
@click.option("--archive-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Parquet archive to read besides the database; may hold several hosts' archives "
                   "(default: [storage] archive_dir).")
@click.option("--busy-threshold", type=click.FloatRange(0, 100), metavar="PERCENT",
              help="A GPU is busy above this utilization (default: [report] busy_threshold_percent).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file atomically (temp file, then rename) instead of stdout; two "
                   "such runs never overlap (the second exits 75). {week} in the path becomes the "
                   "reported ISO week: -o reports/report-{week}.txt --week last.")
@click.option("--no-cache", is_flag=True,
              help="Read every raw sample instead of the stored rollup (one row per GPU and minute).")
@pass_app
def report(app: AppContext, week, since, until, hosts, gpus, fmt, sections, weeks, archive_dir,
           busy_threshold, output, no_cache) -> None:
    """Report what the GPUs did: coverage and gaps, per-GPU busy time,
    utilization, temperature, memory, energy and throttling, the alerts that
    fired, a per-day strip,
    the workload mix (GPU time and energy per process category), games, LLM
    requests per model (tokens, tokens/s, TTFT, TPOT, errors, joules per
    generated token), models loaded (VRAM) and the top processes. With
    [report] electricity_price_per_kwh or carbon_intensity_g_per_kwh set,
    "Cost and CO2" prices the energy (money, grams of CO2).
    --format html makes it one page of charts with their numbers.

    The range defaults to the last 7 days up to now. Times follow one rule
    in every command: a date or datetime without a zone is local time
    (docs/report.md, "Times"). Energy comes from each
    GPU's energy counter (the sum of its increases, so gaps in sampling lose
    nothing); GPUs without one fall back to integrated power over the sampled
    intervals, and the report says which. Process energy is each run's share
    of its GPU's energy; LLM energy is measured only for requests whose GPU
    samples are still in the database. A section without data is one line
    saying why. A report over one whole, finished ISO week is stored in
    weekly_summaries for `--weeks`. Reads the rollup (one row per GPU and
    minute) that `gpm sample`, the daemon and `gpm archive` keep; data gpm
    did not roll up itself is rolled up once (a progress bar on a terminal). On a terminal, a text report
    longer than the screen goes through $PAGER (default: less -FRX), as git
    does; never when piped, with --output, or in other formats.

    \b
    Exit codes: 0 ok; 1 error (e.g. unreadable archive); 2 usage or config
    error (e.g. a bad --since); 75 another `gpm report --output` is running.
    """
    tz_warning = check_timezone()
    if tz_warning:
        app.warn(tz_warning)
    if fmt == "csv" and len(sections) > 1:
        raise GpmError("--format csv prints one section: give --section once", EXIT_USAGE)
    if weeks and (week or since is not None or until is not None or gpus):
        raise GpmError("--weeks cannot be combined with --week/--since/--until/--gpu", EXIT_USAGE)
    now = clock()
    asked = None if weeks else resolve_period(now_ms=now, week=week, since=since, until=until)
    if output is not None:
        output = fill_week(output, asked)
        check_output(output)
    cfg = app.config({"report.busy_threshold_percent": (busy_threshold, "--busy-threshold")})
    busy = cfg["report.busy_threshold_percent"]
    archive = archive_dir if archive_dir is not None else cfg.archive_dir
    # Text fits the terminal, or 80 columns in a file or a pipe; Markdown fits
    # a terminal, and keeps its cells whole in a file or a pipe (#13.1).
    if fmt == "text":
        width = 80 if output is not None else terminal_size()[0]
    else:
        width = terminal_size()[0] if fmt == "markdown" and output is None and sys.stdout.isatty() else None
    conn = app.open_db()
    db_path = cfg.db_path

    def compute(period):
        return make_report(conn=conn, archive_dir=archive, period=period,
                           hosts=hosts, gpus=gpus, busy_threshold=busy, now_ms=now,
                           own_host=cfg.hostname, use_cache=not no_cache,
                           progress=_progress_bar if not app.quiet and sys.stderr.isatty() else None)

    def run() -> str:
        if weeks:
            trend = make_trend(conn, weeks, now, hosts, compute)
            first, last = week_period(trend[0]["iso_week"]), week_period(trend[-1]["iso_week"])
            period = Period(first.since_ms, last.until_ms, f"last {weeks} weeks")
            rep = Report(period=period, generated_ms=now, busy_threshold_percent=busy, trend=trend)
        else:
            rep = compute(asked)
            if rep.nothing_recorded() and fmt in ("text", "markdown"):
                return NOTHING_YET.format(db=db_path)
            if not gpus:
                save_week(conn, rep)
        _price(rep, cfg, sections)
        if fmt == "html":
            return render_html(rep, tuple(sections))
        color = (fmt == "text" and output is None and sys.stdout.isatty()
                 and "NO_COLOR" not in os.environ)
        return render(rep, fmt, tuple(sections), color=color, width=width)

    try:
        if output is None:
            text = run()
            if fmt == "text":
                echo_paged(text)
            else:
                click.echo(text, nl=False)
            return

        # Another run writing a report gives up at once: the next timer run follows soon.
        with exclusive_lock(lock_path(db_path, "report"), job="report", wait_secs=0):
            write_atomic(output, run())
    finally:
        conn.close()


def _price(rep, cfg, sections: tuple[str, ...]) -> None:
    """Cost and CO2 from the [report] prices, after the week was stored (prices are not history)."""
    pricing = Pricing.of(cfg["report.electricity_price_per_kwh"], cfg["report.currency"],
                         cfg["report.carbon_intensity_g_per_kwh"])
    if pricing is not None:
        add_pricing(rep, pricing)
    elif "cost" in sections:
        rep.omitted["cost"] = ("no [report] electricity_price_per_kwh or carbon_intensity_g_per_kwh "
                               "in the configuration")


def _progress_bar(total: int):
    """A bar on stderr while data gpm did not roll up itself is rolled up (hours or days)."""
    bar = click.progressbar(length=total, label="rolling up", file=sys.stderr)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        bar.update(n)
        if done >= total:
            bar.render_finish()

    return advance
