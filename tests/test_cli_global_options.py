"""Global options work where people type them: before or after the subcommand (#13.3)."""

from __future__ import annotations

import sqlite3

from tests.conftest import run_gpm


def count(db) -> int:
    return sqlite3.connect(db).execute("SELECT COUNT(*) FROM gpu_samples").fetchone()[0]


def test_db_after_the_subcommand_is_the_database_used(fake_nvml, tmp_path):
    db = tmp_path / "after.db"
    run_gpm("sample", "--db", db, env=fake_nvml.env(), check=True)
    assert count(db) == 1
    assert not (tmp_path / "home/.local/share/gpm/gpm.db").exists()


def test_the_later_db_wins_when_given_twice(fake_nvml, tmp_path):
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    run_gpm("--db", first, "sample", "--db", second, env=fake_nvml.env(), check=True)
    assert count(second) == 1
    assert not first.exists()


def test_quiet_after_the_subcommand_silences_it(fake_nvml, tmp_path):
    loud = run_gpm("--db", tmp_path / "a.db", "config", "show", env=fake_nvml.env(), check=True)
    quiet = run_gpm("sample", "-q", "--db", tmp_path / "a.db", env=fake_nvml.env(), check=True)
    assert loud.stdout and quiet.stdout == "" and quiet.stderr == ""


def test_verbose_after_the_subcommand_acts_like_before_it(tmp_path):
    db = tmp_path / "a.db"
    plain = run_gpm("--db", db, "archive", check=True)  # piped: quiet unless -v
    before = run_gpm("-v", "--db", db, "archive", check=True)
    after = run_gpm("archive", "-v", "--db", db, check=True)
    assert plain.stdout == ""
    assert after.stdout == before.stdout and "nothing to archive" in after.stdout


def test_config_after_a_nested_subcommand(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[service]\npoll_interval_secs = 7\n")
    result = run_gpm("config", "show", "--config", cfg, check=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("service.poll_interval_secs"))
    assert line.split()[1:] == ["7.0", "c.toml:2"] and str(cfg) in result.stdout


def test_subcommand_help_stays_uncluttered():
    assert "--db" not in run_gpm("sample", "--help", check=True).stdout
    assert "--db" in run_gpm("--help", check=True).stdout
