"""Drift-free repetition and clean stops on SIGTERM/SIGINT.

``gpm sample --follow``, ``gpm ollama-watch --follow`` and the daemon all
repeat work on a fixed grid (start + k * interval) instead of sleeping
"interval" after each run, so a slow run never shifts later samples. A signal
only sets an event: the work in hand (a database write) finishes first.

Every loop reads the time from an injected ``clock`` and waits through an
injected ``wait``, so tests run a schedule on a fake clock and check its exact
times instead of measuring gaps between real sleeps (#14.8).
"""

from __future__ import annotations

import _thread
import itertools
import signal
import threading
import time
from typing import Callable, Iterator

Wait = Callable[[threading.Event, float], bool]


def wait(event: threading.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; True when it was set. The real
    wait, the default wherever a fake one can be injected."""
    return event.wait(seconds)


def set_from_signal_handler(event: threading.Event) -> None:
    """Set ``event`` from a signal handler without waiting for its lock.

    A handler runs in the main thread between two of its bytecodes, which
    can be inside that very event's ``with self._cond`` (``Event.wait`` on
    its way in or out, ``Event.clear``): ``event.set()`` there waits for a
    lock its own thread holds, for ever, and SIGTERM never stops the process
    (more likely on a busy machine, where the main thread spends longer in
    there). A new thread sets it as soon as the main thread lets go; the
    low-level one, because ``threading.Thread.start`` takes locks too.
    """
    _thread.start_new_thread(event.set, ())


class Stopper:
    """Turns SIGTERM/SIGINT into a flag that sleeping loops wake up for."""

    def __init__(self, wait: Wait = wait) -> None:
        self.event = threading.Event()
        self.wait = wait
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def install(self, signals=(signal.SIGTERM, signal.SIGINT)) -> "Stopper":
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.signal = signum
        set_from_signal_handler(self.event)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    @property
    def stopped(self) -> bool:
        return self.signal is not None or self.event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when woken by a stop."""
        if seconds <= 0:
            return self.stopped
        return self.wait(self.event, seconds)

    def __enter__(self) -> "Stopper":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()


def ticks(interval: float, count: int | None, stopper: Stopper,
          clock: Callable[[], float] = time.monotonic) -> Iterator[int]:
    """Yield 0, 1, 2... on the grid start + k*interval until count runs or a stop.

    A run that overran its slot skips the missed slots rather than bursting
    to catch up (a sample is a reading of "now", not a debt), but ``count``
    runs still happen: ``--count 6`` means six samples.
    """
    start = clock()
    slot = 0
    for run in itertools.count():
        if (count is not None and run >= count) or stopper.stopped:
            return
        yield run
        if count is not None and run + 1 >= count:
            return
        slot += 1
        now = clock()
        if now > start + slot * interval:
            slot = int((now - start) // interval) + 1
        if stopper.sleep(start + slot * interval - clock()):
            return
