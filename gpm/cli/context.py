"""What every subcommand gets from the root group: settings and the database."""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from gpm.config import Config, load_config
from gpm.store.db import open_db


@dataclass(eq=False)
class AppContext:
    """The root group's options, and the configuration they lead to (loaded once)."""

    config_path: str | None = None
    db_path: str | None = None
    db_source: str | None = None
    verbose: int = 0
    quiet: bool = False
    _config: Config | None = field(default=None, init=False, repr=False)

    def config(self, overrides: dict[str, tuple[Any, str]] | None = None) -> Config:
        """The effective configuration, flags applied (loaded once)."""
        if self._config is None:
            cfg = load_config(self.config_path)
            if self.db_path:
                cfg.values["storage.db_path"] = os.path.expanduser(self.db_path)
                cfg.sources["storage.db_path"] = self.db_source or "flag --db"
            self._config = cfg
        if overrides:
            return self._config.with_overrides(overrides)
        return self._config

    def open_db(self, *, readonly: bool = False) -> sqlite3.Connection:
        cfg = self.config()
        return open_db(cfg.db_file, readonly=readonly, busy_timeout=cfg["storage.busy_timeout_secs"])

    def set_output(self, verbose: int, quiet: bool) -> None:
        """Apply -v/-q, given before or after the subcommand: logging level on stderr."""
        self.verbose, self.quiet = verbose, quiet
        if verbose or quiet:  # without configuration Python already prints warnings to stderr
            level = logging.ERROR if quiet else (logging.INFO if verbose == 1 else logging.DEBUG)
            logging.basicConfig(level=level, format="gpm: %(message)s", stream=sys.stderr, force=True)

    def say(self, message: str) -> None:
        """Informational output, silenced by -q."""
        if not self.quiet:
            click.echo(message)

    def warn(self, message: str) -> None:
        if not self.quiet:
            click.echo(f"gpm: warning: {message}", err=True)


pass_app = click.make_pass_decorator(AppContext)
