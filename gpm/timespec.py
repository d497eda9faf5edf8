"""Points in time as people type them, with one meaning in every command (#13.7).

The rule, for every option that takes a time (``gpm export``, ``gpm report``
and any later one, through ``gpm.cli.options.TimeParam``):

- a date or a datetime without a zone is the machine's local time, as people
  mean "since December 1st": ``2026-12-01``, ``2026-12-01T08:00``,
  ``2026-12-01 08:00``;
- ``Z`` or an offset names the zone: ``2026-12-01T08:00Z``, ``...+01:00``;
- ``2026-W48`` is that ISO week's Monday, 00:00 local;
- ``30s``, ``90m``, ``24h``, ``7d``, ``2w`` are that long before now (``m`` is
  minutes); ``now`` is now.

Local days and weeks come from the C library's ``mktime``, DST included. gpm
stores UTC milliseconds; only what people type is local.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta

from gpm.errors import EXIT_USAGE, GpmError

# The times a user may name: far enough from datetime's year 1 and 9999 that
# a local offset (under 24 h) or a week added never leaves its range (#12.11).
MIN_MS = 0  # 1970-01-01T00:00Z
MAX_MS = 253_370_764_800_000  # 9999-01-01T00:00Z
MIN_YEAR, MAX_YEAR = 1970, 9999  # MIN_MS and MAX_MS as years, for dates and ISO weeks
RANGE_TEXT = "times from 1970-01-01 to 9999-01-01 are allowed"
FORMS_TEXT = ("a date (2026-12-01), a datetime (2026-12-01T08:00, local unless it ends in Z or +HH:MM), "
              "an ISO week (2026-W48), a time ago (24h, 7d, 2w) or now")

_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
WEEK_RE = re.compile(r"^(\d{4})-?W(\d{1,2})$", re.IGNORECASE)
# A POSIX TZ rule (std name, then an offset), which needs no zoneinfo file.
_POSIX_TZ = re.compile(r"^(?:[A-Za-z]{3,}|<[A-Za-z0-9+-]{3,}>)[+-]?\d")


def _offset_problem(environ: Mapping[str, str]) -> str | None:
    tz = environ.get("TZ")
    for ts in (time.time(), time.time() - 182 * 86400):  # both halves of a DST year
        offset = time.localtime(ts).tm_gmtoff
        if abs(offset) >= 86400:
            sign, minutes = "-" if offset < 0 else "+", abs(offset) // 60
            return (f"TZ={tz!r}: a UTC offset of {sign}{minutes // 60:02d}:{minutes % 60:02d} is out of range "
                    "(it must be under 24 hours): set TZ to a zone such as Europe/Berlin, or unset it")
    return None


def check_timezone(environ: Mapping[str, str] = os.environ) -> str | None:
    """Refuse a local offset Python cannot represent; say when TZ names no known zone.

    The C library accepts ``TZ='XXX-25:59'``, but a ``datetime`` offset must
    stay under 24 hours, so every local conversion would fail (#12.11). An
    unknown zone name is no error to the C library either: it silently means
    UTC, which the returned warning says.
    """
    problem = _offset_problem(environ)
    if problem:
        raise GpmError(problem, EXIT_USAGE)
    tz = environ.get("TZ")
    if not tz or _POSIX_TZ.match(tz.lstrip(":")):
        return None
    folder = environ.get("TZDIR") or "/usr/share/zoneinfo"
    if os.path.isfile(os.path.join(folder, tz.lstrip(":"))):
        return None
    return f"TZ={tz!r} is no time zone known here (no such file in {folder}): local times are UTC"


def local_midnight_ms(day: date) -> int:
    """Unix ms of local midnight starting ``day``."""
    return int(datetime(day.year, day.month, day.day).astimezone().timestamp() * 1000)


def local_date(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000).date()


def iso_week_of(ts_ms: int) -> str:
    """``"2026-W48"``: the local ISO week ``ts_ms`` falls in."""
    year, week, _ = local_date(ts_ms).isocalendar()
    return f"{year}-W{week:02d}"


def parse_week(text: str) -> tuple[int, int]:
    """``"2026-W48"`` -> (Monday 00:00, next Monday 00:00) local, in Unix ms; ValueError otherwise."""
    m = WEEK_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r}: expected an ISO week like 2026-W48")
    year, week = int(m.group(1)), int(m.group(2))
    if not MIN_YEAR <= year < MAX_YEAR:
        raise ValueError(f"{text!r} is out of range: weeks of the years {MIN_YEAR} to {MAX_YEAR - 1} are allowed")
    try:
        monday = date.fromisocalendar(year, week, 1)
    except ValueError:
        raise ValueError(f"{text!r}: {year} has no week {week}") from None
    _check_local_offset(text)
    return local_midnight_ms(monday), local_midnight_ms(monday + timedelta(days=7))


def parse_time_ms(text: str, now_ms: int | None = None) -> int:
    """Unix ms for ``text`` by the module's one rule; ValueError saying what is accepted otherwise.

    Each message starts with ``repr(text)`` so a caller prefixes the option's name.
    """
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = text.strip()
    if value.lower() == "now":
        return now_ms
    match = _AGO.match(value.lower())
    if match:
        ago_ms = float(match.group(1)) * _UNITS_MS[match.group(2)]
        if not ago_ms <= now_ms - MIN_MS:  # also inf, from "1e999"-long digit runs
            raise ValueError(f"{text!r} is out of range: {RANGE_TEXT} (that is too long ago)")
        return now_ms - round(ago_ms)
    if WEEK_RE.match(value):
        return parse_week(value)[0]
    try:
        parsed = datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", value))
    except ValueError as err:
        why = "" if str(err).startswith("Invalid isoformat") else f" ({err})"  # e.g. a 30th of February
        raise ValueError(f"{text!r}{why}: expected {FORMS_TEXT}") from None
    if parsed.tzinfo is None:
        if not MIN_YEAR <= parsed.year < MAX_YEAR:  # local time near year 1 or 9999 has no timestamp
            raise ValueError(f"{text!r} is out of range: {RANGE_TEXT}")
        _check_local_offset(text)
        parsed = parsed.astimezone()
    ms = parsed.timestamp() * 1000
    if not MIN_MS <= ms < MAX_MS:
        raise ValueError(f"{text!r} is out of range: {RANGE_TEXT}")
    return int(ms)


def _check_local_offset(text: str) -> None:
    """A local time under an impossible TZ offset is an error about TZ, not about the time typed."""
    problem = _offset_problem(os.environ)
    if problem:
        raise ValueError(f"{text!r} is a local time, but {problem}")
