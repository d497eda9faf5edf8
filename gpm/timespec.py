"""Points in time as users type them: ``2024-05-01``, ``2024-05-01T12:00Z``, ``7d`` (ago), ``now``."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")

# The times a user may name: far enough from datetime's year 1 and 9999 that
# a local offset (under 24 h) or a week added never leaves its range (#12.11).
MIN_MS = 0  # 1970-01-01T00:00Z
MAX_MS = 253_370_764_800_000  # 9999-01-01T00:00Z
RANGE_TEXT = "times from 1970-01-01 to 9999-01-01 are allowed"


def parse_time_ms(text: str, now_ms: int | None = None) -> int:
    """Unix milliseconds for ``text``; ValueError with the accepted forms otherwise.

    A date or time without an offset is UTC, like everything gpm stores.
    """
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = text.strip()
    if value.lower() == "now":
        return now_ms
    match = _AGO.match(value.lower())
    if match:
        ago_ms = float(match.group(1)) * _UNITS_MS[match.group(2)]
        if not ago_ms <= now_ms - MIN_MS:  # also inf, from "1e999"-long digit runs
            raise ValueError(f"{text!r} is too long ago: {RANGE_TEXT}")
        return now_ms - round(ago_ms)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM], "
            "a duration ago such as 7d, 12h, 30m, or 'now'"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    ms = int(parsed.timestamp() * 1000)
    if not MIN_MS <= ms < MAX_MS:
        raise ValueError(f"{text!r} is out of range: {RANGE_TEXT}")
    return ms
