"""The report's time range: ``--week``, ``--since``/``--until`` or the last 7 days.

Days and ISO weeks are the machine's local calendar (midnight to midnight,
Monday to Monday), with DST handled by the C library's ``mktime``: a report
read on Monday morning should start at the user's Monday, not UTC's.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from gpm.errors import GpmError, EXIT_USAGE
from gpm.timespec import MAX_MS, MIN_MS, RANGE_TEXT

DAY_MS = 86_400_000
MIN_YEAR, MAX_YEAR = 1970, 9999  # MIN_MS and MAX_MS as years, for dates and ISO weeks
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WEEK = re.compile(r"^(\d{4})-?W(\d{1,2})$", re.IGNORECASE)
# A POSIX TZ rule (std name, then an offset), which needs no zoneinfo file.
_POSIX_TZ = re.compile(r"^(?:[A-Za-z]{3,}|<[A-Za-z0-9+-]{3,}>)[+-]?\d")


@dataclass(frozen=True)
class Period:
    since_ms: int
    until_ms: int
    label: str  # "2026-W47" or "2026-11-16 00:00 → 2026-11-23 00:00"
    iso_week: str | None = None  # set when the range is exactly one ISO week

    @property
    def seconds(self) -> float:
        return (self.until_ms - self.since_ms) / 1000


def check_timezone(environ: Mapping[str, str] = os.environ) -> str | None:
    """Refuse a local offset Python cannot represent; say when TZ names no known zone.

    The C library accepts ``TZ='XXX-25:59'``, but a ``datetime`` offset must
    stay under 24 hours, so every local conversion would fail (#12.11). An
    unknown zone name is no error to the C library either: it silently means
    UTC, which the returned warning says.
    """
    tz = environ.get("TZ")
    for ts in (time.time(), time.time() - 182 * 86400):  # both halves of a DST year
        offset = time.localtime(ts).tm_gmtoff
        if abs(offset) >= 86400:
            sign, minutes = "-" if offset < 0 else "+", abs(offset) // 60
            raise GpmError(
                f"TZ={tz!r}: a UTC offset of {sign}{minutes // 60:02d}:{minutes % 60:02d} is out of range "
                "(it must be under 24 hours): set TZ to a zone such as Europe/Berlin, or unset it",
                EXIT_USAGE,
            )
    if not tz or _POSIX_TZ.match(tz.lstrip(":")):
        return None
    folder = environ.get("TZDIR") or "/usr/share/zoneinfo"
    if os.path.isfile(os.path.join(folder, tz.lstrip(":"))):
        return None
    return f"TZ={tz!r} is no time zone known here (no such file in {folder}): days and weeks are in UTC"


def local_midnight_ms(day: date) -> int:
    """Unix ms of local midnight starting ``day``."""
    return int(datetime(day.year, day.month, day.day).astimezone().timestamp() * 1000)


def local_date(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000).date()


def fmt_local(ts_ms: int, seconds: bool = False) -> str:
    return datetime.fromtimestamp(ts_ms / 1000).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def week_bounds(iso_week: str) -> tuple[int, int]:
    """``"2026-W47"`` -> (Monday 00:00, next Monday 00:00) local, in Unix ms."""
    m = _WEEK.match(iso_week.strip())
    if not m:
        raise GpmError(f"--week {iso_week!r}: expected an ISO week like 2026-W47", EXIT_USAGE)
    year, week = int(m.group(1)), int(m.group(2))
    if not MIN_YEAR <= year < MAX_YEAR:
        raise GpmError(f"--week {iso_week!r} is out of range: weeks of the years {MIN_YEAR} to "
                       f"{MAX_YEAR - 1} are allowed", EXIT_USAGE)
    try:
        monday = date.fromisocalendar(year, week, 1)
    except ValueError:
        raise GpmError(f"--week {iso_week!r}: {year} has no week {week}", EXIT_USAGE) from None
    return local_midnight_ms(monday), local_midnight_ms(monday + timedelta(days=7))


def iso_week_of(ts_ms: int) -> str:
    year, week, _ = local_date(ts_ms).isocalendar()
    return f"{year}-W{week:02d}"


def whole_iso_week(since_ms: int, until_ms: int) -> str | None:
    """The ISO week that [since, until) is exactly, or None."""
    name = iso_week_of(since_ms)
    return name if week_bounds(name) == (since_ms, until_ms) else None


def parse_time(text: str, now_ms: int, option: str) -> int:
    """A date, a datetime (local unless it carries an offset or Z) or ``7d``/``24h`` ago."""
    value = text.strip()
    rel = _RELATIVE.match(value.lower())
    if rel:
        ago_ms = float(rel.group(1)) * _UNIT_SECS[rel.group(2)] * 1000
        return _in_range(now_ms - ago_ms if ago_ms <= now_ms else MIN_MS - 1, text, option)
    if value.lower() == "now":
        return now_ms
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = date.fromisoformat(value)
            return _in_range(local_midnight_ms(day) if MIN_YEAR <= day.year < MAX_YEAR else MIN_MS - 1,
                             text, option)
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise GpmError(
            f"{option} {text!r}: expected a date (2026-11-16), a datetime (2026-11-16T08:00) "
            "or a relative time (7d, 24h, 90m)", EXIT_USAGE,
        ) from None
    if dt.tzinfo is None:
        if not MIN_YEAR <= dt.year < MAX_YEAR:  # local time near year 1 or 9999 has no timestamp
            return _in_range(MIN_MS - 1, text, option)
        dt = dt.astimezone()
    return _in_range(dt.timestamp() * 1000, text, option)


def _in_range(ms: float, text: str, option: str) -> int:
    if not MIN_MS <= ms < MAX_MS:
        raise GpmError(f"{option} {text!r} is out of range: {RANGE_TEXT}", EXIT_USAGE)
    return int(ms)


def resolve_period(*, now_ms: int, week: str | None = None, since: str | None = None,
                   until: str | None = None) -> Period:
    """Turn the command's range options into a ``Period`` (default: last 7 days to now)."""
    if week and (since or until):
        raise GpmError("--week cannot be combined with --since/--until", EXIT_USAGE)
    if week:
        start, end = week_bounds(week)
    else:
        end = parse_time(until, now_ms, "--until") if until else now_ms
        start = parse_time(since, now_ms, "--since") if since else end - 7 * DAY_MS
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
