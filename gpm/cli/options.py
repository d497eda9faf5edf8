"""Option bundles shared by several commands (decorator factories, as sqlite-utils does)."""

from __future__ import annotations

from typing import Any, Callable

import click


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
