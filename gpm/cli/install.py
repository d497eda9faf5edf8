"""``gpm install``: systemd units and crontab lines that run this gpm."""

from __future__ import annotations

from pathlib import Path

import click

from gpm.cli.context import AppContext, pass_app
from gpm.devtools import clitree
from gpm.errors import GpmError
from gpm.install import (SHELLS, Setup, completion_files, cron_lines, man_dir, man_files, manpath_hint, render_units,
                         systemd_units, unit_dir, write_files, write_units, zsh_hint)
from gpm.paths import ensure_private_dir
from gpm.outfile import write_atomic
from gpm.telemetry.grafana import dashboard_json
from gpm.telemetry.prometheus_rules import DEFAULT_JOB, job_problem, rules_file


@click.group(short_help='Install systemd units, completions, man pages, Prometheus rules.')
def install() -> None:
    """Set gpm up: systemd units, crontab lines, shell completions, man pages,
    Prometheus alerting rules and a Grafana dashboard.

    Every command line in units and crontab lines names the absolute path of
    the gpm being run (or its Python with -m gpm), and carries --config/--db
    when given. pip installs neither completions nor man pages: `gpm install
    completions` and `gpm install man` put them where the shells and man look.
    """


def _setup(app: AppContext, user: bool):
    return Setup.from_config(app.config(), user=user, config_path=app.config_path, db_path=app.db_path)


@install.command()
@click.option("--user", is_flag=True, help="User units (systemctl --user) instead of system units.")
@click.option("--timers", is_flag=True,
              help="Also gpm-sample (every minute), gpm-archive (daily) and gpm-report (weekly; "
                   "also html with [report] weekly_html) services with their timers.")
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
    """Print crontab lines: sample every minute, archive daily, report weekly
    (also as html with [report] weekly_html).

    Add them with `crontab -e`, or `(crontab -l; gpm install cron) | crontab -`.
    A commented @reboot line runs the daemon instead of the sample line.
    """
    click.echo(cron_lines(_setup(app, user=True)), nl=False)


def _command_tree() -> clitree.Command:
    """gpm's whole command tree, from the root group of the running command."""
    return clitree.load(click.get_current_context().find_root().command)


def _write_all(app: AppContext, files: dict[Path, str], system: bool) -> None:
    try:
        results = write_files(files)
    except OSError as err:
        hint = " (run as root, or leave out --system)" if system else ""
        raise GpmError(f"{err.filename}: cannot write: {err.strerror}{hint}") from None
    for path, changed in results:
        app.say(f"{'wrote' if changed else 'unchanged'} {path}")


@install.command()
@click.option("--shell", "shells", type=click.Choice(["bash", "zsh", "fish"]), multiple=True,
              help="Only this shell (repeatable; default: all three).")
@click.option("--system", is_flag=True,
              help="Install for every user under /usr/local/share (needs root).")
@pass_app
def completions(app: AppContext, shells: tuple[str, ...], system: bool) -> None:
    """Install bash, zsh and fish completions for gpm.

    \b
    Per user (default):
      bash  $XDG_DATA_HOME/bash-completion/completions/gpm (bash-completion loads it)
      zsh   $XDG_DATA_HOME/zsh/site-functions/_gpm (add the printed fpath line to ~/.zshrc)
      fish  $XDG_CONFIG_HOME/fish/completions/gpm.fish
    With --system, the same under /usr/local/share (zsh and fish need no line).

    Completions cover subcommands, options and choices; GPU indexes and
    Ollama model names are looked up when completed. Open a new shell after.

    \b
    Exit codes: 0 ok; 1 a file could not be written; 2 usage error.
    """
    chosen = tuple(s for s in SHELLS if s in shells) or SHELLS
    files = completion_files(chosen, system, _command_tree())
    _write_all(app, files, system)
    if "zsh" in chosen:
        hint = zsh_hint(next(p for p in files if p.name == "_gpm"))
        if hint:
            app.say(f"zsh: {hint}")


@install.command("man")
@click.option("--system", is_flag=True, help="Install under /usr/local/share/man (needs root).")
@pass_app
def man_pages(app: AppContext, system: bool) -> None:
    """Install the man pages: gpm(1) and one page per subcommand.

    Per user into $XDG_DATA_HOME/man/man1 (default ~/.local/share/man/man1),
    with --system into /usr/local/share/man/man1. When man(1) would not look
    there, the line to add to the shell's rc file is printed. Then: `man gpm`,
    `man gpm-sample`.

    \b
    Exit codes: 0 ok; 1 a file could not be written; 2 usage error.
    """
    _write_all(app, man_files(system, _command_tree()), system)
    hint = manpath_hint(man_dir(system))
    if hint:
        app.say(f"man: {hint}")


def _print_or_write(app: AppContext, text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    write_atomic(output, text)
    app.say(f"wrote {output}")


_OUTPUT = click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                       help="Write to FILE (whole or not at all) instead of printing.")


@install.command("prometheus-rules")
@click.option("--job", default=DEFAULT_JOB, show_default=True, metavar="NAME",
              help="The scrape job gpm's metrics come from (job_name in prometheus.yml).")
@_OUTPUT
@pass_app
def prometheus_rules(app: AppContext, job: str, output: Path | None) -> None:
    """Print Prometheus alerting rules that mean what gpm's [alerts] rules mean.

    One alert per enabled rule gpm's metrics can express (temperature, memory,
    power, throttle, gpu_lost, ollama_down) with the same threshold, margin,
    for_secs and severity from the configuration, labelled severity and rule;
    plus GpmCollectorFailing (gpm_collector_success == 0), GpmTargetDown
    (up == 0) and GpmTargetAbsent (no target of --job). Add the file to
    rule_files: in prometheus.yml; `promtool check rules FILE` checks it.

    \b
    Exit codes: 0 ok; 1 FILE could not be written; 2 usage or config error.
    """
    problem = job_problem(job)
    if problem:
        raise click.BadParameter(f"{job!r}: {problem}", param_hint="--job")
    _print_or_write(app, rules_file(app.config(), job), output)


@install.command("grafana-dashboard")
@_OUTPUT
@pass_app
def grafana_dashboard(app: AppContext, output: Path | None) -> None:
    """Print a Grafana dashboard (JSON) over gpm's Prometheus metrics.

    Import it in Grafana (Dashboards > New > Import) and pick a Prometheus
    data source for its ${datasource} variable; $instance picks machines.
    Panels: GPU utilization, memory, temperature, power and energy per GPU;
    workload categories; LLM tokens/s, time to first token and requests per
    model; collector health; firing alerts (gpm's and Prometheus's).

    \b
    Exit codes: 0 ok; 1 FILE could not be written; 2 usage error.
    """
    _print_or_write(app, dashboard_json(), output)
