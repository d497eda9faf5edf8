"""Configuration: defaults < config file < ``GPM_*`` environment < flags.

Every value remembers where it came from, so ``gpm config show`` can say why a
setting is what it is. Validation is strict and the message is one line that
names the file (and line) or the variable, the key, the value and what was
expected: a monitor started from cron has nobody watching a traceback.

The schema lives in ``SCHEMA`` below; it also produces the commented example
that ``gpm config init`` writes and the table in docs/configuration.md.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from gpm import paths
from gpm.errors import ConfigError

def validate_rules(value: Any, where: str) -> Any:
    """``[classify] rules``' validator: ``gpm.classify.user_rules.validate_rules``."""
    # Imported here: compiling the built-in rules costs 20-40 ms that `gpm --help` and an idle cron sample skip.
    from gpm.classify.user_rules import validate_rules as validate

    return validate(value, where)


def validate_alert_overrides(value: Any, where: str) -> Any:
    """``[[alerts.override]]``' validator: ``gpm.alerts.rules.validate_overrides``."""
    from gpm.alerts.rules import validate_overrides

    return validate_overrides(value, where)


def validate_throttle_reasons(value: Any, where: str) -> Any:
    """``[alerts] throttle_reasons``: names as nvidia-smi gives them (``gpm.gpu.model.THROTTLE_REASONS``)."""
    from gpm.gpu.model import THROTTLE_REASONS

    for name in value:
        if name not in THROTTLE_REASONS:
            raise ConfigError(f"{where}: [alerts] throttle_reasons: {name!r} is not a slowdown reason "
                              f"(expected some of {', '.join(THROTTLE_REASONS)})")
    return value


def validate_webhook_url(value: Any, where: str) -> Any:
    """``[alerts] webhook_url``: an http(s) URL; the message names no more than its host (it may hold a token)."""
    problem = url_problem(value)
    if problem:
        host = urlsplit(value).hostname if "://" in value else None
        shown = f"a URL of host {host!r}" if host else "a value that is not a URL"
        raise ConfigError(f"{where}: [alerts] webhook_url = {shown}: expected an http:// or https:// URL ({problem})")
    return value


@dataclass
class Key:
    """One setting: its section, name, type, default and limits.

    ``type`` is one of bool, int, float, str, path, url, listen, choice,
    str_list, table_list. ``validator`` is called with
    (value, where) for checks the type cannot express (e.g. classification
    rules), only when the key is set.
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
                return f"{noun} from {_num(self.min)} to {_num(self.max)}"
            if self.min is not None:
                return f"{noun} >= {_num(self.min)}"
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


def _num(x: float) -> str:
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e16 else str(x)


DEFAULT_METRICS_PORT = 10435

SCHEMA: tuple[Key, ...] = (
    Key("service", "poll_interval_secs", "float", 2.0,
        "Seconds between GPU samples in `gpm daemon` and `gpm sample --follow`.", min=0.1, max=3600),
    Key("service", "hostname", "str", "",
        "Host name recorded with every row; empty means the machine's host name."),
    Key("gpu", "enable_nvml", "bool", True,
        "Read GPUs through NVML (libnvidia-ml.so.1)."),
    Key("gpu", "fallback_to_nvidia_smi", "bool", True,
        "Run `nvidia-smi -q -x` when NVML is disabled or cannot be opened."),
    Key("gpu", "nvidia_smi_path", "str", "nvidia-smi",
        "The nvidia-smi executable (looked up on PATH unless absolute)."),
    Key("gpu", "nvidia_smi_timeout_secs", "float", 5.0,
        "Kill nvidia-smi after this many seconds (it can hang on a sick GPU).", min=0.1, max=300),
    Key("gpu", "nvml_retry_secs", "float", 60.0,
        "How often the daemon retries opening NVML when no GPU backend works.", min=1, max=86400),
    Key("ollama", "enabled", "bool", False,
        "Watch a local Ollama server in `gpm daemon`."),
    Key("ollama", "api_url", "url", "http://127.0.0.1:11434",
        "The Ollama server to watch and to proxy to."),
    Key("ollama", "poll_interval_secs", "float", 5.0,
        "Seconds between polls of Ollama's /api/ps.", min=0.5, max=3600),
    Key("ollama", "timeout_secs", "float", 5.0,
        "Timeout for gpm's own requests to Ollama (/api/version, /api/ps).", min=0.1, max=600),
    Key("ollama", "enable_proxy", "bool", False,
        "Run the recording proxy in `gpm daemon`."),
    Key("ollama", "proxy_listen", "listen", "127.0.0.1:11435",
        "Where the recording proxy listens; point OLLAMA_HOST at it."),
    Key("ollama", "store_prompts", "bool", False,
        "Store prompts and responses of proxied requests (off: only counts and timings)."),
    Key("storage", "db_path", "path", "",
        "SQLite database; empty means $XDG_DATA_HOME/gpm/gpm.db."),
    Key("storage", "retention_days", "int", 7,
        "Rows older than this many days move to Parquet on `gpm archive`.", min=1, max=36500),
    Key("storage", "enable_parquet_archival", "bool", True,
        "Let `gpm daemon` archive old rows to Parquet every archive_interval_secs."),
    Key("storage", "archive_dir", "path", "",
        "Parquet archive folder; empty means the database's own (docs/archive.md)."),
    Key("storage", "busy_timeout_secs", "float", 30.0,
        "How long a write waits for another process's lock on the database before it fails (exit 75).",
        min=0.1, max=3600),
    Key("storage", "archive_interval_secs", "float", 3600.0,
        "How often `gpm daemon` runs the archive job.", min=60, max=604800),
    Key("telemetry", "enable_prometheus", "bool", False,
        "Serve Prometheus metrics from `gpm daemon`."),
    Key("telemetry", "metrics_listen", "listen", f"127.0.0.1:{DEFAULT_METRICS_PORT}",
        "Address of the Prometheus /metrics endpoint."),
    Key("telemetry", "scrape_cache_secs", "float", 1.0,
        "Standalone serve-metrics reuses a GPU sample younger than this.", min=0, max=3600),
    Key("telemetry", "per_process", "bool", False,
        "Export one series per GPU process (pid label) besides the per-category totals."),
    Key("telemetry", "enable_opentelemetry", "bool", False,
        "Push metrics (and proxy traces) over OTLP."),
    Key("telemetry", "otlp_endpoint", "url", "http://localhost:4317",
        "The OTLP receiver (an OpenTelemetry collector or backend)."),
    Key("telemetry", "otlp_protocol", "choice", "grpc",
        "OTLP transport.", choices=("grpc", "http/protobuf")),
    Key("telemetry", "export_interval_secs", "float", 10.0,
        "Seconds between OTLP metric exports.", min=1, max=86400),
    Key("alerts", "enabled", "bool", True,
        "Evaluate the alert rules on every sample (false: no alerts at all)."),
    Key("alerts", "for_secs", "float", 60.0,
        "How long a condition must hold before its alert fires (every rule; [[alerts.override]] per rule).",
        min=0, max=604800),
    Key("alerts", "temp_threshold_celsius", "float", 85.0,
        "Alert when a GPU is hotter than this.", min=0, max=150),
    Key("alerts", "memory_threshold_percent", "float", 95.0,
        "Alert when GPU memory use is above this share.", min=0, max=100),
    Key("alerts", "power_threshold_percent", "float", 98.0,
        "Alert when a GPU draws more than this share of its power limit.", min=0, max=200),
    Key("alerts", "throttle_reasons", "str_list",
        ["hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"],
        "Clock slowdown reasons that count as throttling (add sw_power_cap to alert at the power cap).",
        validator=validate_throttle_reasons),
    Key("alerts", "ecc_threshold_errors", "int", 0,
        "Alert when a GPU's uncorrected ECC errors since the driver loaded exceed this.", min=0),
    Key("alerts", "stalled_intervals", "int", 3,
        "Alert when no sample was stored for this many poll intervals.", min=2, max=10000),
    Key("alerts", "disk_free_threshold_percent", "float", 5.0,
        "Alert when the data or archive folder's file system has less free space than this.",
        min=0, max=100),
    Key("alerts", "override", "table_list", [],
        "Per-rule changes ([[alerts.override]]: rule, enabled, for_secs, margin, severity).",
        validator=validate_alert_overrides),
    Key("alerts", "notify_desktop", "bool", True,
        "Send desktop notifications (notify-send) when a session bus is present."),
    Key("alerts", "hook_command", "str_list", [],
        "Program and arguments run (no shell) for each alert event, the event as JSON on stdin."),
    Key("alerts", "hook_timeout_secs", "float", 10.0,
        "Kill the hook after this many seconds.", min=0.1, max=3600),
    Key("alerts", "webhook_url", "str", "",
        "POST each alert event as JSON to this http(s) URL (never logged in full).",
        validator=validate_webhook_url),
    Key("alerts", "webhook_timeout_secs", "float", 5.0,
        "Timeout of one webhook attempt.", min=0.1, max=600),
    Key("alerts", "webhook_retries", "int", 3,
        "Attempts after the first when the webhook fails.", min=0, max=20),
    Key("alerts", "notify_min_interval_secs", "float", 300.0,
        "At most one notification per alert and channel in this many seconds (resolutions always go).",
        min=0, max=604800),
    Key("classify", "store_cmdline", "bool", True,
        "Store (redacted) command lines of GPU processes; false stores none."),
    Key("classify", "steam_paths", "str_list", [],
        "Extra Steam library folders to scan for game names."),
    Key("classify", "rules", "table_list", [],
        "User classification rules ([[classify.rules]]), checked before the built-in ones.",
        validator=validate_rules),
    Key("report", "busy_threshold_percent", "float", 5.0,
        "A GPU counts as busy when its utilization is above this.", min=0, max=100),
    Key("daemon", "log_level", "choice", "info",
        "Log level of `gpm daemon`.", choices=("debug", "info", "warning", "error")),
    Key("daemon", "log_format", "choice", "text",
        "Log line format of `gpm daemon`.", choices=("text", "json")),
)

KEYS: dict[str, Key] = {k.dotted: k for k in SCHEMA}
SECTIONS: dict[str, list[Key]] = {}
for _k in SCHEMA:
    SECTIONS.setdefault(_k.section, []).append(_k)

# Variables that belong to the root command, not to a [section] key.
ROOT_ENV_VARS = ("GPM_DB", "GPM_CONFIG")


@dataclass
class Config:
    """The effective configuration: ``cfg.get("service.poll_interval_secs")``.

    ``values`` maps dotted keys to values; ``sources`` maps them to where the
    value came from ("default", "/path/config.toml:3", "env GPM_...", "flag --x").
    """

    values: dict[str, Any]
    sources: dict[str, str]
    config_path: str | None = None
    config_file_found: bool = False

    def get(self, dotted: str) -> Any:
        return self.values[dotted]

    def __getitem__(self, dotted: str) -> Any:
        return self.values[dotted]

    def source(self, dotted: str) -> str:
        return self.sources[dotted]

    def section(self, name: str) -> dict[str, Any]:
        return {k.name: self.values[k.dotted] for k in SECTIONS[name]}

    @property
    def db_file(self) -> str:
        """The database path as a string, for sqlite3 and messages."""
        value = self.values["storage.db_path"]
        return os.path.expanduser(value) if value else paths.default_db_path()

    @property
    def db_path(self) -> Path:
        return Path(self.db_file)

    @property
    def archive_dir(self) -> Path:
        """[storage] archive_dir when set, else the database's own folder (``gpm.store.archive_files.archive_folder``)."""
        from gpm.store.archive_files import archive_folder

        value = self.values["storage.archive_dir"]
        return archive_folder(self.db_file, os.path.expanduser(value) if value else None)

    @property
    def hostname(self) -> str:
        if self.values["service.hostname"]:
            return self.values["service.hostname"]
        # What socket.gethostname() returns.
        return os.uname().nodename

    def with_overrides(self, overrides: Mapping[str, tuple[Any, str]]) -> "Config":
        """A copy with flag values applied: ``{"dotted": (value, "--flag")}``."""
        values = dict(self.values)
        sources = dict(self.sources)
        for dotted, (value, flag) in overrides.items():
            if value is None:
                continue
            key = KEYS[dotted]
            values[dotted] = _check(key, value, f"option {flag}")
            sources[dotted] = f"flag {flag}"
        return Config(values, sources, self.config_path, self.config_file_found)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key in SCHEMA:
            out.setdefault(key.section, {})[key.name] = self.values[key.dotted]
        return out


def _shown(name: str) -> str:
    """A section or key name from the file, on one line with control characters visible."""
    return name if name.isprintable() else repr(name)[1:-1]


def _did_you_mean(word: str, options: list[str]) -> str:
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}


def _toml_value_safe(value: Any) -> str:
    try:
        return _toml_value(value)
    except TypeError:
        return repr(value)


def _parse_env(key: Key, raw: str, where: str) -> Any:
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


def _check(key: Key, value: Any, where: str) -> Any:
    """Validate a typed value against the key; return it (normalised)."""

    original = value

    def bad(reason: str = "") -> ConfigError:
        shown = repr(original) if isinstance(original, str) else _toml_value_safe(original)
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


_HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$")


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be an IP address or a DNS name, or None.

    Checked when the configuration is read, so that ``gpm config check``
    rejects what ``connect()`` or ``bind()`` would only reject later (#12.11).
    """
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return f"{host!r} is not an IPv6 address"
        return None
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address"
        return None
    if not _HOST_NAME.match(host) or len(host) > 253:
        return f"{host!r} is not a host name"
    return None


def url_problem(value: str) -> str | None:
    """Why ``value`` is not an http(s) URL the Ollama and OTLP clients can use, or None.

    The same ``urlsplit`` the clients call, so a URL that passes here does
    not fail at use with "Invalid IPv6 URL" or "Port out of range".
    """
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return "a URL holds no spaces or control characters"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as err:
        return str(err)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname:
        return "the URL names no host"
    if port == 0:
        return "port 0 cannot be connected to"
    return host_problem(parts.hostname)


def parse_listen(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"HOST:PORT"``, ``":PORT"``, ``"PORT"`` or ``"[::1]:PORT"`` -> (host, port).

    A ValueError says what is wrong, or is only ``value`` when the form is.
    """
    text = value.strip()
    if text.isdigit():
        host, port_text = default_host, text
    elif text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1:].startswith(":"):
            raise ValueError(value)
        host, port_text = text[1:end], text[end + 2:]
        if ":" not in host:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(value)
        host = host or default_host
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(value)
    problem = host_problem(host)
    if problem:
        raise ValueError(problem)
    return host, int(port_text)


def _key_line(text: str, section: str, name: str | None) -> int | None:
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


def _read_toml(path: str) -> tuple[dict[str, Any], str]:
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


def _apply_file(values: dict, sources: dict, path: str) -> None:
    data, text = _read_toml(path)
    for section, table in data.items():
        if section not in SECTIONS:
            line = _key_line(text, section, None)
            where = f"{path}:{line}" if line else str(path)
            raise ConfigError(
                f"{where}: unknown section [{_shown(section)}]{_did_you_mean(section, list(SECTIONS))}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: '{_shown(section)}' must be a [section] table, not a value")
        known = {k.name: k for k in SECTIONS[section]}
        for name, value in table.items():
            line = _key_line(text, section, name)
            where = f"{path}:{line}" if line else str(path)
            if name not in known:
                raise ConfigError(
                    f"{where}: unknown key '{_shown(name)}' in [{section}]{_did_you_mean(name, list(known))}"
                )
            key = known[name]
            values[key.dotted] = _check(key, value, where)
            sources[key.dotted] = where


def _apply_env(values: dict, sources: dict, env: Mapping[str, str]) -> None:
    by_var = {k.env_var: k for k in SCHEMA}
    prefixes = tuple(f"GPM_{s.upper()}_" for s in SECTIONS)
    for var, raw in env.items():
        if not var.startswith("GPM_") or var in ROOT_ENV_VARS:
            continue
        key = by_var.get(var)
        if key is None:
            if var.startswith(prefixes):
                raise ConfigError(
                    f"environment {_shown(var)}: unknown setting{_did_you_mean(var, list(by_var))}"
                )
            continue
        where = f"environment {var}"
        values[key.dotted] = _check(key, _parse_env(key, raw, where), where)
        sources[key.dotted] = f"env {var}"


def load_config(
    path: str | os.PathLike | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Resolve defaults < file < environment.

    ``path`` None means the default location, which may be absent. A path
    given explicitly (``--config``/``GPM_CONFIG``) must exist.
    """
    env = os.environ if env is None else env
    values = {k.dotted: _copy(k.default) for k in SCHEMA}
    sources = {k.dotted: "default" for k in SCHEMA}
    explicit = path is not None
    config_path = os.path.expanduser(os.fspath(path)) if explicit else paths.default_config_path()
    found = os.path.isfile(config_path)
    if explicit and not found:
        raise ConfigError(f"{config_path}: config file not found")
    if found:
        _apply_file(values, sources, config_path)
    _apply_env(values, sources, env)
    return Config(values, sources, config_path, found)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _num(value)
    if isinstance(value, str):
        text = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", text) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def example_toml() -> str:
    """The commented example written by ``gpm config init``.

    Every key is present, commented out at its default, so the file documents
    itself and an uncommented line is always a deliberate change.
    """
    lines = [
        "# gpm configuration. Precedence: defaults < this file < GPM_<SECTION>_<KEY>",
        "# environment variables < command-line flags. `gpm config show` prints the",
        "# effective values and where each came from; `gpm config check` validates.",
    ]
    for section, keys in SECTIONS.items():
        lines += ["", f"[{section}]"]
        for key in keys:
            lines.append(f"# {key.help} ({key.expected()}; env {key.env_var})")
            if key.type == "table_list":
                lines += [
                    "# Example rule (match on exe, name, cmdline regex, appid or library):",
                    f"# [[{section}.{key.name}]]",
                    '# cmdline = "my_trainer\\\\.py"',
                    '# category = "ml_training"',
                    '# label = "my trainer"',
                ]
            else:
                lines.append(f"# {key.name} = {_toml_value(key.default)}")
    return "\n".join(lines) + "\n"
