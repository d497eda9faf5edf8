"""Points in time as users type them: ``2024-05-01``, ``2024-05-01T12:00Z``, ``7d`` (ago), ``now``."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")


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
        return now_ms - round(float(match.group(1)) * _UNITS_MS[match.group(2)])
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM], "
            "a duration ago such as 7d, 12h, 30m, or 'now'"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)
