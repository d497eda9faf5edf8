"""Each GPU's hours over the range: what the html page's heat map and lines draw (#16).

Hours are local hours, counted from each local midnight (a day of a
daylight-saving change has 23 or 25), so that hour ``k`` of a day is the
same ``k`` on the wall clock. A minute row counts in the hour of its first
sample, as in the per-day table, so the hours of a GPU add up to its
figures in ``gpus`` (sampled and throttled time). An hour with no sample
has 0 sampled seconds and None for the rest: unknown, not idle.

Kept to ranges of ``MAX_HOURLY_DAYS`` days: a year of hours on 8 GPUs
would be megabytes of json nobody draws.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from gpm.report.period import Period, day_starts, local_date, local_midnight_ms

if TYPE_CHECKING:
    import polars as pl

HOUR_MS = 3_600_000
MAX_HOURLY_DAYS = 31
TOO_LONG = f"hourly figures are kept for ranges of up to {MAX_HOURLY_DAYS} days"


def hour_starts(period: Period) -> list[int]:
    """The starts of the local hours that overlap [since, until)."""
    out = []
    for start in day_starts(period.since_ms, period.until_ms):
        end = local_midnight_ms(local_date(start) + timedelta(days=1))
        out.extend(h for h in range(start, end, HOUR_MS)
                   if h + HOUR_MS > period.since_ms and h < period.until_ms)
    return out


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


def hourly(frame: "pl.DataFrame", gids: dict[tuple[str, str], int], gpus: list[dict],
           period: Period) -> dict | None:
    """``{"hour_starts_ms": [...], "gpus": [one row per GPU of ``gpus``, lists aligned
    with the hours]}``; None when the range is longer than ``MAX_HOURLY_DAYS``.
    ``frame`` is the minute rows with their intervals (``gpm.report.build``),
    ``gids`` maps (host, uuid) to their ``gid``."""
    import polars as pl

    if period.seconds > MAX_HOURLY_DAYS * 86_400:
        return None
    starts = hour_starts(period)
    if not starts:
        return {"hour_starts_ms": [], "gpus": []}
    hour = pl.Series(starts, dtype=pl.Int64).search_sorted(frame["first_ts_ms"], side="right") - 1
    per = frame.with_columns(hour=hour).filter(pl.col("hour") >= 0).group_by("gid", "hour").agg(
        pl.col("sampled_ms", "thr_any_ms", "util_sum", "util_n").sum(),
        pl.col("temp_max", "mem_max").max(),
    )
    cells: dict[int, dict[int, dict]] = {}
    for r in per.iter_rows(named=True):
        cells.setdefault(r["gid"], {})[r["hour"]] = r
    out = []
    for g in gpus:
        mine = cells.get(gids[(g["host"], g["gpu_uuid"])], {})
        hours = [mine.get(i) for i in range(len(starts))]
        out.append({
            "host": g["host"], "gpu_index": g["gpu_index"], "gpu_uuid": g["gpu_uuid"],
            "sampled_seconds": [_r(h["sampled_ms"] / 1000) if h else 0.0 for h in hours],
            "utilization_mean_percent": [_r(h["util_sum"] / h["util_n"], 2) if h and h["util_n"] else None
                                         for h in hours],
            "temperature_max_celsius": [h["temp_max"] if h else None for h in hours],
            "memory_max_bytes": [h["mem_max"] if h else None for h in hours],
            "throttled_seconds": [_r(h["thr_any_ms"] / 1000) if h else None for h in hours],
        })
    return {"hour_starts_ms": starts, "gpus": out}
