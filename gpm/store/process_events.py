"""Save the processes of each sample into ``process_events`` (see schema_classify).

Runs inside the sample's transaction (a saver of ``gpm.sampling``), so a
sample and its process rows are stored together or not at all. Saving the
same sample twice changes nothing: a run already seen at this timestamp is
left alone.
"""

from __future__ import annotations

import json
import logging
import sqlite3

from gpm.gpu.sample import GpuProcess, GpuSample

MAX_GAP_MS = 10 * 60 * 1000  # longer gaps mean gpm was not sampling: not counted


def _previous(conn: sqlite3.Connection, gpu_id: int, ts_ms: int) -> tuple[int, float | None] | None:
    row = conn.execute(
        "SELECT ts_ms, energy_millijoules FROM gpu_metrics WHERE gpu_id = ? AND ts_ms < ? "
        "ORDER BY ts_ms DESC LIMIT 1",
        (gpu_id, ts_ms),
    ).fetchone()
    return None if row is None else (row[0], None if row[1] is None else row[1] / 1000)


def _interval_energy(s: GpuSample, prev: tuple[int, float | None] | None) -> tuple[int | None, float]:
    """(interval start ms or None, joules the GPU used in it)."""
    if prev is None or s.ts_ms - prev[0] > MAX_GAP_MS or s.ts_ms <= prev[0]:
        return None, 0.0
    start, energy_before = prev
    if s.energy_joules is not None and energy_before is not None and s.energy_joules >= energy_before:
        return start, s.energy_joules - energy_before
    if s.power_watts is not None:
        return start, s.power_watts * (s.ts_ms - start) / 1000
    return start, 0.0


def _shares(procs: list[GpuProcess], ran_ms: dict[int, int]) -> dict[int, float]:
    """Each process's weight in the interval (sums to 1 unless nobody ran)."""
    if any(p.sm_utilization_percent for p in procs):
        base = {p.pid: float(p.sm_utilization_percent or 0) for p in procs}
    elif any(p.used_memory_bytes for p in procs):
        base = {p.pid: float(p.used_memory_bytes or 0) for p in procs}
    else:
        base = {p.pid: 1.0 for p in procs}
    weights = {pid: w * ran_ms.get(pid, 0) for pid, w in base.items()}
    total = sum(weights.values())
    return {pid: (w / total if total else 0.0) for pid, w in weights.items()}


def save_process_events(conn: sqlite3.Connection, host: str, samples: list[GpuSample],
                        gpu_ids: dict[int, int]) -> None:
    for s in samples:
        if not s.ok or not s.processes or s.index not in gpu_ids:
            continue
        gpu_id = gpu_ids[s.index]
        start, joules = _interval_energy(s, _previous(conn, gpu_id, s.ts_ms))
        ran_ms: dict[int, int] = {}
        for p in s.processes:
            began = p.details.start_time_ms if p.details else None
            if start is None:
                ran_ms[p.pid] = 0
            else:
                ran_ms[p.pid] = max(0, s.ts_ms - max(start, began or start))
        shares = _shares(s.processes, ran_ms)
        for p in s.processes:
            _save_guarded(conn, gpu_id, s.ts_ms, p, ran_ms[p.pid] / 1000, joules * shares[p.pid])


# What one process's values can make SQLite refuse while binding them (before
# anything is written): text it cannot encode, a number it cannot hold.
_BAD_VALUE = (UnicodeError, ValueError, OverflowError, TypeError, sqlite3.InterfaceError)


def _save_guarded(conn: sqlite3.Connection, gpu_id: int, ts_ms: int, p: GpuProcess,
                  seconds: float, joules: float) -> None:
    """``_save_one``, where a value of one process that cannot be stored costs
    that process's details, never the sample (#12.2): the GPU rows and the
    other processes are stored all the same."""
    try:
        _save_one(conn, gpu_id, ts_ms, p, seconds, joules)
    except _BAD_VALUE as err:
        logging.getLogger(__name__).warning(
            "process %s on GPU row %s: details not storable (%s: %s); stored without them",
            p.pid, gpu_id, type(err).__name__, err)
        bare = GpuProcess(p.pid, used_memory_bytes=p.used_memory_bytes, type=p.type,
                          sm_utilization_percent=p.sm_utilization_percent, category=p.category,
                          reason="details not storable")
        _save_one(conn, gpu_id, ts_ms, bare, seconds, joules)


def _save_one(conn: sqlite3.Connection, gpu_id: int, ts_ms: int, p: GpuProcess,
              seconds: float, joules: float) -> None:
    d = p.details
    start_ms = d.start_time_ms if d else None
    row = conn.execute(
        "SELECT id, last_seen_ms FROM process_events WHERE gpu_id = ? AND pid = ? AND start_time_ms IS ? "
        "AND last_seen_ms >= ? ORDER BY last_seen_ms DESC LIMIT 1",
        # A run with a known start time continues however long gpm paused;
        # one without is taken to be the same process only across short gaps.
        (gpu_id, p.pid, start_ms, 0 if start_ms is not None else ts_ms - MAX_GAP_MS),
    ).fetchone()
    memory = p.used_memory_bytes
    category = p.category or "general_compute"
    if row is None:
        conn.execute(
            """INSERT INTO process_events (gpu_id, pid, start_time_ms, name, exe, cmdline, user,
               category, label, reason, first_seen_ms, last_seen_ms, samples, gpu_seconds,
               max_used_memory_bytes, used_memory_byte_seconds, energy_joules)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)""",
            (gpu_id, p.pid, start_ms, p.name, d.exe if d else None,
             json.dumps(d.cmdline) if d and d.cmdline is not None else None, d.user if d else None,
             category, p.label, p.reason, ts_ms, ts_ms, seconds, memory,
             (memory or 0) * seconds, joules),
        )
        return
    row_id, last_seen = row
    if ts_ms == last_seen:
        return  # this sample is already counted (a retried run saving it again)
    # An earlier sample is a clock set back (the samples of gpm's own time are
    # stored whole, once): counted all the same, without moving the run's span inward.
    conn.execute(
        """UPDATE process_events SET first_seen_ms = MIN(first_seen_ms, ?), last_seen_ms = MAX(last_seen_ms, ?),
           samples = samples + 1,
           gpu_seconds = gpu_seconds + ?, energy_joules = energy_joules + ?,
           used_memory_byte_seconds = used_memory_byte_seconds + ?,
           max_used_memory_bytes = MAX(COALESCE(max_used_memory_bytes, ?), COALESCE(?, max_used_memory_bytes)),
           category = ?, label = ?, reason = ?, name = COALESCE(?, name)
           WHERE id = ?""",
        (ts_ms, ts_ms, seconds, joules, (memory or 0) * seconds, memory, memory, category, p.label, p.reason,
         p.name, row_id),
    )

