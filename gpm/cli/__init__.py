"""The ``gpm`` command: a thin Click layer over the library.

Every subcommand is imported here and registered with ``cli.add_command``,
so go-to-definition and static checks follow them (#14.4). ``gpm --help`` and
``gpm sample`` still never import polars, opentelemetry or prometheus_client:
those are imported inside the functions that use them.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import sys
import textwrap
from contextlib import contextmanager
from typing import Iterator, NoReturn

import click

from gpm import __version__
from gpm.cli import (alerts, archive, classify_cmd, config_cmd, daemon, doctor, export, install, ollama_watch, ps,
                     report, sample, serve_metrics)
from gpm.cli.context import AppContext
from gpm.cli.options import accept_global_options
from gpm.errors import EXIT_CODES, EXIT_FAILURE, EXIT_INTERRUPTED, GpmError
from gpm.humanize import visible
from gpm.store.db import database_error


@contextmanager
def _closed_pipe_as_reader_left() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if _is_closed_pipe(exc):
            raise _ReaderLeft from None
        raise


def exit_codes_epilog() -> str:
    """The exit-code table, each meaning wrapped under itself so `gpm --help` fits 80 columns."""
    lines = ["\b", "Exit codes:"]
    for code, text in EXIT_CODES.items():
        lines += textwrap.wrap(text, width=78, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
    return "\n".join(lines)


class _ReaderLeft(Exception):
    """stdout's reader left; carried past Click, which would make it exit 1."""


class Group(click.Group):
    """The root group: a closed stdout and a database fault each end as one line."""

    def make_context(self, *args, **kwargs) -> click.Context:
        with _closed_pipe_as_reader_left():  # `gpm --help | head`
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        """Run the subcommand; a database fault becomes one line naming the file, and a
        closed stdout is carried past Click as ``_ReaderLeft`` (#12.11)."""
        try:
            with _closed_pipe_as_reader_left():
                return super().invoke(ctx)
        except _ReaderLeft:
            raise
        except Exception as err:
            app = ctx.obj
            if not isinstance(err, sqlite3.Error) or not isinstance(app, AppContext):
                raise
            cfg = app.config()
            known = database_error(cfg.db_file, err, busy_timeout=cfg["storage.busy_timeout_secs"])
            if known is None:
                raise
            raise known from None


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=exit_codes_epilog(),
)
@click.version_option(__version__, "--version", prog_name="gpm", message="%(prog)s %(version)s")
@click.option("--db", "db_path", envvar="GPM_DB", type=click.Path(dir_okay=False),
              help="SQLite database (default: $XDG_DATA_HOME/gpm/gpm.db). Env: GPM_DB.")
@click.option("--config", "config_path", envvar="GPM_CONFIG", type=click.Path(dir_okay=False),
              help="Config file (default: $XDG_CONFIG_HOME/gpm/config.toml). Env: GPM_CONFIG.")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.pass_context
def cli(ctx: click.Context, db_path, config_path, verbose, quiet) -> None:
    """gpm: a GPU and local-LLM monitor.

    Samples NVIDIA GPUs (NVML, or nvidia-smi as a fallback) and the processes
    on them into one SQLite database; each subcommand runs alone from cron or
    a systemd timer.
    """
    db_source = None
    if db_path:
        source = ctx.get_parameter_source("db_path")
        db_source = "env GPM_DB" if source == click.core.ParameterSource.ENVIRONMENT else "flag --db"
    ctx.obj = AppContext(config_path=config_path, db_path=db_path, db_source=db_source)
    ctx.obj.set_output(verbose, quiet)


for _command in (sample.sample, config_cmd.config, daemon.daemon, install.install, report.report, archive.archive,
                 export.export, classify_cmd.classify, ps.ps, serve_metrics.serve_metrics, doctor.doctor,
                 ollama_watch.ollama_watch, alerts.alerts):
    cli.add_command(accept_global_options(_command))


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: every failure ends as one line on stderr and a documented exit code.

    Ordinary problems are ``GpmError``s raised where they are understood; the
    last handler below is for bugs only. Ctrl-C at any moment exits 130, and a
    reader that leaves early (``gpm export | head``) ends the run quietly with
    0, as it would a well-behaved Unix filter (#12.11).
    """
    signal.signal(signal.SIGINT, _interrupt)
    try:
        code = _invoke(argv)
        if sys.stdout is not None:
            sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at exit
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C ends it at once
        code = _fail("interrupted", EXIT_INTERRUPTED)
        _forget_the_interrupt()
    except OSError as exc:
        if not _is_closed_pipe(exc):
            raise
        code = _reader_left()
    # The work is done: a Ctrl-C while the interpreter exits (atexit's
    # logging.shutdown) ends the process by the signal, not with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(code)


class _Interrupt:
    seen = False  # a Ctrl-C reached main()'s handler


def _interrupt(_signum, _frame) -> None:
    """SIGINT while main() runs: ``signal.default_int_handler``, remembering
    that it came. A KeyboardInterrupt raised in the middle of an import can
    come out as another exception (CPython's import error path once gave
    "TypeError: expected a message argument"): that is still the Ctrl-C,
    130 and "gpm: interrupted", not an internal error."""
    _Interrupt.seen = True
    raise KeyboardInterrupt


def _forget_the_interrupt() -> None:
    """Make ``python -m gpm`` exit with our 130, not die by SIGINT after "gpm: interrupted".

    CPython marks a KeyboardInterrupt that ends code run from a string
    (``exec``/``eval`` of source: every dataclass and namedtuple definition
    does it, so any lazy import can) as unhandled even when a caller catches
    it, and under ``-m`` then ends the process by re-raising SIGINT after
    ``sys.exit`` (bpo-41602's check in ``Py_RunMain``). The mark is cleared
    at the start of every such run: one empty one clears it.
    """
    exec("")  # noqa: S102 - no input: it only resets the interpreter's flag


def _invoke(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="gpm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:  # Click's name for a KeyboardInterrupt
        raise KeyboardInterrupt from None
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "gpm"
        return _fail(f"{exc.format_message()} (see '{where} --help')", exc.exit_code)
    except click.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except GpmError as exc:
        return _fail(exc.lines(), exc.exit_code)
    except _ReaderLeft:
        return _reader_left()
    except Exception as exc:  # noqa: BLE001 - the last line of defence, for bugs only
        if _Interrupt.seen:  # Python turned the Ctrl-C into another error (an import it cut short)
            raise KeyboardInterrupt from None
        if "-v" in sys.argv or "-vv" in sys.argv or "--verbose" in sys.argv:
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (run with -v for details)", EXIT_FAILURE)
    return 0


def _fail(message: str | list[str], code: int) -> int:
    """One line on stderr (a line per backend tried for "no GPU"); a closed
    stderr loses the line, never the exit code."""
    try:
        for line in [message] if isinstance(message, str) else message:
            click.echo(f"gpm: {visible(line)}", err=True)  # it may quote a file name or a value (#12.10)
    except OSError:
        pass
    return code


def _is_closed_pipe(exc: BaseException) -> bool:
    """EPIPE from Python, or from polars, whose Rust errors carry it only as text."""
    return isinstance(exc, OSError) and (
        exc.errno == errno.EPIPE or (exc.errno is None and f"(os error {errno.EPIPE})" in str(exc))
    )


def _reader_left() -> int:
    """The reader of stdout is gone: send what is still buffered nowhere and exit 0."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout closed or replaced
        pass
    return 0
