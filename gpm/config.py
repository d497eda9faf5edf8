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
import re
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from gpm import paths
from gpm.addresses import url_problem
from gpm.config_file import key_line, read_toml
from gpm.config_values import Key, check_value, parse_env_value, toml_value
from gpm.errors import ConfigError
from gpm.gpu.sample import THROTTLE_REASONS


def validate_rules(value: Any, where: str) -> Any:
    """``[classify] rules``' validator: ``gpm.classify.user_rules.validate_rules``."""
    # Imported here: compiling the built-in rules costs 20-40 ms that `gpm --help` and an idle cron sample skip.
    from gpm.classify.user_rules import validate_rules as validate

    return validate(value, where)


def validate_alert_overrides(value: Any, where: str) -> Any:
    """``[[alerts.override]]``' validator: ``gpm.alerts.rules.validate_overrides``."""
    # Imported here, like the rules above: only a config that sets overrides pays for it.
    from gpm.alerts.rules import validate_overrides

    return validate_overrides(value, where)


def validate_throttle_reasons(value: Any, where: str) -> Any:
    """``[alerts] throttle_reasons``: names as nvidia-smi gives them (``gpm.gpu.sample.THROTTLE_REASONS``)."""
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


def validate_currency(value: Any, where: str) -> Any:
    """``[report] currency``: an ISO 4217 code, three capital letters (EUR, USD, CHF)."""
    if not re.fullmatch(r"[A-Z]{3}", value):
        raise ConfigError(f"{where}: [report] currency = {value!r}: expected an ISO 4217 code of "
                          "three capital letters, e.g. EUR")
    return value


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
    Key("report", "electricity_price_per_kwh", "float", None,
        "Price of one kWh in [report] currency, e.g. 0.30; not set: no money figures (docs/report.md).",
        min=0, max=1e6),
    Key("report", "currency", "str", "",
        "ISO 4217 code shown before every amount, e.g. EUR; empty: amounts without a code.",
        validator=validate_currency),
    Key("report", "carbon_intensity_g_per_kwh", "float", None,
        "Grams of CO2 per kWh of your electricity, e.g. 380; not set: no CO2 figures.", min=0, max=1e5),
    Key("report", "weekly_html", "bool", False,
        "The weekly report of `gpm install systemd --timers` and `gpm install cron` also writes html."),
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
        # Imported here: the store's timeseries module costs `gpm --help` ~10 ms, and the store sits above config.
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
            values[dotted] = check_value(key, value, f"option {flag}")
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






def _apply_file(values: dict, sources: dict, path: str) -> None:
    data, text = read_toml(path)
    for section, table in data.items():
        if section not in SECTIONS:
            line = key_line(text, section, None)
            where = f"{path}:{line}" if line else str(path)
            raise ConfigError(
                f"{where}: unknown section [{_shown(section)}]{_did_you_mean(section, list(SECTIONS))}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: '{_shown(section)}' must be a [section] table, not a value")
        known = {k.name: k for k in SECTIONS[section]}
        for name, value in table.items():
            line = key_line(text, section, name)
            where = f"{path}:{line}" if line else str(path)
            if name not in known:
                raise ConfigError(
                    f"{where}: unknown key '{_shown(name)}' in [{section}]{_did_you_mean(name, list(known))}"
                )
            key = known[name]
            values[key.dotted] = check_value(key, value, where)
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
        values[key.dotted] = check_value(key, parse_env_value(key, raw, where), where)
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
            elif key.default is None:  # not set: its lowest value shows the form
                lines.append(f"# {key.name} = {toml_value(key.min)}   # not set by default")
            else:
                lines.append(f"# {key.name} = {toml_value(key.default)}")
    return "\n".join(lines) + "\n"
