"""The alert rules and their settings, read from ``[alerts]``.

A rule fires when its condition has held for ``for_secs`` and resolves only
when the value is back below ``threshold - margin`` (hysteresis), so a GPU
hovering at its threshold makes one alert, not one a minute. The two
original keys (``temp_threshold_celsius``, ``memory_threshold_percent``)
keep their names; every other threshold is an ``[alerts]`` key of its own,
and ``[[alerts.override]]`` tables change one rule's ``for_secs``,
``margin``, ``severity`` or turn it off.

``gpm install prometheus-rules`` writes the same rules as PromQL from
``rules_from_config``, so a fleet in Alertmanager and one machine in gpm
mean the same thing by "too hot".
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any

from gpm.errors import ConfigError

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule as configured. ``threshold``/``margin`` are None for a rule
    that is a plain yes/no condition (a GPU lost, Ollama down)."""

    name: str
    summary: str  # what firing means, one line, for logs and rule files
    unit: str  # unit of threshold, value and peak ("celsius", "percent", ...)
    threshold: float | None
    margin: float | None
    for_secs: float
    severity: str
    enabled: bool = True
    per_gpu: bool = True  # one alert per GPU (False: per host, or per folder for disk_free)
    threshold_key: str | None = None  # the [alerts] key of the threshold


# name: (summary, unit, [alerts] threshold key or None, default margin, severity, per GPU)
RULES: dict[str, tuple[str, str, str | None, float | None, str, bool]] = {
    "temperature": ("GPU temperature above the threshold", "celsius",
                    "temp_threshold_celsius", 5.0, "warning", True),
    "memory": ("GPU memory use above the threshold share of its total", "percent",
               "memory_threshold_percent", 5.0, "warning", True),
    "power": ("GPU power draw above the threshold share of its power limit", "percent",
              "power_threshold_percent", 10.0, "warning", True),
    "throttle": ("GPU clocks held down by a thermal or power slowdown", "bool",
                 None, None, "warning", True),
    "gpu_lost": ("GPU lost or failing to answer (fallen off the bus, driver error)", "bool",
                 None, None, "critical", True),
    "ecc": ("uncorrected ECC memory errors since the driver loaded above the threshold", "errors",
            "ecc_threshold_errors", None, "critical", True),
    "xid": ("the driver reported a critical Xid error for the GPU", "xid",
            None, None, "critical", True),
    "ollama_down": ("the Ollama server does not answer while [ollama] is enabled", "bool",
                    None, None, "warning", False),
    "sampler_stalled": ("no sample stored for stalled_intervals poll intervals", "intervals",
                        "stalled_intervals", None, "critical", False),
    "disk_free": ("free space of the data or archive folder below the threshold", "percent",
                  "disk_free_threshold_percent", 2.0, "warning", False),
}

OVERRIDE_FIELDS = ("rule", "enabled", "for_secs", "margin", "severity")


def rules_from_config(cfg: Any) -> list[Rule]:
    """Every rule with its effective settings (disabled rules included, ``enabled=False``).

    ``cfg`` is a ``gpm.config.Config``; with ``[alerts] enabled = false``
    every rule comes back disabled.
    """
    on = bool(cfg.get("alerts.enabled"))
    default_for = float(cfg.get("alerts.for_secs"))
    overrides = {o["rule"]: o for o in cfg.get("alerts.override")}
    out = []
    for name, (summary, unit, key, margin, severity, per_gpu) in RULES.items():
        rule = Rule(name, summary, unit,
                    None if key is None else float(cfg.get(f"alerts.{key}")),
                    margin, default_for, severity, on, per_gpu, key)
        o = overrides.get(name, {})
        rule = replace(rule, **{k: v for k, v in o.items() if k != "rule"})
        out.append(replace(rule, enabled=on and rule.enabled))
    return out


def validate_overrides(value: Any, where: str) -> list[dict]:
    """``[[alerts.override]]``'s validator: each table names a known rule once."""
    out: list[dict] = []
    seen: set[str] = set()
    for i, table in enumerate(value, start=1):
        at = f"{where}: [[alerts.override]] #{i}"
        for field in table:
            if field not in OVERRIDE_FIELDS:
                raise ConfigError(f"{at}: unknown field {field!r} (expected one of {', '.join(OVERRIDE_FIELDS)})")
        name = table.get("rule")
        if name not in RULES:
            match = difflib.get_close_matches(str(name), list(RULES), n=1)
            hint = f" (did you mean {match[0]!r}?)" if match else f" (expected one of {', '.join(RULES)})"
            raise ConfigError(f"{at}: rule = {name!r}: not a rule{hint}")
        if name in seen:
            raise ConfigError(f"{at}: rule = {name!r} is overridden twice")
        seen.add(name)
        norm: dict[str, Any] = {"rule": name}
        if "enabled" in table:
            if not isinstance(table["enabled"], bool):
                raise ConfigError(f"{at}: enabled = {table['enabled']!r}: expected true or false")
            norm["enabled"] = table["enabled"]
        for field in ("for_secs", "margin"):
            if field in table:
                v = table[field]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 86400 * 7:
                    raise ConfigError(f"{at}: {field} = {v!r}: expected a number from 0 to 604800")
                norm[field] = float(v)
        if "margin" in norm and RULES[name][3] is None:
            raise ConfigError(f"{at}: rule {name!r} has no margin (it is a yes/no condition)")
        if "severity" in table:
            if table["severity"] not in SEVERITIES:
                raise ConfigError(f"{at}: severity = {table['severity']!r}: expected one of {', '.join(SEVERITIES)}")
            norm["severity"] = table["severity"]
        out.append(norm)
    return out
