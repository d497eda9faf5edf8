"""The report's time range: ``--week``, ``--since``/``--until`` or the last 7 days.

Days and ISO weeks are the machine's local calendar (midnight to midnight,
Monday to Monday), read by ``gpm.timespec``, the one rule for every time a
user types (#13.7): a report read on Monday morning should start at the
user's Monday, not UTC's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gpm.errors import GpmError, EXIT_USAGE
from gpm.timespec import check_timezone, iso_week_of, local_date, local_midnight_ms, parse_time_ms, parse_week

__all__ = ["Period", "check_timezone", "day_starts", "fill_week", "fmt_local", "iso_week_of", "local_date",
           "local_midnight_ms", "one_week_of", "resolve_period", "utc_iso", "week_bounds", "whole_iso_week"]

DAY_MS = 86_400_000
WEEK_WORDS = ("last", "this")  # --week last: the last finished ISO week; this: this week so far


@dataclass(frozen=True)
class Period:
    since_ms: int
    until_ms: int
    label: str  # "2026-W47" or "2026-11-16 00:00 → 2026-11-23 00:00"
    iso_week: str | None = None  # set when the range is exactly one ISO week

    @property
    def seconds(self) -> float:
        return (self.until_ms - self.since_ms) / 1000


def fmt_local(ts_ms: int, seconds: bool = False) -> str:
    return datetime.fromtimestamp(ts_ms / 1000).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def week_bounds(iso_week: str) -> tuple[int, int]:
    """``"2026-W47"`` -> (Monday 00:00, next Monday 00:00) local, in Unix ms."""
    try:
        return parse_week(iso_week)
    except ValueError as err:
        raise GpmError(f"--week {err}", EXIT_USAGE) from None


def whole_iso_week(since_ms: int, until_ms: int) -> str | None:
    """The ISO week that [since, until) is exactly, or None."""
    name = iso_week_of(since_ms)
    return name if week_bounds(name) == (since_ms, until_ms) else None


def one_week_of(period: Period) -> str | None:
    """The ISO week the whole period lies in (``--week X``, ``--week this``, a day), or None."""
    name = iso_week_of(period.since_ms)
    return name if iso_week_of(period.until_ms - 1) == name else None


def fill_week(output: Path, period: Period | None) -> Path:
    """``-o reports/report-{week}.txt`` -> ``reports/report-2026-W48.txt`` (#13.9).

    A placeholder without ``%`` needs no escaping in a systemd unit or a
    crontab line, so a weekly timer keeps one dated file per week.
    """
    if "{week}" not in str(output):
        return output
    week = one_week_of(period) if period is not None else None
    if week is None:
        what = "--weeks reports several" if period is None else f"{period.label} is not"
        raise GpmError(f"--output {output}: {{week}} needs a report within one ISO week "
                       f"(--week 2026-W48, --week last); {what}", EXIT_USAGE)
    return Path(str(output).replace("{week}", week))


def parse_time(text: str | int, now_ms: int, option: str) -> int:
    """``text`` by gpm.timespec's rule (an int is Unix ms already); a usage error naming ``option``."""
    if isinstance(text, int):
        return text
    try:
        return parse_time_ms(text, now_ms)
    except ValueError as err:
        raise GpmError(f"{option} {err}", EXIT_USAGE) from None


def _week_range(week: str, now_ms: int) -> tuple[int, int]:
    word = week.strip().lower()
    if word not in WEEK_WORDS:
        return week_bounds(week)
    this_monday, _ = week_bounds(iso_week_of(now_ms))
    if word == "this":
        return this_monday, now_ms
    return week_bounds(iso_week_of(this_monday - 1))


def resolve_period(*, now_ms: int, week: str | None = None, since: str | int | None = None,
                   until: str | int | None = None) -> Period:
    """Turn the command's range options into a ``Period`` (default: last 7 days to now).

    ``week`` is an ISO week, ``last`` (the last finished one: what a weekly
    timer reports, #13.9) or ``this`` (Monday 00:00 up to now).
    """
    if week and (since is not None or until is not None):
        raise GpmError("--week cannot be combined with --since/--until", EXIT_USAGE)
    if week:
        start, end = _week_range(week, now_ms)
    else:
        end = parse_time(until, now_ms, "--until") if until is not None else now_ms
        start = parse_time(since, now_ms, "--since") if since is not None else end - 7 * DAY_MS
    if start >= end:
        raise GpmError(f"empty range: {fmt_local(start)} is not before {fmt_local(end)}", EXIT_USAGE)
    iso = whole_iso_week(start, end)
    label = iso if iso else f"{fmt_local(start)} → {fmt_local(end)}"
    return Period(start, end, label, iso)


def day_starts(since_ms: int, until_ms: int) -> list[int]:
    """Local midnights covering [since, until): the first one is at or before since."""
    day = local_date(since_ms)
    out = []
    while True:
        start = local_midnight_ms(day)
        if start >= until_ms:
            break
        out.append(start)
        day += timedelta(days=1)
    return out


def utc_iso(ts_ms: int) -> str:
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
