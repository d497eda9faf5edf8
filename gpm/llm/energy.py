"""GPU energy per LLM request and per model, from the GPU energy counter.

For the weekly report (and anyone with the database)::

    from gpm.llm.energy import request_energy, model_energy
    joules = request_energy(conn, since_ms, until_ms)      # {request id: joules or None}
    for m in model_energy(conn, since_ms, until_ms):       # one ModelEnergy per model
        print(m.model, m.energy_joules, m.joules_per_token)

How: each GPU's ``energy_millijoules`` counter gives the energy of every
interval between two consecutive samples. Within an interval power is taken
as constant, so a request gets the part of the interval it overlaps; when
several requests overlap the same stretch of time on the same GPU, that
stretch's energy is split equally among them (fair sharing: two concurrent
streams each pay half). Energy of stretches with no request is nobody's
(idle). Ollama does not say which GPU serves a model, so a request is
counted on every GPU of its host that has an energy counter.

A request's energy is ``None`` (unknown), not a guess, when the samples do
not cover its whole span on some GPU: sampling was off, an interval was
longer than ``max_gap_ms`` or the counter went backwards (driver reload).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import asdict, dataclass

DEFAULT_MAX_GAP_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class ModelEnergy:
    """Energy of one model's requests in a time window."""

    model: str
    requests: int  # requests that started in the window
    measured_requests: int  # of those, how many the GPU samples fully cover
    energy_joules: float  # sum over the measured requests
    completion_tokens: int  # generated tokens of the measured requests that report them
    joules_per_token: float | None  # energy of those requests / their generated tokens

    def to_json(self) -> dict:
        return asdict(self)


def _gpu_intervals(conn: sqlite3.Connection, gpu_id: int, lo: int, hi: int,
                   max_gap_ms: int) -> list[tuple[int, int, float]]:
    """Valid (start_ms, end_ms, joules) intervals of one GPU covering [lo, hi]."""
    first = conn.execute(
        "SELECT MAX(ts_ms) FROM gpu_metrics WHERE gpu_id = ? AND ts_ms <= ? AND energy_millijoules IS NOT NULL",
        (gpu_id, lo),
    ).fetchone()[0]
    last = conn.execute(
        "SELECT MIN(ts_ms) FROM gpu_metrics WHERE gpu_id = ? AND ts_ms >= ? AND energy_millijoules IS NOT NULL",
        (gpu_id, hi),
    ).fetchone()[0]
    rows = conn.execute(
        "SELECT ts_ms, energy_millijoules FROM gpu_metrics WHERE gpu_id = ? AND ts_ms BETWEEN ? AND ? "
        "AND energy_millijoules IS NOT NULL ORDER BY ts_ms",
        (gpu_id, first if first is not None else lo, last if last is not None else hi),
    ).fetchall()
    out = []
    for (t0, e0), (t1, e1) in zip(rows, rows[1:]):
        if t1 > t0 and t1 - t0 <= max_gap_ms and e1 >= e0:
            out.append((t0, t1, (e1 - e0) / 1000.0))
    return out


def _share(intervals: list[tuple[int, int, float]], spans: dict[int, tuple[int, int]]
           ) -> tuple[dict[int, float], dict[int, int]]:
    """Split each interval's energy among the requests active in it; also the ms covered."""
    energy: dict[int, float] = defaultdict(float)
    covered: dict[int, int] = defaultdict(int)
    events: list[tuple[int, int, int]] = []  # (time, order, request id): ends sort before starts
    for rid, (start, end) in spans.items():
        events.append((start, 1, rid))
        events.append((end, 0, rid))
    events.sort()
    active: set[int] = set()
    i = 0
    for t0, t1, joules in intervals:
        while i < len(events) and events[i][0] <= t0:
            _apply(events[i], active)
            i += 1
        rate = joules / (t1 - t0)
        cursor = t0
        while True:
            nxt = events[i][0] if i < len(events) and events[i][0] < t1 else t1
            if nxt > cursor and active:
                part = rate * (nxt - cursor) / len(active)
                for rid in active:
                    energy[rid] += part
                    covered[rid] += nxt - cursor
            cursor = nxt
            if nxt >= t1:
                break
            _apply(events[i], active)
            i += 1
    return energy, covered


def _apply(event: tuple[int, int, int], active: set[int]) -> None:
    _t, kind, rid = event
    if kind == 1:
        active.add(rid)
    else:
        active.discard(rid)


def request_energy(conn: sqlite3.Connection, since_ms: int, until_ms: int, *,
                   max_gap_ms: int = DEFAULT_MAX_GAP_MS) -> dict[int, float | None]:
    """Joules of GPU energy of each request that started in [since_ms, until_ms).

    Keys are ``llm_requests.id``; a value is None when the GPU samples do not
    cover the request (see the module docstring).
    """
    requests = conn.execute(
        "SELECT id, host, ts_ms, end_ms FROM llm_requests WHERE ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms",
        (since_ms, until_ms),
    ).fetchall()
    by_host: dict[str, dict[int, tuple[int, int]]] = defaultdict(dict)
    for rid, host, start, end in requests:
        by_host[host][rid] = (start, max(end, start))
    result: dict[int, float | None] = {rid: None for rid, *_ in requests}
    for host, spans in by_host.items():
        lo = min(s for s, _ in spans.values())
        hi = max(e for _, e in spans.values())
        totals: dict[int, float] = defaultdict(float)
        measured_on_all = set(spans)
        any_gpu = False
        for (gpu_id,) in conn.execute("SELECT id FROM gpus WHERE host = ?", (host,)).fetchall():
            intervals = _gpu_intervals(conn, gpu_id, lo, hi, max_gap_ms)
            if not intervals:
                continue
            any_gpu = True
            energy, covered = _share(intervals, spans)
            for rid, (start, end) in spans.items():
                if _covers(intervals, start, end, covered.get(rid, 0)):
                    totals[rid] += energy.get(rid, 0.0)
                else:
                    measured_on_all.discard(rid)
        if any_gpu:
            for rid in measured_on_all:
                result[rid] = totals[rid]
    return result


def _covers(intervals: list[tuple[int, int, float]], start: int, end: int, covered_ms: int) -> bool:
    if end > start:
        return covered_ms >= end - start
    return any(t0 <= start <= t1 for t0, t1, _ in intervals)


def model_energy(conn: sqlite3.Connection, since_ms: int, until_ms: int, *,
                 max_gap_ms: int = DEFAULT_MAX_GAP_MS) -> list[ModelEnergy]:
    """Per model: requests, measured energy and joules per generated token, most energy first."""
    energy = request_energy(conn, since_ms, until_ms, max_gap_ms=max_gap_ms)
    rows = conn.execute(
        "SELECT id, COALESCE(model, '?'), completion_tokens FROM llm_requests WHERE ts_ms >= ? AND ts_ms < ?",
        (since_ms, until_ms),
    ).fetchall()
    acc: dict[str, list] = {}
    for rid, model, tokens in rows:
        a = acc.setdefault(model, [0, 0, 0.0, 0, 0.0])  # requests, measured, joules, tokens, joules w/ tokens
        a[0] += 1
        joules = energy.get(rid)
        if joules is None:
            continue
        a[1] += 1
        a[2] += joules
        if tokens:
            a[3] += tokens
            a[4] += joules
    out = [
        ModelEnergy(model, n, measured, joules, tokens, (jt / tokens) if tokens else None)
        for model, (n, measured, joules, tokens, jt) in acc.items()
    ]
    return sorted(out, key=lambda m: (-m.energy_joules, m.model))
