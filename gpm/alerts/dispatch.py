"""The ``Dispatcher``: alert events to every channel, without ever holding up a sample.

``send(event)`` is what the rule engine calls after each commit. It writes
the log line at once, then hands the event to one worker thread through a
bounded queue and returns: a hook that hangs or a webhook that never answers
delays the next notification, never the next sample. When the queue is full
the event is dropped for the other channels, with a log line saying so.

Each channel tells one alert (a rule on one GPU, folder or host) at most
once per ``[alerts] notify_min_interval_secs``; a resolution always goes.
The limit lives in memory: across one-shot ``gpm sample`` runs the rule
engine's own state already makes an alert fire once, not every minute.

``close(timeout)`` waits, at most ``timeout`` seconds, for what is queued,
so that a one-shot ``gpm sample`` from cron still runs its hook before it
exits; what is still running then is killed (a hook) or abandoned.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from gpm.alerts.channels import Channel, DeliveryError, LogChannel, channels_from_config
from gpm.alerts.event import AlertEvent
from gpm.humanize import visible

log = logging.getLogger("gpm.alerts")

QUEUE_SIZE = 100
CLOSE_SECS = 15.0


@dataclass(frozen=True)
class Outcome:
    """What one channel did with a test event: ``ok``, ``failed``, ``not configured`` or ``skipped``."""

    channel: str
    status: str
    detail: str = ""

    @property
    def worked(self) -> bool:
        """False only for a channel that was asked for and failed."""
        return self.status != "failed"

    def line(self) -> str:
        return f"{self.channel}: {self.status}" + (f": {self.detail}" if self.detail else "")


def alert_key(event: AlertEvent) -> tuple:
    """Which alert an event is about: its rule on one GPU, folder or host (not the event's id,
    so that an alert that resolves and fires again counts as the same one)."""
    return (event.host, event.rule, event.gpu_uuid or event.gpu_index, event.subject)


class Dispatcher:
    """Sends alert events to the log and to every configured channel (module docstring).

    ``channels`` defaults to those of ``cfg`` (``channels_from_config``);
    ``clock`` (monotonic seconds) is injected by tests of the rate limit.
    """

    def __init__(self, cfg: Any, *, channels: list[Channel] | None = None, env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic, queue_size: int = QUEUE_SIZE) -> None:
        self._stop = threading.Event()
        self.log = LogChannel()
        self.channels = channels if channels is not None else channels_from_config(
            cfg, os.environ if env is None else env, wait=self._stop.wait)
        self.active = [c for c in self.channels if c.ready() is None]
        self.min_interval_secs = float(cfg.get("alerts.notify_min_interval_secs"))
        self.clock = clock
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._last: dict[tuple, float] = {}  # (alert_key, channel name) -> clock of its last firing told
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._worker: threading.Thread | None = None
        self._closed = False

    def __call__(self, event: AlertEvent) -> None:
        """A dispatcher is a sink: ``Callable[[AlertEvent], None]``."""
        self.send(event)

    def send(self, event: AlertEvent) -> None:
        """Log the event and queue it for the channels that are due; never blocks, never raises."""
        try:
            due = self._due(event)
            held = [c.name for c in self.active if c not in due]
            self.log.deliver(event, f" [not sent to {', '.join(held)}: sent less than "
                                    f"{self.min_interval_secs:g} s ago]" if held else "")
            if not due:
                return
            with self._lock:
                if self._closed:
                    log.warning("alert %s %s: not sent to %s, notifications are closed",
                                visible(event.rule), event.state, ", ".join(c.name for c in due))
                    return
                self._queue.put_nowait((event, due))
                self._pending += 1
                if self._worker is None:
                    self._worker = threading.Thread(target=self._run, name="gpm-alerts", daemon=True)
                    self._worker.start()
        except queue.Full:
            log.warning("alert %s %s: dropped for %s, %d notifications are waiting already",
                        visible(event.rule), event.state, ", ".join(c.name for c in due), self._queue.maxsize)
        except Exception as err:  # noqa: BLE001 - a notification never ends a sample
            log.error("alert %s: not sent: %s", visible(event.rule), type(err).__name__)

    def _due(self, event: AlertEvent) -> list[Channel]:
        """The active channels that may tell this event now. The interval runs
        from the last firing told: a resolution goes, and restarts nothing."""
        now = self.clock()
        key = alert_key(event)
        due = []
        with self._lock:
            for channel in self.active:
                last = self._last.get((key, channel.name))
                if event.state == "resolved":
                    due.append(channel)
                elif last is None or now - last >= self.min_interval_secs:
                    self._last[(key, channel.name)] = now
                    due.append(channel)
        return due

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            event, channels = item
            for channel in channels:
                if self._stop.is_set():
                    break
                deliver(channel, event)
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def close(self, timeout: float = CLOSE_SECS) -> bool:
        """Wait up to ``timeout`` seconds for queued notifications; True when all went.

        Then stop: a hook still running is killed, a webhook's retries stop,
        and later events are only logged.
        """
        with self._idle:
            self._closed = True
            done = self._idle.wait_for(lambda: self._pending == 0, timeout)
            left = self._pending
        if not done:
            log.warning("alerts: %d notification%s not delivered within %g s, given up",
                        left, "" if left == 1 else "s", timeout)
            self._stop.set()
            for channel in self.channels:
                channel.abort()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        return done

    def test(self, event: AlertEvent) -> list[Outcome]:
        """Send ``event`` through the log and every channel now, in this thread, and
        say what each did (``gpm alerts test``); no rate limit."""
        out = [_outcome(self.log, event)]
        for channel in self.channels:
            why = channel.ready()
            if why is None:
                out.append(_outcome(channel, event))
            else:
                status, _, detail = why.partition(": ")
                out.append(Outcome(channel.name, status, detail))
        return out


def deliver(channel: Channel, event: AlertEvent) -> bool:
    """One delivery; a failure is a log line naming the channel, never an exception."""
    try:
        channel.deliver(event)
        return True
    except DeliveryError as err:
        log.warning("alert %s %s: %s failed: %s", visible(event.rule), event.state, channel.name, err)
    except Exception as err:  # noqa: BLE001 - a bug in a channel must not stop the others
        # Only its kind: the text of an unexpected error may quote the webhook's URL.
        log.error("alert %s %s: %s failed: %s", visible(event.rule), event.state, channel.name,
                  type(err).__name__)
    return False


def _outcome(channel: Channel, event: AlertEvent) -> Outcome:
    try:
        channel.deliver(event)
    except DeliveryError as err:
        return Outcome(channel.name, "failed", str(err))
    except Exception as err:  # noqa: BLE001 - reported, as any other failure
        return Outcome(channel.name, "failed", type(err).__name__)
    return Outcome(channel.name, "ok")
