"""The report's one rollup of ``gpu_metrics``: one row per GPU and minute.

``gpm report`` never reads millions of raw samples when it can help it: each
closed hour of ``gpu_metrics`` is rolled up once to one row per GPU and
minute (``report_minutes``: counts, sums, extremes, first and last sample,
the energy counter's positive steps) and a utilization histogram per GPU
(``report_hist``, for the exact p95); ``report_hours`` records which hours
are rolled up, with the fingerprint that says whether an hour is still
current (its first and last sample and the busy threshold). See
``gpm.report.rollup`` for why minutes keep every figure exact; archived days
keep the same rollup beside their Parquet files.

Everything here is sqlite3 alone (no Polars), so the write path keeps the
tables current: ``gpm sample`` calls ``refresh`` at its end (one indexed
query when nothing closed since its last run), the daemon runs it as its
``rollup`` job and ``gpm archive`` before it moves rows, so a report finds
the past hours rolled up and reads ~1,300 rows per GPU-day instead of 86,400.

No race with `gpm archive` by construction: an hour is rolled up inside one
read transaction (its fingerprint and its rows from one snapshot) and
stored only if, inside the write transaction, its fingerprint is still the
same; a reader uses a rolled-up hour only while its rows are in the same
snapshot with that fingerprint (``current_hours``), so a rollup whose rows
were archived meanwhile is never used (nor counted twice).
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Callable, Iterable, Iterator

from gpm.gpu.sample import THROTTLE_REASONS
from gpm.store.db import write

BUCKET_MS = 60_000
HOUR_MS = 3_600_000
# An hour is reduced only once it has been over this long: the sampler may
# still be writing the current one.
CLOSED_AFTER_MS = 5 * 60_000

# Reasons that mean "the GPU was held back"; idle, application clocks,
# display clocks and sync boost are not throttling.
THROTTLING = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown",
              "hw_thermal_slowdown", "hw_power_brake_slowdown")
THROTTLING_MASK = sum(THROTTLE_REASONS[name] for name in THROTTLING)

# report_minutes columns after (minute, gpu_id), in table order.
MINUTE_COLUMNS = (
    "n", "first_ts_ms", "last_ts_ms", "util_n", "util_sum", "busy_n", "temp_n", "temp_sum", "temp_max",
    "mem_max", "power_n", "power_sum_mw", "energy_n", "energy_within_mj", "thr_n", "thr_any_n",
    *[f"thr_{name}_n" for name in THROTTLING], "power_first_mw", "energy_first_mj", "energy_last_mj",
)


def _throttle_sql() -> str:
    parts = [f"sum((throttle_reasons & {THROTTLING_MASK}) != 0) AS thr_any_n"]
    parts += [f"sum((throttle_reasons & {THROTTLE_REASONS[name]}) != 0) AS thr_{name}_n"
              for name in THROTTLING]
    return ",\n        ".join(parts)


_BUCKETS_SQL = f"""
WITH b AS (
    SELECT gpu_id, ts_ms / {BUCKET_MS} AS minute, count(*) AS n,
        min(ts_ms) AS first_ts_ms, max(ts_ms) AS last_ts_ms,
        count(utilization_gpu_percent) AS util_n, sum(utilization_gpu_percent) AS util_sum,
        sum(utilization_gpu_percent > :busy) AS busy_n,
        count(temperature_celsius) AS temp_n, sum(temperature_celsius) AS temp_sum,
        max(temperature_celsius) AS temp_max,
        max(memory_used_bytes) AS mem_max,
        count(power_milliwatts) AS power_n, sum(power_milliwatts) AS power_sum_mw,
        count(energy_millijoules) AS energy_n,
        min(energy_millijoules) AS energy_min_mj, max(energy_millijoules) AS energy_max_mj,
        count(throttle_reasons) AS thr_n,
        {_throttle_sql()}
    FROM gpu_metrics
    WHERE ts_ms >= :since AND ts_ms < :until
    GROUP BY gpu_id, minute
)
SELECT b.minute, b.gpu_id, b.n, b.first_ts_ms, b.last_ts_ms, b.util_n, b.util_sum, b.busy_n,
       b.temp_n, b.temp_sum, b.temp_max, b.mem_max, b.power_n, b.power_sum_mw, b.energy_n,
       NULL AS energy_within_mj, b.thr_n, b.thr_any_n, {", ".join(f"b.thr_{r}_n" for r in THROTTLING)},
       f.power_milliwatts, f.energy_millijoules, l.energy_millijoules, b.energy_min_mj, b.energy_max_mj
FROM b
JOIN gpu_metrics f ON f.ts_ms = b.first_ts_ms AND f.gpu_id = b.gpu_id
JOIN gpu_metrics l ON l.ts_ms = b.last_ts_ms AND l.gpu_id = b.gpu_id
"""

_HISTOGRAM_SQL = """
SELECT gpu_id, utilization_gpu_percent AS util, count(*) AS n
FROM gpu_metrics
WHERE ts_ms >= :since AND ts_ms < :until AND utilization_gpu_percent IS NOT NULL
GROUP BY gpu_id, util
"""

_WITHIN = 2 + MINUTE_COLUMNS.index("energy_within_mj")
_FIRST_E = 2 + MINUTE_COLUMNS.index("energy_first_mj")
_LAST_E = 2 + MINUTE_COLUMNS.index("energy_last_mj")
_FIRST_TS = 2 + MINUTE_COLUMNS.index("first_ts_ms")
_LAST_TS = 2 + MINUTE_COLUMNS.index("last_ts_ms")


def positive_steps(values: Iterable[int | None]) -> int:
    """The sum of a counter's increases (a reset, a negative step, is skipped)."""
    total, prev = 0, None
    for v in values:
        if v is None:
            continue
        if prev is not None and v > prev:
            total += v - prev
        prev = v
    return total


def reduce_span(conn: sqlite3.Connection, since_ms: int, until_ms: int,
                busy_threshold: float) -> tuple[list[tuple], list[tuple]]:
    """Raw rows of [since, until), all GPUs -> (minute rows, histogram rows).

    Minute rows are ``(minute, gpu_id, *MINUTE_COLUMNS)``; histogram rows
    ``(gpu_id, util, n)``.
    """
    p = {"busy": busy_threshold, "since": since_ms, "until": until_ms}
    out = []
    for r in conn.execute(_BUCKETS_SQL, p):
        row, (e_min, e_max) = list(r[:-2]), r[-2:]
        if e_max is not None:
            if row[_FIRST_E] == e_min and row[_LAST_E] == e_max:
                row[_WITHIN] = e_max - e_min
            else:
                # A counter that is not monotonic in this minute (a reset, a
                # missing reading): its positive steps, from its rows.
                values = conn.execute(
                    "SELECT energy_millijoules FROM gpu_metrics WHERE gpu_id = ? AND ts_ms >= ? "
                    "AND ts_ms <= ? ORDER BY ts_ms", (row[1], row[_FIRST_TS], row[_LAST_TS]),
                ).fetchall()
                row[_WITHIN] = positive_steps(v[0] for v in values)
        out.append(tuple(row))
    return out, conn.execute(_HISTOGRAM_SQL, p).fetchall()


def first_and_last(conn: sqlite3.Connection, since_ms: int, until_ms: int) -> tuple[int | None, int | None]:
    """First and last sample of [since, until) (two index lookups: a lone min() or max() is one)."""
    return tuple(conn.execute(  # type: ignore[return-value]
        f"SELECT {agg}(ts_ms) FROM gpu_metrics WHERE ts_ms >= ? AND ts_ms < ?", (since_ms, until_ms),
    ).fetchone()[0] for agg in ("min", "max"))


def fingerprint(conn: sqlite3.Connection, hour: int) -> tuple[int | None, int | None]:
    """First and last sample of the hour."""
    return first_and_last(conn, hour, hour + HOUR_MS)


@contextlib.contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every query inside sees the same committed state
    (in WAL mode a concurrent `gpm archive` commit is not seen half-way)."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def store_hours(conn: sqlite3.Connection, busy_threshold: float, now_ms: int,
                hours: list[tuple[int, tuple, list[tuple], list[tuple]]]) -> int:
    """Replace the rollups of whole hours: ``(hour_ms, fingerprint, minute rows, histogram rows)``;
    return how many were stored. The caller holds the write transaction; an
    hour whose rows changed since it was rolled up (its fingerprint differs
    now: rows archived or written meanwhile) is not stored."""
    stored = 0
    for hour, fp, rows, hist in hours:
        if fingerprint(conn, hour) != tuple(fp):
            continue
        drop_hour(conn, hour)
        conn.execute("INSERT INTO report_hours (hour_ms, first_ts_ms, last_ts_ms, busy_threshold_percent, "
                     "computed_ms) VALUES (?, ?, ?, ?, ?)", (hour, fp[0], fp[1], busy_threshold, now_ms))
        conn.executemany(f"INSERT INTO report_minutes (minute, gpu_id, {', '.join(MINUTE_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * (2 + len(MINUTE_COLUMNS)))})", rows)
        conn.executemany("INSERT INTO report_hist (hour_ms, gpu_id, util, n) VALUES (?, ?, ?, ?)",
                         [(hour, *h) for h in hist])
        stored += 1
    return stored


def drop_hour(conn: sqlite3.Connection, hour: int) -> None:
    conn.execute("DELETE FROM report_hours WHERE hour_ms = ?", (hour,))
    conn.execute("DELETE FROM report_minutes WHERE minute >= ? AND minute < ?",
                 (hour // BUCKET_MS, (hour + HOUR_MS) // BUCKET_MS))
    conn.execute("DELETE FROM report_hist WHERE hour_ms = ?", (hour,))


def drop_moved_hours(conn: sqlite3.Connection, since_ms: int, until_ms: int) -> int:
    """Drop the rollups of hours of [since, until) that have no row left in
    SQLite (`gpm archive` moved them; the archive keeps its own rollup)."""
    with write(conn):
        hours = [h for (h,) in conn.execute("SELECT hour_ms FROM report_hours WHERE hour_ms >= ? AND hour_ms < ?",
                                            (since_ms, until_ms)).fetchall() if fingerprint(conn, h)[0] is None]
        for hour in hours:
            drop_hour(conn, hour)
    return len(hours)


def closed_until(now_ms: int) -> int:
    """The end of the last closed hour."""
    return (now_ms - CLOSED_AFTER_MS) // HOUR_MS * HOUR_MS


def current_hours(conn: sqlite3.Connection, hours: list[int], busy_threshold: float) -> tuple[list[int], list[int]]:
    """(hours whose stored rollup matches their rows, hours with rows but no current rollup).
    Hours without rows in SQLite are in neither. Run it inside the reader's ``snapshot``."""
    if not hours:
        return [], []
    # Only the hours between the range's first and last row: a year's report
    # over a database that keeps days looked up 8,736 hours, twice (#14).
    first, last = first_and_last(conn, hours[0], hours[-1] + HOUR_MS)
    if first is None:
        return [], []
    hours = [hour for hour in hours if first - HOUR_MS < hour <= last]
    stored = {r[0]: r[1:] for r in conn.execute(
        "SELECT hour_ms, first_ts_ms, last_ts_ms, busy_threshold_percent FROM report_hours "
        "WHERE hour_ms >= ? AND hour_ms <= ?", (hours[0], hours[-1]))}
    current, missing = [], []
    for hour in hours:
        fp = fingerprint(conn, hour)
        if fp[0] is None:
            continue
        (current if stored.get(hour) == (*fp, busy_threshold) else missing).append(hour)
    return current, missing


def roll_up(conn: sqlite3.Connection, hours: list[int], busy_threshold: float, *, now_ms: int,
            progress: Callable[[int], None] | None = None) -> int:
    """Roll up the given closed hours and store them; return how many were stored.

    Each hour is read in one snapshot (its fingerprint and rows agree) and
    stored in a short write transaction that checks the fingerprint again.
    """
    done = 0
    for hour in hours:
        with snapshot(conn):
            fp = fingerprint(conn, hour)
            rolled = reduce_span(conn, hour, hour + HOUR_MS, busy_threshold) if fp[0] is not None else None
        if rolled is not None:
            with write(conn):
                done += store_hours(conn, busy_threshold, now_ms, [(hour, fp, *rolled)])
        if progress is not None:
            progress(1)
    return done


def refresh(conn: sqlite3.Connection, busy_threshold: float, *, now_ms: int,
            max_hours: int | None = None) -> int:
    """Roll up the closed hours after the last rolled-up one; return how many were rolled up.

    One indexed query when nothing closed since the last call (the common
    case on every `gpm sample`); else two more per hour with samples plus
    the rollup of its rows. ``max_hours`` bounds one call's work (a
    backlog, e.g. a database from before this table, is taken oldest first
    over several calls).
    """
    until = closed_until(now_ms)
    last = conn.execute("SELECT max(hour_ms) FROM report_hours").fetchone()[0]
    start = 0 if last is None else last + HOUR_MS
    if start >= until:
        return 0
    todo = []
    hour = start
    while hour < until and (max_hours is None or len(todo) < max_hours):
        nxt = conn.execute("SELECT min(ts_ms) FROM gpu_metrics WHERE ts_ms >= ?", (hour,)).fetchone()[0]
        if nxt is None or nxt // HOUR_MS * HOUR_MS >= until:
            break
        hour = nxt // HOUR_MS * HOUR_MS
        todo.append(hour)
        hour += HOUR_MS
    return roll_up(conn, todo, busy_threshold, now_ms=now_ms)
