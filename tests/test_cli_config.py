"""Configuration as a new user meets it: files, variables, flags and mistakes."""

from __future__ import annotations

import json
import os

import pytest

from gpm.config import SCHEMA, load_config
from gpm.errors import ConfigError


def write_config(home, text: str):
    path = home / ".config" / "gpm" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_any_file(isolated_home):
    cfg = load_config()
    assert cfg["service.poll_interval_secs"] == 2.0
    assert cfg.source("service.poll_interval_secs") == "default"
    assert cfg.db_path == isolated_home / ".local/share/gpm/gpm.db"
    assert not cfg.config_file_found


def test_precedence_default_file_env_flag(isolated_home, monkeypatch):
    path = write_config(isolated_home, "[service]\npoll_interval_secs = 3\n[gpu]\nnvidia_smi_timeout_secs = 9\n")
    monkeypatch.setenv("GPM_SERVICE_POLL_INTERVAL_SECS", "4")
    cfg = load_config()
    assert cfg["gpu.nvidia_smi_timeout_secs"] == 9.0
    assert cfg.source("gpu.nvidia_smi_timeout_secs") == f"{path}:4"
    assert cfg["service.poll_interval_secs"] == 4.0
    assert cfg.source("service.poll_interval_secs") == "env GPM_SERVICE_POLL_INTERVAL_SECS"
    flagged = cfg.with_overrides({"service.poll_interval_secs": (5.0, "--interval")})
    assert flagged["service.poll_interval_secs"] == 5.0
    assert flagged.source("service.poll_interval_secs") == "flag --interval"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[service]\npol_interval_secs = 1\n",
         ":2: unknown key 'pol_interval_secs' in [service] (did you mean 'poll_interval_secs'?)"),
        ("[servce]\npoll_interval_secs = 1\n", ":1: unknown section [servce] (did you mean 'service'?)"),
        ("[service]\npoll_interval_secs = -1\n",
         ":2: [service] poll_interval_secs = -1: expected a number from 0.1 to 3600"),
        ("[gpu]\nenable_nvml = \"yes\"\n", ":2: [gpu] enable_nvml = 'yes': expected true or false"),
        ("[storage]\nretention_days = 2.5\n",
         ":2: [storage] retention_days = 2.5: expected an integer from 1 to 36500"),
        ("[ollama]\napi_url = \"localhost:11434\"\n",
         ":2: [ollama] api_url = 'localhost:11434': expected an http:// or https:// URL"),
        ("[telemetry]\nmetrics_listen = \"127.0.0.1:99999\"\n",
         ":2: [telemetry] metrics_listen = '127.0.0.1:99999': expected HOST:PORT"),
        ("[telemetry]\notlp_protocol = \"udp\"\n",
         ":2: [telemetry] otlp_protocol = 'udp': expected one of 'grpc', 'http/protobuf'"),
        ("[service\n", ": invalid TOML: "),
        ("service = 3\n", ": 'service' must be a [section] table"),
    ],
)
def test_bad_config_file_is_one_line_exit_2(isolated_home, gpm, text, expected):
    path = write_config(isolated_home, text)
    result = gpm("config", "check")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"gpm: {path}")
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "var, value, expected",
    [
        ("GPM_SERVICE_POLL_INTERVAL_SECS", "fast",
         "environment GPM_SERVICE_POLL_INTERVAL_SECS: [service] poll_interval_secs = 'fast': expected a number"),
        ("GPM_GPU_ENABLE_NVML", "maybe", "[gpu] enable_nvml = 'maybe': expected true or false"),
        ("GPM_SERVICE_POLL_INTERVL_SECS", "1", "unknown setting (did you mean 'GPM_SERVICE_POLL_INTERVAL_SECS'?)"),
        ("GPM_STORAGE_RETENTION_DAYS", "0", "[storage] retention_days = 0: expected an integer from 1"),
    ],
)
def test_bad_environment_is_one_line_exit_2(gpm, var, value, expected):
    result = gpm("config", "check", env={var: value})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert expected in result.stderr


def test_missing_explicit_config_file(gpm, tmp_path):
    result = gpm("--config", tmp_path / "nope.toml", "config", "check")
    assert result.returncode == 2
    assert "nope.toml: config file not found" in result.stderr


def test_env_booleans_and_lists(monkeypatch):
    monkeypatch.setenv("GPM_GPU_ENABLE_NVML", "no")
    monkeypatch.setenv("GPM_CLASSIFY_STEAM_PATHS", "/a, /b")
    cfg = load_config()
    assert cfg["gpu.enable_nvml"] is False
    assert cfg["classify.steam_paths"] == ["/a", "/b"]


def test_show_json_names_sources(isolated_home, gpm, tmp_path):
    path = write_config(isolated_home, "[storage]\nretention_days = 14\n")
    db = tmp_path / "x.db"
    result = gpm("--db", db, "config", "show", "--json", check=True)
    shown = json.loads(result.stdout)
    assert shown["storage"]["retention_days"] == {"value": 14, "source": f"{path}:2"}
    assert shown["storage"]["db_path"] == {"value": str(db), "source": "flag --db"}
    assert shown["service"]["poll_interval_secs"]["source"] == "default"
    assert set(shown) == {k.section for k in SCHEMA}


def test_show_table(gpm):
    result = gpm("config", "show", check=True)
    assert "service.poll_interval_secs" in result.stdout
    assert "(not present)" in result.stdout


def test_init_writes_a_valid_example_and_never_overwrites(isolated_home, gpm):
    path = isolated_home / ".config/gpm/config.toml"
    assert gpm("config", "init", check=True).stdout.strip() == f"wrote {path}"
    text = path.read_text()
    for key in SCHEMA:
        assert key.env_var in text
    assert gpm("config", "check").returncode == 0
    second = gpm("config", "init")
    assert second.returncode == 1
    assert "already exists (use --force to overwrite)" in second.stderr
    path.write_text("[service]\npoll_interval_secs = 9\n")
    assert gpm("config", "init", "--force").returncode == 0
    assert "poll_interval_secs = 9" not in path.read_text()


def test_uncommented_example_round_trips(tmp_path):
    """Every default, uncommented, is itself a valid configuration."""
    from gpm.config import example_toml

    lines = []
    for line in example_toml().splitlines():
        if line.startswith("# ") and " = " in line and not line.startswith("# [") and "\\" not in line:
            candidate = line[2:]
            name = candidate.split(" = ")[0]
            if name.isidentifier() and name not in ("cmdline", "category", "label"):
                lines.append(candidate)
                continue
        lines.append(line)
    path = tmp_path / "c.toml"
    path.write_text("\n".join(lines))
    cfg = load_config(path)
    for key in SCHEMA:
        if key.type != "table_list":
            assert cfg.source(key.dotted).startswith(str(path)), key.dotted


def test_config_error_type():
    with pytest.raises(ConfigError):
        load_config(env={"GPM_OLLAMA_API_URL": "ftp://x"})


def _shown_row(stdout: str, key: str) -> list[str]:
    """[value, source] of one key in `config show`'s table."""
    line = next(line for line in stdout.splitlines() if line.startswith(key + " "))
    value, source = line[len(key):].strip().split("  ", 1)
    return [value, source.strip()]


def test_show_prints_the_paths_and_host_actually_used(isolated_home, gpm, fake_nvml, tmp_path):
    """#13.10: empty settings showed `""`; the table shows what is used, and why."""
    WIDE = {"COLUMNS": "400"}  # whole paths: on 80 columns a long value is cut with …
    data = isolated_home / ".local/share/gpm"
    shown = gpm("config", "show", env=WIDE, check=True).stdout
    assert _shown_row(shown, "storage.db_path") == [f'"{data}/gpm.db"', "default"]
    assert _shown_row(shown, "storage.archive_dir") == [f'"{data}/archive"', "default (beside the database)"]
    assert _shown_row(shown, "service.hostname") == [f'"{os.uname().nodename}"', "default (this machine's name)"]

    db = tmp_path / "b.db"
    shown = gpm("--db", db, "config", "show", env=WIDE, check=True).stdout
    assert _shown_row(shown, "storage.db_path") == [f'"{db}"', "flag --db"]
    assert _shown_row(shown, "storage.archive_dir") == [f'"{db}-archive"', "default (beside the database)"]

    elsewhere = tmp_path / "parquet"
    gpm("--db", db, "sample", env=fake_nvml.env(), check=True)
    gpm("--db", db, "archive", "--archive-dir", elsewhere, check=True)
    shown = gpm("--db", db, "config", "show", env=WIDE, check=True).stdout
    assert _shown_row(shown, "storage.archive_dir") == [f'"{elsewhere}"', "where the database last archived"]
    shown = gpm("--db", db, "config", "show", "--json", check=True).stdout
    assert json.loads(shown)["storage"]["archive_dir"] == {"value": "", "source": "default"}  # JSON stays exact
