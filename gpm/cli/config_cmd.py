"""``gpm config``: show, check or create the configuration file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from gpm import paths
from gpm.cli.context import AppContext, pass_app
from gpm.config import SCHEMA, example_toml
from gpm.errors import GpmError
from gpm.humanize import Column, cut_start, display_width, table, terminal_size, visible
from gpm.outfile import write_atomic


@click.group(short_help='Show, check or create the configuration.')
def config() -> None:
    """Show, check or create the configuration.

    Precedence: defaults < config file < GPM_<SECTION>_<KEY> environment
    variables < command-line flags. Errors name the file and line (or the
    variable), the key, the value and what was expected, and exit with 2.
    """


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {section: {key: {value, source}}}.")
@pass_app
def show(app: AppContext, as_json: bool) -> None:
    """Print the effective configuration and where each value came from."""
    cfg = app.config()
    if as_json:
        out: dict = {}
        for key in SCHEMA:
            out.setdefault(key.section, {})[key.name] = {
                "value": cfg[key.dotted], "source": cfg.source(key.dotted),
            }
        click.echo(json.dumps(out, indent=2))
        return
    width = terminal_size()[0]
    rows = [[f"{k.section}.{k.name}", *_shown(cfg, k.dotted)] for k in SCHEMA]
    missing = "" if cfg.config_file_found else " (not present)"
    click.echo(_path_line(f"config file{missing}:", str(cfg.config_path), width))
    click.echo(_path_line("database:", str(cfg.db_path), width))
    # a long value (a path, a list) gives way before its source, the key last (#13.1)
    columns = [Column("key", min_width=16), Column("value", min_width=12), Column("source", min_width=8)]
    click.echo(table(columns, rows, width, give_way=(1, 2, 0)))


def _path_line(label: str, path: str, width: int) -> str:
    """``label path`` on one line when it fits the terminal; else the path
    alone on the next line, whole when it fits there (#13.1)."""
    path = visible(path)
    if display_width(label) + 1 + display_width(path) <= width:
        return f"{label} {path}"
    return f"{label}\n  {cut_start(path, width - 2)}"


def _short_source(cfg, source: str) -> str:
    """A value from the config file by its file name and line (``config.toml:3``):
    the full path is on the ``config file:`` line, once, not on every row (#13.1)."""
    path = str(cfg.config_path)
    if source == path or source.startswith(path + ":"):
        return os.path.basename(path) + source[len(path):]
    return source


def _shown(cfg, dotted: str) -> tuple[str, str]:
    """(value, source) as `config show` prints them: an empty path or host name
    is the one actually used, with why (#13.10: the archive folder showed "")."""
    value, source = cfg[dotted], cfg.source(dotted)
    if dotted == "storage.db_path":
        value = cfg.db_file
    elif dotted == "storage.archive_dir":
        value = str(cfg.archive_dir)
        if not cfg[dotted]:
            beside = value == paths.default_archive_dir(cfg.db_file)
            source = "default (beside the database)" if beside else "where the database last archived"
    elif dotted == "service.hostname" and not value:
        value, source = cfg.hostname, "default (this machine's name)"
    elif value is None:
        return "(not set)", _short_source(cfg, source)
    return json.dumps(value), _short_source(cfg, source)


@config.command()
@pass_app
def check(app: AppContext) -> None:
    """Validate the configuration file and GPM_* variables; exit 0 or 2."""
    cfg = app.config()
    changed = sum(1 for src in cfg.sources.values() if src != "default")
    where = cfg.config_path if cfg.config_file_found else "no config file"
    app.say(f"ok: {where} ({changed} setting{'s' if changed != 1 else ''} not at default)")


@config.command()
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--path", "target", type=click.Path(dir_okay=False),
              help="Where to write (default: --config, or $XDG_CONFIG_HOME/gpm/config.toml).")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the example instead of writing it.")
@pass_app
def init(app: AppContext, force: bool, target: str | None, to_stdout: bool) -> None:
    """Write a commented example configuration (never overwrites without --force)."""
    text = example_toml()
    if to_stdout:
        click.echo(text, nl=False)
        return
    path = Path(target or app.config_path or paths.default_config_path()).expanduser()
    if path.exists() and not force:
        raise GpmError(f"{path}: already exists (use --force to overwrite)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GpmError(f"{path}: cannot create folder {path.parent}: {err.strerror}") from None
    write_atomic(path, text)
    app.say(f"wrote {path}")
