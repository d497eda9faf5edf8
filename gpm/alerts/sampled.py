"""The alerts of one stored sample, for the daemon and `gpm sample` alike.

``SampleAlerts.evaluate`` runs inside the sample's transaction (gpm.sampling),
after the rows are written, so the sample, the state and the events are
stored together or not at all; the sampler tells its sinks after the commit.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gpm.alerts.conditions import (
    disk_observations, gpu_observations, missing_gpus, stall_observations, typical_gap_secs, xid_observations,
)
from gpm.alerts.engine import AlertEngine
from gpm.alerts.event import AlertEvent
from gpm.config import Config
from gpm.gpu.sample import GpuSample, now_ms
from gpm.store.alerts import last_sample_ms


@dataclass(eq=False)
class SampleAlerts:
    """Alert rules over each stored sample of one sampler.

    ``interval_secs``: the sampler's own interval (the daemon's poll
    interval), or None for a one-shot `gpm sample` from cron, whose interval
    is the typical gap between the samples stored before. A live sampler
    (interval given) does not count the gap before its first sample as a
    stall: that was the daemon being stopped, which its own logs tell.
    ``clock`` dates a stall's end: a sample is timed when its read began,
    and a read that hung began before the stall was noticed; the next
    sample's gap is then counted from when that one was stored.
    """

    engine: AlertEngine
    folders: list[tuple[str, Path]]
    throttle_reasons: list[str]
    stalled_intervals: int
    interval_secs: float | None = None
    clock: Callable[[], int] = now_ms
    _xids: dict[str, tuple[int, int]] = field(default_factory=dict, init=False, repr=False)
    _stored_ms: int | None = field(default=None, init=False, repr=False)  # when this sampler last stored

    @classmethod
    def from_config(cls, cfg: Config, *, interval_secs: float | None = None) -> "SampleAlerts":
        return cls(AlertEngine.from_config(cfg),
                   [("data folder", Path(cfg.db_path).parent), ("archive folder", Path(cfg.archive_dir))],
                   list(cfg["alerts.throttle_reasons"]), int(cfg["alerts.stalled_intervals"]), interval_secs)

    @property
    def enabled(self) -> bool:
        return self.engine.any_enabled

    def before_store(self, conn: sqlite3.Connection, host: str) -> int | None:
        """When this host stored its previous sample: read in the transaction, before the new rows."""
        return last_sample_ms(conn, host) if self.enabled else None

    def evaluate(self, conn: sqlite3.Connection, host: str, samples: list[GpuSample],
                 previous_ms: int | None) -> list[AlertEvent]:
        if not self.enabled or not samples:
            return []
        now = max(s.ts_ms for s in samples)
        engine = self.engine
        observations = gpu_observations(samples, self.throttle_reasons)
        if engine.enabled("gpu_lost"):
            observations += missing_gpus(conn, host, samples, previous_ms, now)
        if engine.enabled("xid"):
            observations += xid_observations(samples, self._xids, now, engine.rules["xid"].for_secs)
        if engine.enabled("disk_free"):
            observations += disk_observations(self.folders)
        events = engine.evaluate(conn, host, observations, now)
        stored = max(now, self.clock())
        if engine.enabled("sampler_stalled") and previous_ms is not None and previous_ms < now:
            interval = self.interval_secs or typical_gap_secs(conn, host, previous_ms)
            if interval:
                since = max(previous_ms, self._stored_ms or 0)
                stall = stall_observations(since, stored, interval, self.stalled_intervals, stored=True)
                if self.interval_secs is not None and self._stored_ms is None:
                    stall = stall[-1:]  # only resolve what was left firing
                for o in stall:  # one at a time: a stall seen only now fires, then resolves
                    events += engine.evaluate(conn, host, [o], stored)
        self._stored_ms = stored
        return events
