"""Human units for terminal output (GiB, W, 3h 25m)."""

from __future__ import annotations


def fmt_opt(value, fmt: str, missing: str = "-") -> str:
    return missing if value is None else fmt.format(value)


def fmt_bytes(n: int | float | None, missing: str = "-") -> str:
    if n is None:
        return missing
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover


def fmt_duration(seconds: float | None, missing: str = "-") -> str:
    if seconds is None:
        return missing
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    minutes, s = divmod(s, 60)
    if minutes < 60:
        return f"{minutes}m {s:02d}s" if s else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
