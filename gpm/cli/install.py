"""``gpm install``: systemd units and crontab lines that run this gpm."""

from __future__ import annotations

from pathlib import Path

import click

from gpm.cli.context import AppContext, pass_app
from gpm.errors import GpmError


@click.group()
def install() -> None:
    """Print or install systemd units, or print crontab lines, that run gpm.

    Every command line names the absolute path of the gpm being run (or its
    Python with -m gpm), and carries --config/--db when given.
    """


def _setup(app: AppContext, user: bool):
    from gpm.install import Setup

    return Setup.from_config(app.config(), user=user, config_path=app.config_path, db_path=app.db_path)


@install.command()
@click.option("--user", is_flag=True, help="User units (systemctl --user) instead of system units.")
@click.option("--timers", is_flag=True,
              help="Also gpm-sample (every minute), gpm-archive (daily) and gpm-report (weekly) "
                   "services with their timers.")
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="Write the units into this folder instead of printing them.")
@click.option("--write", is_flag=True,
              help="Write the units into the systemd folder: /etc/systemd/system, or "
                   "$XDG_CONFIG_HOME/systemd/user with --user.")
@pass_app
def systemd(app: AppContext, user: bool, timers: bool, directory: str | None, write: bool) -> None:
    """Print or write systemd units for gpm.

    gpm.service runs `gpm daemon` (Type=notify, WatchdogSec, reload with
    `systemctl reload gpm`) hardened with NoNewPrivileges, ProtectSystem=strict
    (the data folders stay writable), PrivateTmp and more. System units keep
    their data in /var/lib/gpm and read /etc/gpm/config.toml.

    Without --dir or --write the units are printed, each introduced by a
    `# NAME` line. Customise installed units with `systemctl edit`, not by
    editing them: a drop-in survives regeneration.

    \b
    Exit codes: 0 ok; 1 a unit could not be written; 2 usage error.
    """
    from gpm.install import render_units, systemd_units, unit_dir, write_units
    from gpm.paths import ensure_private_dir

    if directory and write:
        raise click.UsageError("--dir and --write are alternatives: give one")
    setup = _setup(app, user)
    units = systemd_units(setup, timers=timers)
    if not directory and not write:
        click.echo(render_units(units), nl=False)
        return
    target = Path(directory).expanduser() if directory else unit_dir(user)
    try:
        results = write_units(units, target)
        if write and user:
            for d in setup.data_dirs:
                ensure_private_dir(d)
    except OSError as err:
        hint = "" if user or directory else " (run as root, or use --user)"
        raise GpmError(f"{err.filename or target}: cannot write unit: {err.strerror}{hint}") from None
    for path, changed in results:
        app.say(f"{'wrote' if changed else 'unchanged'} {path}")
    if write:
        ctl = "systemctl --user" if user else "systemctl"
        enable = "gpm.service" + (" " + " ".join(n for n in units if n.endswith(".timer")) if timers else "")
        app.say(f"next: {ctl} daemon-reload && {ctl} enable --now {enable}")


@install.command()
@pass_app
def cron(app: AppContext) -> None:
    """Print crontab lines: sample every minute, archive daily, report weekly.

    Add them with `crontab -e`, or `(crontab -l; gpm install cron) | crontab -`.
    A commented @reboot line runs the daemon instead of the sample line.
    """
    from gpm.install import cron_lines

    click.echo(cron_lines(_setup(app, user=True)), nl=False)
