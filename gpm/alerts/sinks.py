"""Where alert events go: sinks, each a ``Callable[[AlertEvent], None]``.

Events reach the sinks after the transaction that stored them commits
(``gpm.sampling``, ``AlertEngine.run``). The default sink is one log line;
notification channels are more sinks in the same list (``Sampler.alert_sinks``,
the daemon's ``Shared.alert_sinks``). A sink must not block: the sampler
waits for it.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from gpm.alerts.channels import LogChannel
from gpm.alerts.event import AlertEvent

log = logging.getLogger("gpm.alerts")

Sink = Callable[[AlertEvent], None]


def tell(sinks: Iterable[Sink], events: list[AlertEvent]) -> None:
    """Hand each event to each sink; a sink that fails is logged and the others still hear."""
    for event in events:
        for sink in sinks:
            try:
                sink(event)
            except Exception:  # noqa: BLE001 - one broken channel must not stop sampling
                log.exception("alert sink %r failed", sink)


def log_event(event: AlertEvent) -> None:
    """The default sink: one log line per event, at the severity's level while firing, INFO resolved
    (``gpm.alerts.channels.LogChannel``, the line a Dispatcher writes too)."""
    LogChannel().deliver(event)


def default_sinks() -> list[Sink]:
    return [log_event]
