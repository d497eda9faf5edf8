"""User rules (``[[classify.rules]]``): checked when the configuration is read,
compiled once, matched before every built-in rule.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import KW_ONLY, dataclass
from typing import Any

from gpm.classify import CATEGORIES
from gpm.classify.process_view import ProcessView
from gpm.errors import ConfigError

RULE_MATCH_FIELDS = ("exe", "name", "cmdline", "appid", "library")
RULE_SET_FIELDS = ("category", "label")
_RULE_REGEX_FIELDS = ("exe", "name", "cmdline", "library")


def validate_rules(value: Any, where: str) -> list[dict]:
    """Check ``[[classify.rules]]``; return them normalised (plain, JSON-safe).

    Called by gpm.config for the ``classify.rules`` key. Every problem is a
    one-line ``ConfigError`` naming the rule by its 1-based position.
    """
    if not isinstance(value, list):
        raise ConfigError(f"{where}: [[classify.rules]] must be an array of tables")
    out = []
    for i, rule in enumerate(value, start=1):
        at = f"{where}: [[classify.rules]] #{i}"
        if not isinstance(rule, dict):
            raise ConfigError(f"{at}: must be a table")
        allowed = RULE_MATCH_FIELDS + RULE_SET_FIELDS
        for key in rule:
            if key not in allowed:
                raise ConfigError(f"{at}: unknown field '{key}' (expected one of {', '.join(allowed)})")
        if not any(k in rule for k in RULE_MATCH_FIELDS):
            raise ConfigError(f"{at}: needs at least one of {', '.join(RULE_MATCH_FIELDS)} to match on")
        category = rule.get("category")
        if category not in CATEGORIES:
            raise ConfigError(f"{at}: category = {category!r}: expected one of {', '.join(CATEGORIES)}")
        norm: dict[str, str] = {"category": category}
        for key in _RULE_REGEX_FIELDS:
            if key in rule:
                pattern = rule[key]
                if not isinstance(pattern, str):
                    raise ConfigError(f"{at}: {key} must be a string (a regular expression)")
                try:
                    with warnings.catch_warnings():  # "possible nested set" would be a second stderr line
                        warnings.simplefilter("ignore")
                        re.compile(pattern)
                except (re.error, OverflowError, RecursionError) as err:  # a{4294967296}, 5,000 nested groups
                    reason = "nested too deeply" if isinstance(err, RecursionError) else err
                    raise ConfigError(f"{at}: {key} = {pattern!r} is not a valid regular expression: {reason}") from None
                norm[key] = pattern
        if "appid" in rule:
            appid = rule["appid"]
            if isinstance(appid, bool) or not isinstance(appid, (int, str)) or not str(appid).isdigit():
                raise ConfigError(f"{at}: appid = {appid!r}: expected a Steam app id (digits)")
            norm["appid"] = str(appid)
        if "label" in rule:
            if not isinstance(rule["label"], str):
                raise ConfigError(f"{at}: label must be a string")
            norm["label"] = rule["label"]
        out.append(norm)
    return out


@dataclass
class UserRule:
    """One ``[[classify.rules]]`` entry, compiled; ``index`` is its 1-based position."""

    index: int
    category: str
    label: str | None
    _: KW_ONLY
    exe: re.Pattern | None = None
    name: re.Pattern | None = None
    cmdline: re.Pattern | None = None
    library: re.Pattern | None = None
    appid: str | None = None

    @classmethod
    def compile_all(cls, rules: list[dict]) -> list["UserRule"]:
        out = []
        for i, r in enumerate(rules, start=1):
            out.append(cls(
                index=i, category=r["category"], label=r.get("label"), appid=r.get("appid"),
                **{k: re.compile(r[k]) for k in _RULE_REGEX_FIELDS if k in r},
            ))
        return out

    def describe(self) -> str:
        parts = [f"{k}={getattr(self, k).pattern!r}" for k in _RULE_REGEX_FIELDS if getattr(self, k)]
        if self.appid:
            parts.append(f"appid={self.appid}")
        return f"user rule #{self.index} ({', '.join(parts)})"

    def matches(self, v: ProcessView, appid: str | None) -> bool:
        """Whether every field this rule sets matches the process (``appid``: its Steam app id)."""
        f = v.f
        if self.exe and not any(self.exe.search(p) for p in (f.exe, f.cmdline[0] if f.cmdline else None) if p):
            return False
        if self.name and not any(self.name.search(n) for n in v.names):
            return False
        if self.cmdline and not self.cmdline.search(" ".join(f.cmdline)):
            return False
        if self.library and not any(self.library.search(lib) for lib in f.libraries or ()):
            return False
        return not self.appid or self.appid == appid
