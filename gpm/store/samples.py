"""Save GPU samples: upsert the GPU's identity, append its metrics.

A sample's ``memory_total_bytes`` goes to ``gpus`` (it is the GPU's, not
the moment's); ``power_limit_watts`` goes to both, since users change power
limits at run time and the report needs the limit of each moment.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Iterable, Iterator
from urllib.parse import quote

from gpm.gpu.sample import GpuSample
from gpm.store.db import write
from gpm.store.schema_core import SOURCE_CODES

_METRIC_COLUMNS = """ts_ms, gpu_id, source, status, utilization_gpu_percent, utilization_memory_percent,
    memory_used_bytes, temperature_celsius, power_milliwatts,
    power_limit_milliwatts, energy_millijoules, sm_clock_mhz, memory_clock_mhz,
    fan_percent, pstate, throttle_reasons"""
_METRIC_SQL = f"INSERT OR IGNORE INTO gpu_metrics ({_METRIC_COLUMNS}) VALUES ({', '.join('?' * 16)})"
_STORED_SQL = f"SELECT {_METRIC_COLUMNS} FROM gpu_metrics WHERE ts_ms = ? AND gpu_id = ?"


_UNNAMED = "index:"  # gpus.uuid of a GPU never seen with its UUID: "index:1"


def gpu_key(sample: GpuSample) -> str:
    """The GPU's stable identity: its UUID, or its index when the UUID is unknown."""
    return sample.uuid or f"{_UNNAMED}{sample.index}"


def recall_identity(conn: sqlite3.Connection, host: str, sample: GpuSample) -> None:
    """Give a failed sample the identity this database knows for its GPU (#13.2).

    A GPU lost before NVML hands out its handle (``GPU_IS_LOST``) says
    nothing of itself, and a new `gpm sample` has only the database to know
    it by: stored as ``index:1``, it became a second GPU named "?" and cut
    the real one's history in two. The GPU last seen at that index (and PCI
    bus id, when the failed read still gave one) on this host is the one
    that failed: the sample takes its UUID, name, bus id and serial, never
    readings. When the database knows no GPU there, nothing is invented.
    """
    if sample.ok:
        return
    if sample.uuid:
        where, args = "uuid = ?", (sample.uuid,)
    else:
        where = f"gpu_index = ? AND uuid NOT LIKE '{_UNNAMED}%' AND (? IS NULL OR pci_bus_id = ?)"
        args = (sample.index, sample.pci_bus_id, sample.pci_bus_id)
    row = conn.execute(
        f"SELECT uuid, name, pci_bus_id, serial FROM gpus WHERE host = ? AND {where} "
        "ORDER BY last_seen_ms DESC LIMIT 1", (host, *args)).fetchone()
    if row is not None:
        sample.uuid, sample.name, sample.pci_bus_id, sample.serial = (
            mine if mine is not None else known
            for mine, known in zip((sample.uuid, sample.name, sample.pci_bus_id, sample.serial), row))


def _milli(value: float | None) -> int | None:
    return None if value is None else round(value * 1000)


class GpuIds:
    """Caches gpus.id per (host, uuid) so a daemon does not look it up each sample.

    Only what a committed transaction wrote is cached (#12.1): an id learnt
    inside a transaction that rolls back (a full disk) names a ``gpus`` row
    that no longer exists, and every later sample would then fail its
    foreign key. So ``resolve`` stages what it learns and ``transaction``
    keeps it only once the COMMIT went through.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], tuple[int, tuple]] = {}  # key -> (gpu_id, identity)
        self._staged: dict[tuple[str, str], tuple[int, tuple]] = {}

    @contextlib.contextmanager
    def transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """``write(conn)``; what ``resolve`` learnt in it is kept only if it commits."""
        self._staged = {}
        try:
            with write(conn):
                yield conn
            self._known.update(self._staged)
        finally:
            self._staged = {}

    def resolve(self, conn: sqlite3.Connection, host: str, sample: GpuSample) -> int:
        key = (host, gpu_key(sample))
        identity = (
            sample.index, sample.name, sample.pci_bus_id, sample.serial,
            sample.memory_total_bytes, sample.power_limit_watts,
            sample.driver_version, sample.cuda_version,
        )
        known = self._staged.get(key) or self._known.get(key)
        if known is not None and known[1] == identity:
            # MIN/MAX: a clock set back must not move a GPU's first or last sample inward
            conn.execute("UPDATE gpus SET first_seen_ms = MIN(first_seen_ms, ?), last_seen_ms = MAX(last_seen_ms, ?) "
                         "WHERE id = ?", (sample.ts_ms, sample.ts_ms, known[0]))
            return known[0]
        row = conn.execute("SELECT id FROM gpus WHERE host = ? AND uuid = ?", key).fetchone()
        if row is None and sample.uuid:
            row = _adopt_unnamed(conn, host, sample)
        if row is None:
            gpu_id = conn.execute(
                """INSERT INTO gpus (host, uuid, gpu_index, name, pci_bus_id, serial,
                   memory_total_bytes, power_limit_watts, driver_version, cuda_version,
                   first_seen_ms, last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (*key, *identity, sample.ts_ms, sample.ts_ms),
            ).lastrowid
        else:
            gpu_id = row[0]
            # A failed read knows little: keep what an earlier sample recorded.
            conn.execute(
                """UPDATE gpus SET gpu_index = ?, name = COALESCE(?, name),
                   pci_bus_id = COALESCE(?, pci_bus_id), serial = COALESCE(?, serial),
                   memory_total_bytes = COALESCE(?, memory_total_bytes),
                   power_limit_watts = COALESCE(?, power_limit_watts),
                   driver_version = COALESCE(?, driver_version),
                   cuda_version = COALESCE(?, cuda_version),
                   first_seen_ms = MIN(first_seen_ms, ?), last_seen_ms = MAX(last_seen_ms, ?) WHERE id = ?""",
                (*identity, sample.ts_ms, sample.ts_ms, gpu_id),
            )
        self._staged[key] = (gpu_id, identity)
        return gpu_id


def recall_identities(db_file: str, host: str, samples: Iterable[GpuSample]) -> None:
    """``recall_identity`` for a command that stores nothing (`gpm ps`): the
    database is only read, and one that cannot be read costs only the names."""
    failed = [s for s in samples if not s.ok]
    if not failed or not os.path.exists(db_file):
        return
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(db_file))}?mode=ro", uri=True, timeout=1)
        try:
            for s in failed:
                recall_identity(conn, host, s)
        finally:
            conn.close()
    except sqlite3.Error:
        pass


def _adopt_unnamed(conn: sqlite3.Connection, host: str, sample: GpuSample) -> tuple[int] | None:
    """A GPU seen for the first time with its UUID takes over the ``index:N``
    row its failed reads were stored under (a GPU lost on a new database, then
    back), so its history is one GPU's (#13.2)."""
    row = conn.execute(
        "SELECT id FROM gpus WHERE host = ? AND uuid = ? AND (pci_bus_id IS NULL OR ? IS NULL OR pci_bus_id = ?)",
        (host, f"{_UNNAMED}{sample.index}", sample.pci_bus_id, sample.pci_bus_id)).fetchone()
    if row is not None:
        conn.execute("UPDATE gpus SET uuid = ? WHERE id = ?", (sample.uuid, row[0]))
    return row


def metric_row(gpu_id: int, s: GpuSample) -> tuple:
    return (
        s.ts_ms, gpu_id, SOURCE_CODES[s.source], None if s.ok else s.status,
        s.utilization_gpu_percent, s.utilization_memory_percent,
        s.memory_used_bytes, s.temperature_celsius,
        _milli(s.power_watts), _milli(s.power_limit_watts), _milli(s.energy_joules),
        s.sm_clock_mhz, s.memory_clock_mhz, s.fan_percent, s.pstate, s.throttle_reasons,
    )


def save_samples(
    conn: sqlite3.Connection, host: str, samples: Iterable[GpuSample], ids: GpuIds | None = None
) -> dict[int, int]:
    """Store one sample of every GPU in one transaction; return {index: gpu_id}.

    Savers of other tables (process events, ...) run inside the same
    transaction through ``save_samples_with`` so a sample is stored whole or
    not at all.
    """
    ids = ids or GpuIds()
    with ids.transaction(conn):
        return save_in_transaction(conn, host, samples, ids)


def save_in_transaction(conn: sqlite3.Connection, host: str, samples: Iterable[GpuSample],
                        ids: GpuIds) -> dict[int, int]:
    """``save_samples`` inside a transaction the caller holds (``ids.transaction``), so
    the sampler stores its process events in the same one; return {index: gpu_id}."""
    gpu_ids: dict[int, int] = {}
    for s in samples:
        recall_identity(conn, host, s)
        gpu_id = ids.resolve(conn, host, s)
        gpu_ids[s.index] = gpu_id
        s.ts_ms = _insert_metric(conn, metric_row(gpu_id, s))
    return gpu_ids


def _insert_metric(conn: sqlite3.Connection, row: tuple) -> int:
    """Store one GPU's reading; return the millisecond it is stored at.

    Two samplers (the daemon and a cron `gpm sample`) can read the same GPU
    in the same millisecond, and ``(ts_ms, gpu_id)`` is the key: the later
    one moves to the next free millisecond of that GPU instead of being
    dropped (#12.6; a millisecond is far below any sampling interval). A row
    equal in every column is the same reading saved again (a retry, a
    replay) and is not stored twice.
    """
    ts_ms = row[0]
    while conn.execute(_METRIC_SQL, (ts_ms, *row[1:])).rowcount == 0:
        if conn.execute(_STORED_SQL, (ts_ms, row[1])).fetchone() == (ts_ms, *row[1:]):
            break
        ts_ms += 1
    return ts_ms


def failed_samples(conn: sqlite3.Connection, since_ms: int, until_ms: int,
                   hosts: tuple[str, ...] = ()) -> list[tuple]:
    """(gpu_id, host, gpu_index, uuid, name, ts_ms, status) of every failed sample in
    [since_ms, until_ms), by GPU and time: read through the partial index of failed rows
    (migration 0003), so a week of millions of ok rows is not read (#13.2)."""
    rows = conn.execute(
        "SELECT m.gpu_id, g.host, g.gpu_index, g.uuid, g.name, m.ts_ms, m.status "
        "FROM gpus g JOIN gpu_metrics m ON m.gpu_id = g.id "
        "WHERE m.status IS NOT NULL AND m.ts_ms >= ? AND m.ts_ms < ? ORDER BY m.gpu_id, m.ts_ms",
        (since_ms, until_ms)).fetchall()
    return [r for r in rows if not hosts or r[1] in hosts]


def next_ok_sample(conn: sqlite3.Connection, gpu_id: int, after_ms: int, before_ms: int) -> int | None:
    """The time of the GPU's first ok sample in (after_ms, before_ms), or None: where a failure ended."""
    row = conn.execute("SELECT MIN(ts_ms) FROM gpu_metrics WHERE ts_ms > ? AND ts_ms < ? AND gpu_id = ? "
                       "AND status IS NULL", (after_ms, before_ms, gpu_id)).fetchone()
    return row[0]
