"""Reading the TOML config file: its tables, and the line each key stands on.

The line numbers let a refusal say ``config.toml:12: [ollama] api_url = ...``,
which is all a person fixing a file from a cron mail needs.
"""

from __future__ import annotations

import re
from typing import Any

from gpm.errors import ConfigError


def key_line(text: str, section: str, name: str | None) -> int | None:
    """The 1-based line of ``name`` inside ``[section]`` (or of the header)."""
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[\[?\s*([A-Za-z0-9_.\-\"']+)\s*\]\]?", stripped)
        if header:
            current = header.group(1).strip("\"'")
            if name is None and current == section:
                return number
            continue
        if name is not None and current == section and re.match(
            rf"^[\"']?{re.escape(name)}[\"']?\s*=", stripped
        ):
            return number
    return None


def read_toml(path: str) -> tuple[dict[str, Any], str]:
    """The file's tables and its text (for ``key_line``); a ``ConfigError`` line when it cannot be read or parsed."""
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err.strerror}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    except ValueError as err:  # an integer of more than 4,300 digits
        raise ConfigError(f"{path}: invalid TOML: {str(err).split(';')[0]}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None
