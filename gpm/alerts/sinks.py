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
    """The default sink: one log line per event (WARNING firing, INFO resolved)."""
    if event.state == "firing":
        log.warning("%s alert %s: %s", event.severity, event.rule, event.message)
    else:
        log.info("resolved alert %s: %s", event.rule, event.message)


def default_sinks() -> list[Sink]:
    return [log_event]
