"""What every job of the daemon is built with: a ``JobContext`` (the
configuration, a way to report state) and the ``Shared`` state jobs hand
each other for the daemon's whole life."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from gpm.alerts.sinks import Sink, default_sinks
from gpm.config import Config
from gpm.telemetry.state import MetricsState


@dataclass
class Shared:
    """What jobs share for the daemon's whole life, owned by the daemon."""

    metrics: MetricsState | None = None  # the exporters' state: the sampling job publishes into it
    alert_sinks: list[Sink] = field(default_factory=default_sinks)  # where every job's alert events go


@dataclass
class JobContext:
    """What a job factory gets: the configuration and a way to report state.

    ``set_status(job, text)`` feeds systemd's STATUS= line; ``mark_ready()``
    tells the daemon sampling works (systemd READY=1); ``shared`` is one
    ``Shared`` for the daemon's whole life.
    """

    cfg: Config
    set_status: Callable[[str, str], None] = lambda job, text: None
    mark_ready: Callable[[], None] = lambda: None
    shared: Shared = field(default_factory=Shared)
