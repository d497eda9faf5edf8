"""``weekly_summaries``: each whole ISO week's figures per host, and the trend.

A report over exactly one finished ISO week (with no GPU filter, so the
figures are whole) replaces that week's rows; ``gpm report --weeks N`` reads
them back, computing (and storing) only the weeks still missing.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

from gpm.report.build import Report
from gpm.report.period import Period, local_date, week_bounds
from gpm.store.db import write

_COLUMNS = ("iso_week", "host", "week_start_ms", "week_end_ms", "gpus", "sampled_seconds",
            "coverage_ratio", "gpu_sampled_seconds", "busy_seconds", "utilization_mean_percent",
            "energy_joules", "energy_methods", "throttled_seconds", "gpus_json", "created_ms", "usage_json")


def save_week(conn: sqlite3.Connection, report: Report) -> int:
    """Store the report's per-host figures for its ISO week; return rows written."""
    p = report.period
    if not p.iso_week or p.until_ms > report.generated_ms:
        return 0
    rows = []
    for h in report.hosts:
        if not h["gpus"]:
            continue
        mine = [g for g in report.gpus if g["host"] == h["host"]]
        rows.append((
            p.iso_week, h["host"], p.since_ms, p.until_ms, h["gpus"], h["sampled_seconds"],
            h["coverage_ratio"], h["gpu_sampled_seconds"], h["busy_seconds"],
            h["utilization_mean_percent"], h["energy_joules"], json.dumps(h["energy_methods"]),
            h["throttled_seconds"], json.dumps(mine, sort_keys=True), report.generated_ms,
            json.dumps(report.host_usage.get(h["host"], {}), sort_keys=True),
        ))
    with write(conn):
        conn.execute("DELETE FROM weekly_summaries WHERE iso_week = ? AND host IN (SELECT value FROM json_each(?))",
                     (p.iso_week, json.dumps([h["host"] for h in report.hosts])))
        conn.executemany(
            f"INSERT INTO weekly_summaries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            rows,
        )
    return len(rows)


def last_weeks(now_ms: int, count: int) -> list[str]:
    """The ``count`` finished ISO weeks before the one containing ``now_ms``, oldest first."""
    day = local_date(now_ms)
    monday = day - timedelta(days=day.weekday())
    weeks = []
    for i in range(count, 0, -1):
        y, w, _ = (monday - timedelta(weeks=i)).isocalendar()
        weeks.append(f"{y}-W{w:02d}")
    return weeks


def load_weeks(conn: sqlite3.Connection, weeks: list[str], hosts: tuple[str, ...]) -> dict[str, list[dict]]:
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT * FROM weekly_summaries WHERE iso_week IN (SELECT value FROM json_each(?)) ORDER BY host",
            (json.dumps(weeks),),
        ).fetchall()
    finally:
        conn.row_factory = None
    out: dict[str, list[dict]] = {}
    for r in rows:
        if hosts and r["host"] not in hosts:
            continue
        out.setdefault(r["iso_week"], []).append(dict(r))
    return out


def trend_row(iso_week: str, rows: list[dict]) -> dict:
    """Fleet figures of one week from its per-host rows."""
    start, end = week_bounds(iso_week)
    energies = [r["energy_joules"] for r in rows if r["energy_joules"] is not None]
    sampled = sum(r["gpu_sampled_seconds"] for r in rows)
    ratios = [r["coverage_ratio"] for r in rows if r["coverage_ratio"] is not None]
    util = [(r["utilization_mean_percent"], r["gpu_sampled_seconds"]) for r in rows
            if r["utilization_mean_percent"] is not None]
    util_den = sum(w for _, w in util)
    methods = sorted({m for r in rows for m in json.loads(r["energy_methods"])})
    usage = [json.loads(r["usage_json"]) for r in rows if r.get("usage_json")]
    by_category: dict[str, float] = {}
    for u in usage:
        for category, joules in u.get("category_energy_joules", {}).items():
            by_category[category] = round(by_category.get(category, 0.0) + joules, 3)
    return {
        "iso_week": iso_week,
        "week_start_ms": start,
        "week_end_ms": end,
        "hosts": len(rows),
        "gpus": sum(r["gpus"] for r in rows),
        "coverage_ratio": round(sum(ratios) / len(ratios), 4) if ratios else None,
        "gpu_sampled_seconds": round(sampled, 3),
        "busy_seconds": round(sum(r["busy_seconds"] for r in rows), 3),
        "utilization_mean_percent": round(sum(u * w for u, w in util) / util_den, 2) if util_den else None,
        "energy_joules": round(sum(energies), 3) if energies else None,
        "energy_methods": methods,
        "throttled_seconds": round(sum(r["throttled_seconds"] for r in rows), 3),
        "category_energy_joules": dict(sorted(by_category.items())),
        "llm_requests": sum(u.get("llm_requests", 0) for u in usage),
        "completion_tokens": sum(u.get("completion_tokens", 0) for u in usage),
    }


def week_period(iso_week: str) -> Period:
    start, end = week_bounds(iso_week)
    return Period(start, end, iso_week, iso_week)


def make_trend(conn: sqlite3.Connection, weeks: int, now_ms: int, hosts: tuple[str, ...],
               compute) -> list[dict]:
    """Trend rows for the last ``weeks`` finished weeks; ``compute(period)`` makes a
    missing week's report (which is then stored)."""
    names = last_weeks(now_ms, weeks)
    have = load_weeks(conn, names, hosts)
    for name in names:
        if name not in have:
            report = compute(week_period(name))
            if save_week(conn, report):
                have.update(load_weeks(conn, [name], hosts))
    return [trend_row(name, have.get(name, [])) for name in names]


