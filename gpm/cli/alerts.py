"""``gpm alerts``: the alerts firing now and lately; ``gpm alerts test`` tries every channel."""

from __future__ import annotations

import json
import sys

import click

from gpm.alerts.dispatch import Dispatcher
from gpm.alerts.event import AlertEvent
from gpm.alerts.listing import render_table
from gpm.cli.context import AppContext, pass_app
from gpm.cli.options import time_range_options
from gpm.errors import EXIT_FAILURE
from gpm.gpu.sample import now_ms as clock
from gpm.humanize import terminal_size
from gpm.store.alerts import firing_events, list_events

DEFAULT_SINCE_MS = 7 * 86_400_000
NO_DATABASE = "no database yet ({db}): nothing sampled, no alerts"


@click.group(invoke_without_command=True, short_help="The alerts firing now and lately; test the channels.")
@time_range_options(since_default="7d (7 days ago)", until_default="now")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list of the events (docs/alerts.md, \"Event JSON\"), oldest first.")
@pass_app
@click.pass_context
def alerts(ctx: click.Context, app: AppContext, since: int | None, until: int | None, as_json: bool) -> None:
    """The alerts firing now, and those resolved since --since (default: the
    last 7 days): a table in local time, or JSON. An alert is listed when it
    was firing at any time in the range, so one firing now is always there
    (unless --until is before it began). Alerts fire when `gpm sample` or
    `gpm daemon` sees a rule's condition last long enough ([alerts] in the
    configuration; docs/alerts.md).

    \b
    Exit codes: 0 no alert is firing now; 1 an alert is firing now, so that
    `gpm alerts && ...` runs only when all is well; 2 usage or config error.
    """
    if ctx.invoked_subcommand is not None:
        return
    cfg = app.config()
    now = clock()
    since = now - DEFAULT_SINCE_MS if since is None else since
    if not cfg.db_path.exists():
        if as_json:
            click.echo("[]")
            app.warn(NO_DATABASE.format(db=cfg.db_path))
        else:
            click.echo(f"gpm alerts: {NO_DATABASE.format(db=cfg.db_path)}.")
        return
    conn = app.open_db()
    try:
        events = list_events(conn, since_ms=since, until_ms=until)
        firing = firing_events(conn)
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps([e.to_json() for e in events], indent=2, ensure_ascii=False))
    else:
        click.echo(render_table(events, since_ms=since, now_ms=now, width=terminal_size()[0]), nl=False)
    if firing:
        sys.exit(EXIT_FAILURE)  # click's ctx.exit(1) would be taken for success by gpm's main()


@alerts.command(short_help="Send a test alert through every channel.")
@pass_app
def test(app: AppContext) -> None:
    """Send a test alert (rule "test", severity info) through the log and
    every channel of [alerts] (desktop, hook, webhook) now, one after the
    other, and print one line per channel: ok, failed (and why), not
    configured, or skipped (no session bus for the desktop).

    \b
    Exit codes: 0 every configured channel worked; 1 one failed; 2 usage
    or config error.
    """
    cfg = app.config()
    event = AlertEvent(rule="test", host=cfg.hostname, severity="info", started_ms=clock(),
                       message="a test alert from `gpm alerts test`: nothing is wrong")
    outcomes = Dispatcher(cfg).test(event)
    for outcome in outcomes:
        click.echo(outcome.line())
    if not all(o.worked for o in outcomes):
        sys.exit(EXIT_FAILURE)
