"""A monotonic clock that moves only when a loop waits on it.

``gpm.repeat.ticks``, ``Stopper`` and the daemon's ``Runner`` take a
``clock`` and a ``wait``; given this one's, a schedule runs at full speed and
every run happens at an exact fake time, so tests assert on the times
themselves instead of on gaps between real sleeps, which a loaded machine
stretches (#14.8).
"""

from __future__ import annotations

import threading

REAL_WAIT_SECS = 10.0  # how long a parked loop waits for the test, for real


class FakeClock:
    """Fake time for one loop (one thread).

    A wait moves the time to its end at once; a job that "takes" time calls
    ``advance``. At ``until`` the loop parks: ``parked`` is set and the wait
    blocks for real until the loop is woken (a stop, a new interval). To let a
    parked loop go on, clear ``parked``, move ``until`` on, then wake it.
    """

    def __init__(self, until: float, start: float = 0.0) -> None:
        self.now = start
        self.until = until
        self.parked = threading.Event()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        if self.now + seconds <= self.until:
            self.now += seconds
            return False
        self.now = self.until
        self.parked.set()
        return event.wait(REAL_WAIT_SECS)
