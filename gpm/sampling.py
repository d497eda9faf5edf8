"""One sampling step, shared by ``gpm sample``, the daemon and the exporters.

read every GPU -> enrich (process classification) -> store -> alerts, all in
one place so the daemon and the cron command can never drift apart. The
alert rules (gpm.alerts) are evaluated in the sample's transaction; their
events go to the sampler's ``alert_sinks`` after the commit.
"""

from __future__ import annotations

import sqlite3
from dataclasses import KW_ONLY, dataclass, field
from typing import Callable

from gpm.alerts.sampled import SampleAlerts
from gpm.alerts.sinks import Sink, default_sinks, tell
from gpm.classify.live import Classifier, enrich_samples
from gpm.config import Config
from gpm.gpu.sample import GpuSample
from gpm.gpu.reader import GpuReader, open_reader
from gpm.store.process_events import save_process_events
from gpm.store.samples import GpuIds, save_in_transaction

# enrich(samples, sampler) mutates samples in place (e.g. classify processes).
Enricher = Callable[[list[GpuSample], "Sampler"], None]
# save(conn, host, samples, gpu_ids) runs inside the sample's transaction.
Saver = Callable[[sqlite3.Connection, str, list[GpuSample], dict[int, int]], None]


def classify_processes(samples: list[GpuSample], sampler: "Sampler") -> None:
    """Classify the processes of a sample (gpm.classify), when it has any."""
    if any(s.processes for s in samples):
        enrich_samples(samples, sampler)


def default_enrichers() -> list[Enricher]:
    return [classify_processes]


def default_savers() -> list[Saver]:
    return [save_process_events]


@dataclass(eq=False)
class Sampler:
    """Holds an open reader (and database) across samples.

    The cron path builds one, samples once and closes it; the daemon keeps
    one for its whole life, which keeps NVML initialised and the GPU ids cached.
    ``classifier`` is the classifying enricher's cache of known processes,
    made on first use.

    ``alerts`` evaluates the alert rules on every stored sample (made from
    ``cfg`` unless given; ``interval_secs`` there is the daemon's poll
    interval, None for cron); each event then goes to every one of
    ``alert_sinks`` (default: a log line), a list callers extend with their
    channels. ``watch_xid`` reads NVML's Xid events (the daemon).
    """

    cfg: Config
    conn: sqlite3.Connection | None = None
    _: KW_ONLY
    reader: GpuReader | None = None
    enrichers: list[Enricher] = field(default_factory=default_enrichers)
    savers: list[Saver] = field(default_factory=default_savers)
    host: str = ""
    classifier: Classifier | None = None
    alerts: SampleAlerts | None = None
    alert_sinks: list[Sink] = field(default_factory=default_sinks)
    watch_xid: bool = False
    _ids: GpuIds = field(default_factory=GpuIds, init=False, repr=False)

    def __post_init__(self) -> None:
        self.host = self.host or self.cfg.hostname
        if self.alerts is None:
            self.alerts = SampleAlerts.from_config(self.cfg)

    def open(self) -> "Sampler":
        if self.reader is None:
            self.reader = open_reader(self.cfg, watch_xid=self.watch_xid)
        return self

    def sample(self, *, store: bool = True) -> list[GpuSample]:
        """Read, enrich and (optionally) store one sample of every GPU."""
        self.open()
        assert self.reader is not None
        samples = self.reader.read()
        for enrich in self.enrichers:
            enrich(samples, self)
        if store and self.conn is not None and samples:
            self.store(samples)
        return samples

    def store(self, samples: list[GpuSample]) -> None:
        assert self.conn is not None and self.alerts is not None
        with self._ids.transaction(self.conn):
            previous_ms = self.alerts.before_store(self.conn, self.host)
            gpu_ids = save_in_transaction(self.conn, self.host, samples, self._ids)
            for save in self.savers:
                save(self.conn, self.host, samples, gpu_ids)
            events = self.alerts.evaluate(self.conn, self.host, samples, previous_ms)
        tell(self.alert_sinks, events)

    def use(self, conn: sqlite3.Connection) -> None:
        """Write to another database from now on (#12.5): the GPU ids cached
        name rows of the old one."""
        self.conn = conn
        self._ids = GpuIds()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
