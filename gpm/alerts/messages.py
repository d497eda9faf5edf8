"""The one line an alert says, firing and resolved.

``GPU 0 (NVIDIA GeForce RTX 4090) at 91 °C, above 85 °C for 1m``: who (made
``visible`` where it comes from outside: names, folders, URLs), the value in
the rule's unit, the threshold and how long. The resolved line replaces the
firing one in the ``alerts`` row, so each reads alone.
"""

from __future__ import annotations

from gpm.alerts.rules import Rule
from gpm.humanize import fmt_duration

_UNITS = {"celsius": "{:.0f} °C", "percent": "{:.0f}%", "errors": "{:.0f}", "intervals": "{:.1f} intervals"}

FIRING = {
    "temperature": "{what} at {value}, above {threshold} for {held}",
    "memory": "{what} memory {value} used, above {threshold} for {held}",
    "power": "{what} drawing {value} of its power limit, above {threshold} for {held}",
    "throttle": "{what} throttled ({detail}) for {held}",
    "gpu_lost": "{what} lost ({detail}) for {held}",
    "ecc": "{what} has {value} uncorrected ECC errors since the driver loaded, above {threshold}",
    "xid": "{what} reported Xid {detail}",
    "ollama_down": "{what} down for {held}: {detail}",
    "sampler_stalled": "{what}: {detail}",
    "disk_free": "{what} has {value} free ({detail}), below {threshold} for {held}",
}

RESOLVED = {
    "temperature": "{what} back to {value}, below {clear} (peak {peak}, {lasted})",
    "memory": "{what} memory back to {value} used, below {clear} (peak {peak}, {lasted})",
    "power": "{what} back to {value} of its power limit, below {clear} (peak {peak}, {lasted})",
    "throttle": "{what} no longer throttled (after {lasted})",
    "gpu_lost": "{what} {detail} (lost for {lasted})",
    "ecc": "{what} back to {value} uncorrected ECC errors (the driver reloaded)",
    "xid": "{what}: no new Xid for {for_secs} (the last: Xid {detail})",
    "ollama_down": "{what} is up again (down for {lasted})",
    "sampler_stalled": "{what}: {detail}",
    "disk_free": "{what} back to {value} free ({detail}), above {clear} (lowest {peak}, {lasted})",
}


def fmt_value(rule: Rule, value: float | None) -> str:
    if value is None:
        return "-"
    return _UNITS.get(rule.unit, "{:g}").format(value)


def clear_level(rule: Rule) -> float | None:
    """Where a firing alert resolves: threshold -/+ margin (hysteresis)."""
    if rule.threshold is None:
        return None
    margin = rule.margin or 0.0
    return rule.threshold + margin if rule.name == "disk_free" else rule.threshold - margin


def message(rule: Rule, *, resolved: bool, what: str, value: float | None, peak: float | None,
            detail: str, started_ms: int, now_ms: int, held_ms: int) -> str:
    fields = {
        "what": what,
        "value": fmt_value(rule, value),
        "peak": fmt_value(rule, peak),
        "threshold": fmt_value(rule, rule.threshold),
        "clear": fmt_value(rule, clear_level(rule)),
        "detail": detail,
        "held": fmt_duration(held_ms / 1000),
        "lasted": fmt_duration((now_ms - started_ms) / 1000),
        "for_secs": fmt_duration(rule.for_secs),
    }
    return (RESOLVED if resolved else FIRING)[rule.name].format(**fields)
