"""Option bundles shared by several commands (decorator factories, as sqlite-utils does)."""

from __future__ import annotations

from typing import Any, Callable

import click

from gpm.cli.context import AppContext
from gpm.timespec import parse_time_ms


def otlp_options(what: str) -> Callable:
    """``--otlp/--no-otlp``, ``--otlp-endpoint`` and ``--otlp-protocol``; ``what`` says what is exported."""
    def decorate(fn: Callable) -> Callable:
        fn = click.option("--otlp-protocol", type=click.Choice(["grpc", "http/protobuf"]),
                          help="OTLP transport (default: [telemetry] otlp_protocol, grpc).")(fn)
        fn = click.option("--otlp-endpoint", metavar="URL",
                          help="OTLP receiver (default: [telemetry] otlp_endpoint, "
                               "http://localhost:4317).")(fn)
        fn = click.option("--otlp/--no-otlp", default=None,
                          help=f"{what}; default: [telemetry] enable_opentelemetry.")(fn)
        return fn

    return decorate


def otlp_overrides(otlp: bool | None, endpoint: str | None, protocol: str | None) -> dict[str, tuple[Any, str]]:
    """The config overrides of ``otlp_options``' flags."""
    return {
        "telemetry.enable_opentelemetry": (otlp, "--otlp"),
        "telemetry.otlp_endpoint": (endpoint, "--otlp-endpoint"),
        "telemetry.otlp_protocol": (protocol, "--otlp-protocol"),
    }


def _late_db(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        app = ctx.find_object(AppContext)
        app.db_path, app.db_source = value, "flag --db"


def _late_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_object(AppContext).config_path = value


def _late_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:
        app = ctx.find_object(AppContext)
        app.set_output(app.verbose + value, app.quiet)


def _late_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        app = ctx.find_object(AppContext)
        app.set_output(app.verbose, True)


def _global_params() -> list[click.Option]:
    """The root's --db, --config, -v and -q, for use after a subcommand (hidden in its help)."""
    common: dict[str, Any] = {"expose_value": False, "hidden": True}
    return [
        click.Option(["--db"], type=click.Path(dir_okay=False), callback=_late_db,
                     help="As gpm --db.", **common),
        click.Option(["--config"], type=click.Path(dir_okay=False), callback=_late_config,
                     help="As gpm --config.", **common),
        click.Option(["-v", "--verbose"], count=True, callback=_late_verbose, help="As gpm -v.", **common),
        click.Option(["-q", "--quiet"], is_flag=True, callback=_late_quiet, help="As gpm -q.", **common),
    ]


def accept_global_options(cmd: click.Command) -> click.Command:
    """Let ``gpm sample -q`` and ``gpm report --db X`` mean what ``gpm -q sample`` does (#13.3).

    People type options where they think of them; the root's options are added,
    hidden, to every subcommand (and a group's subcommands) and set the same
    AppContext. Given twice, the later one wins; -v counts add up.
    """
    if getattr(cmd, "_gpm_global_options", False):
        return cmd
    taken = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
    cmd.params.extend(p for p in _global_params() if not taken & set(p.opts))
    cmd._gpm_global_options = True  # type: ignore[attr-defined]
    for sub in getattr(cmd, "commands", {}).values():
        accept_global_options(sub)
    return cmd


TIME_FORMS = ("a date or datetime in local time (2026-12-01, 2026-12-01T08:00; end it in Z or +HH:MM for "
              "another zone), an ISO week (2026-W48: its Monday 00:00), a time ago (24h, 7d, 2w) or now")


class TimeParam(click.ParamType):
    """A point in time by ``gpm.timespec``'s one rule, as Unix ms (#13.7).

    Every option that takes a time has this type, so the same words mean the
    same instant in every command; the test that walks the command tree finds
    the options by it.
    """

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time_ms(value)
        except ValueError as err:
            option = param.opts[0] if param is not None else "time"
            raise click.UsageError(f"{option} {err}", ctx) from None


def time_range_options(since_default: str, until_default: str) -> Callable:
    """``--since`` and ``--until`` (Unix ms, or None), with the one help text for times."""
    def decorate(fn: Callable) -> Callable:
        fn = click.option("--until", type=TimeParam(), metavar="WHEN",
                          help=f"Only before WHEN (same forms as --since). Default: {until_default}.")(fn)
        fn = click.option("--since", type=TimeParam(), metavar="WHEN",
                          help=f"Only from WHEN on: {TIME_FORMS}. Default: {since_default}.")(fn)
        return fn

    return decorate
