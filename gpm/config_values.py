"""What a setting accepts: the ``Key`` that describes it, and the checking of a value against it.

A value from the file, the environment or a flag passes through ``check_value``;
an environment string is first turned into the key's type by ``parse_env_value``.
Every refusal is one ``ConfigError`` line naming where the value came from, the
key, the value (spelt as TOML) and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import KW_ONLY, dataclass
from typing import Any, Callable

from gpm.addresses import parse_listen, url_problem
from gpm.errors import ConfigError


@dataclass
class Key:
    """One setting: its section, name, type, default and limits.

    ``type`` is one of bool, int, float, str, path, url, listen, choice,
    str_list, table_list. ``validator`` is called with
    (value, where) for checks the type cannot express (e.g. classification
    rules), only when the key is set. A ``None`` default means "not set":
    the feature stays off until a value is given (``[report]`` prices, #16).
    """

    section: str
    name: str
    type: str
    default: Any
    help: str
    _: KW_ONLY
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    validator: Callable[[Any, str], Any] | None = None

    def __hash__(self) -> int:
        return hash((self.section, self.name))

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env_var(self) -> str:
        return f"GPM_{self.section}_{self.name}".upper()

    def expected(self) -> str:
        """Human words for what this key accepts, used in error messages."""
        if self.type == "bool":
            return "true or false"
        if self.type in ("int", "float"):
            noun = "an integer" if self.type == "int" else "a number"
            if self.min is not None and self.max is not None:
                return f"{noun} from {format_number(self.min)} to {format_number(self.max)}"
            if self.min is not None:
                return f"{noun} >= {format_number(self.min)}"
            return noun
        if self.type == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type == "url":
            return "an http:// or https:// URL"
        if self.type == "listen":
            return "HOST:PORT with a port from 1 to 65535"
        if self.type == "str_list":
            return "a list of strings"
        if self.type == "table_list":
            return "an array of tables"
        if self.type == "path":
            return "a path"
        return "a string"


def format_number(x: float) -> str:
    """A limit or default as TOML and people write it: ``5`` rather than ``5.0``."""
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e16 else str(x)


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}


def toml_value(value: Any) -> str:
    """``value`` spelt as TOML, for the example file and error messages; TypeError for a table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, str):
        text = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", text) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def _toml_shown(value: Any) -> str:
    try:
        return toml_value(value)
    except TypeError:
        return repr(value)


def parse_env_value(key: Key, raw: str, where: str) -> Any:
    """Turn an environment string into the key's type."""
    text = raw.strip()
    try:
        if key.type == "bool":
            return _BOOL_WORDS[text.lower()]
        if key.type == "int":
            return int(text)
        if key.type == "float":
            return float(text)
        if key.type == "str_list":
            return [part.strip() for part in text.split(",") if part.strip()]
        if key.type == "table_list":
            raise ValueError
    except (KeyError, ValueError):
        raise ConfigError(
            f"{where}: [{key.section}] {key.name} = {raw!r}: expected {key.expected()}"
        ) from None
    return text


def check_value(key: Key, value: Any, where: str) -> Any:
    """Validate a typed value against the key; return it (normalised)."""

    original = value

    def bad(reason: str = "") -> ConfigError:
        shown = repr(original) if isinstance(original, str) else _toml_shown(original)
        why = f" ({reason})" if reason else ""
        return ConfigError(f"{where}: [{key.section}] {key.name} = {shown}: expected {key.expected()}{why}")

    t = key.type
    if t == "bool":
        if not isinstance(value, bool):
            raise bad()
    elif t in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if t == "int" and not isinstance(value, int):
            if not float(value).is_integer():
                raise bad()
            value = int(value)
        if t == "float":
            try:
                value = float(value)
            except OverflowError:  # a TOML integer of hundreds of digits
                raise bad() from None
            if value != value or value in (float("inf"), float("-inf")):
                raise bad()
        if key.min is not None and value < key.min:
            raise bad()
        if key.max is not None and value > key.max:
            raise bad()
    elif t in ("str", "path"):
        if not isinstance(value, str):
            raise bad()
        if "\0" in value:
            raise bad("no file name, host name or command can hold a NUL character")
    elif t == "url":
        if not isinstance(value, str):
            raise bad()
        problem = url_problem(value)
        if problem:
            raise bad(problem)
    elif t == "listen":
        if not isinstance(value, str):
            raise bad()
        try:
            parse_listen(value)
        except ValueError as err:
            raise bad(str(err) if str(err) != value else "") from None
    elif t == "choice":
        if value not in key.choices:
            raise bad()
    elif t == "str_list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad()
        if any("\0" in v for v in value):
            raise bad("no file name can hold a NUL character")
    elif t == "table_list":
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise bad()
    if key.validator and value:
        value = key.validator(value, where)
    return value
