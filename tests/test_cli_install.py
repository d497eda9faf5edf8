"""`gpm install systemd|cron`: units systemd accepts, crontab lines that really run."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import gpm_env, run_gpm

needs_systemd = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")


def split_units(text: str) -> dict[str, str]:
    """Printed units -> {name: text}, split at the `# NAME` lines."""
    parts = re.split(r"^# (gpm[\w-]*\.(?:service|timer))\n", text, flags=re.M)
    assert parts[0] == ""
    return dict(zip(parts[1::2], parts[2::2]))


def exec_start(unit: str) -> list[str]:
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):].replace("%%", "%"))


def test_prints_every_unit_under_a_comment_naming_its_file():
    result = run_gpm("install", "systemd", "--timers", check=True)
    units = split_units(result.stdout)
    assert {"gpm.service", "gpm-sample.service", "gpm-sample.timer"} <= set(units)
    daemon = units["gpm.service"]
    for line in ("Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                 "ExecReload=/bin/kill -HUP $MAINPID", "StateDirectory=gpm", "ProtectHome=read-only"):
        assert line in daemon.splitlines()
    assert re.search(r"^WatchdogSec=\d+s$", daemon, re.M)
    argv = exec_start(daemon)
    assert os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)
    assert argv[-1] == "daemon"
    assert exec_start(units["gpm-sample.service"])[-5:] == ["sample", "--count", "6", "--interval", "10"]
    assert "OnCalendar=*-*-* *:*:00" in units["gpm-sample.timer"]


def test_user_units_keep_the_data_folders_writable(isolated_home):
    units = split_units(run_gpm("install", "systemd", "--user", check=True).stdout)
    daemon = units["gpm.service"]
    assert "WantedBy=default.target" in daemon and "ProtectHome" not in daemon
    assert f"ReadWritePaths=-{isolated_home}/.local/share/gpm" in daemon.splitlines()


def verify(directory: Path, *units: Path, user: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if user:
        runtime = directory / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    # man pages are not installed where tests run: --man=no
    return subprocess.run(["systemd-analyze", "verify", "--man=no", *(["--user"] if user else []),
                           *map(str, units)], capture_output=True, text=True, env=env, cwd=directory)


@needs_systemd
@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_systemd_analyze_accepts_every_unit(tmp_path, user):
    out = tmp_path / "units"
    # a database path with a space and a percent sign needs quoting and %% in ExecStart
    db = tmp_path / "my data" / "50%.db"
    result = run_gpm("--db", db, "install", "systemd", "--timers", "--dir", out,
                     *(["--user"] if user else []), check=True)
    written = sorted(out.iterdir())
    assert [f"wrote {p}" for p in written] == sorted(result.stdout.splitlines())
    checked = verify(tmp_path, *written, user=user)
    assert checked.stderr == "" and checked.returncode == 0, checked.stderr
    daemon = (out / "gpm.service").read_text()
    assert exec_start(daemon)[-3:] == ["--db", str(db), "daemon"]


def test_write_installs_user_units_and_says_what_to_run_next(isolated_home):
    result = run_gpm("install", "systemd", "--user", "--timers", "--write", check=True)
    folder = isolated_home / ".config" / "systemd" / "user"
    assert (folder / "gpm.service").is_file() and (folder / "gpm-sample.timer").is_file()
    assert "next: systemctl --user daemon-reload && systemctl --user enable --now gpm.service " \
           "gpm-sample.timer" in result.stdout
    assert (isolated_home / ".local/share/gpm").is_dir()
    again = run_gpm("install", "systemd", "--user", "--timers", "--write", check=True)
    assert f"unchanged {folder / 'gpm.service'}" in again.stdout


def test_dir_and_write_together_is_a_usage_error(tmp_path):
    result = run_gpm("install", "systemd", "--dir", tmp_path, "--write")
    assert result.returncode == 2
    assert "--dir and --write" in result.stderr


def test_a_system_folder_it_cannot_write_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_gpm("install", "systemd", "--dir", blocker / "units")
    assert result.returncode == 1
    assert result.stderr.startswith("gpm: ") and "cannot write unit" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_crontab_sample_line_runs_as_cron_would(fake_nvml, tmp_path):
    db = tmp_path / "cron 100%.db"
    text = run_gpm("--db", db, "install", "cron", check=True).stdout
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    sample = next(line for line in lines if " sample " in line)
    fields = sample.split(None, 5)
    assert fields[:5] == ["*"] * 5
    # cron turns \% back into % and hands the rest to /bin/sh
    command = fields[5].replace("\\%", "%").replace("--count 6 --interval 10", "--count 2 --interval 0.1")
    env = gpm_env(fake_nvml.env())
    env.pop("PYTHONPATH")  # cron has no PYTHONPATH: the line must carry what it needs
    result = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""  # cron mails any output
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM gpu_metrics").fetchone()[0] == 2
    assert re.search(r"^# @reboot .* daemon$", text, re.M)


# --- the weekly report keeps history (#13.9) ------------------------------------
# Local time with DST, as a POSIX rule (no zoneinfo file needed): weeks start at local Monday 00:00.
BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"


def _weekly_report_commands(kind: str, db: Path, out: Path) -> list[str]:
    """The shell commands systemd or cron would run for the weekly report, as generated."""
    if kind == "systemd":
        run_gpm("--db", db, "install", "systemd", "--timers", "--dir", out, check=True)
        unit = (out / "gpm-report.service").read_text()
        assert "OnCalendar=weekly" in (out / "gpm-report.timer").read_text()
        lines = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(("ExecStartPre=", "ExecStart="))]
        return [shlex.join(shlex.split(line.replace("%%", "%"))) for line in lines]
    text = run_gpm("--db", db, "install", "cron", check=True).stdout
    line = next(line for line in text.splitlines() if " report " in line and not line.startswith("#"))
    fields = line.split(None, 5)
    assert fields[:5] == ["23", "6", "*", "*", "1"]  # Mondays
    return [fields[5].replace("\\%", "%")]


def _at(when: str, commands: list[str], env: dict) -> None:
    for command in commands:
        result = subprocess.run(["faketime", when, "/bin/sh", "-c", command], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stderr


@pytest.mark.skipif(not shutil.which("faketime"), reason="faketime not installed (Debian package faketime)")
@pytest.mark.parametrize("kind", ["systemd", "cron"])
def test_weekly_report_writes_one_dated_file_per_finished_week(kind, fake_nvml, tmp_path):
    db = tmp_path / "data 100%" / "gpm.db"
    db.parent.mkdir()
    # a faked monotonic clock would stop `sample -i` sleeping: fake only the wall clock
    env = gpm_env(fake_nvml.env({**os.environ, "TZ": BERLIN, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}))
    # last week's data: Wednesday of 2026-W49, sampled for real under a faked clock
    _at("2026-12-02 10:00:00", [shlex.join([sys.executable, "-m", "gpm", "--db", str(db), "-q", "sample",
                                            "-n", "3", "-i", "0.2"])], env)
    commands = _weekly_report_commands(kind, db, tmp_path / "units")
    reports = db.parent / "reports"

    _at("2026-12-08 00:20:00", commands, env)  # the Monday run, after W49 ended (local midnight)
    w49 = reports / "report-2026-W49.txt"
    assert sorted(p.name for p in reports.iterdir()) == [w49.name]
    first = w49.read_text()
    assert first.startswith("gpm report: 2026-W49 (2026-11-30 00:00 → 2026-12-07 00:00)"), first
    inode = w49.stat().st_ino
    summaries = sqlite3.connect(db).execute("SELECT iso_week, gpus FROM weekly_summaries").fetchall()
    assert summaries == [("2026-W49", 1)]

    _at("2026-12-10 15:00:00", commands, env)  # a rerun in the same week rewrites the same file
    assert sorted(p.name for p in reports.iterdir()) == [w49.name]
    assert w49.stat().st_ino != inode and w49.read_text().startswith("gpm report: 2026-W49 ")
    inode = w49.stat().st_ino

    _at("2026-12-14 06:23:00", commands, env)  # next Monday: a new file, last week's kept as it was
    assert sorted(p.name for p in reports.iterdir()) == [w49.name, "report-2026-W50.txt"]
    assert (reports / "report-2026-W50.txt").read_text().startswith("gpm report: 2026-W50 ")
    assert w49.stat().st_ino == inode


def _exec_starts(unit: str) -> list[list[str]]:
    return [shlex.split(line[len("ExecStart="):].replace("%%", "%"))
            for line in unit.splitlines() if line.startswith("ExecStart=")]


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_weekly_html_writes_the_html_report_beside_the_text_one(tmp_path, user):
    """[report] weekly_html (#16): the report timer and the crontab line run the
    html report after the text one, into the same dated name with .html."""
    config = tmp_path / "config.toml"
    config.write_text("[report]\nweekly_html = true\n")
    db = tmp_path / "my data" / "50%.db"
    out = tmp_path / "units"
    args = ["--config", config, "--db", db]
    run_gpm(*args, "install", "systemd", "--timers", "--dir", out, *(["--user"] if user else []), check=True)
    text_run, html_run = _exec_starts((out / "gpm-report.service").read_text())
    reports = db.parent / "reports"
    assert text_run[-5:] == ["report", "--week", "last", "--output", f"{reports}/report-{{week}}.txt"]
    assert html_run[:-7] == text_run[:-5]  # the same gpm, --config and --db
    assert html_run[-7:] == ["report", "--week", "last", "--format", "html", "--output",
                             f"{reports}/report-{{week}}.html"]
    if shutil.which("systemd-analyze"):
        checked = verify(tmp_path, *sorted(out.iterdir()), user=user)
        assert checked.stderr == "" and checked.returncode == 0, checked.stderr
    cron = run_gpm(*args, "install", "cron", check=True).stdout
    line = next(line for line in cron.splitlines() if " report " in line and not line.startswith("#"))
    commands = line.split(None, 5)[5].replace("\\%", "%").split(" && ")
    assert [shlex.split(c) for c in commands[1:]] == [text_run, html_run]
    # Off (the default): the text report alone.
    config.write_text("[report]\nweekly_html = false\n")
    run_gpm(*args, "install", "systemd", "--timers", "--dir", out, check=True)
    assert _exec_starts((out / "gpm-report.service").read_text()) == [text_run]
    assert "--format html" not in run_gpm(*args, "install", "cron", check=True).stdout


# --- gpm install completions / man (#13.11) -------------------------------------
REPO = Path(__file__).resolve().parents[1]


def _without_th_date(page: str) -> str:
    return re.sub(r"^(\.TH \S+ 1 )\S+", r"\1-", page, flags=re.M)


def test_install_man_writes_the_repository_pages_where_man_finds_them(isolated_home):
    result = run_gpm("install", "man", check=True)
    folder = isolated_home / ".local/share/man/man1"
    repo_pages = sorted(p.name for p in (REPO / "man").glob("*.1"))
    assert sorted(p.name for p in folder.glob("*.1")) == repo_pages
    for name in repo_pages:
        assert _without_th_date((folder / name).read_text()) == _without_th_date((REPO / "man" / name).read_text())
    assert f"wrote {folder / 'gpm-sample.1'}" in result.stdout.splitlines()
    if shutil.which("man"):
        hint = next(line for line in result.stdout.splitlines() if line.startswith("man: "))
        manpath = re.search(r'MANPATH="([^"]+)', hint).group(1).replace("$MANPATH", "")
        found = subprocess.run(["man", "-w", "gpm-sample"], env=gpm_env({"MANPATH": manpath}),
                               capture_output=True, text=True)
        assert found.stdout.strip() == str(folder / "gpm-sample.1")
    again = run_gpm("install", "man", check=True)
    assert f"unchanged {folder / 'gpm.1'}" in again.stdout.splitlines()


@pytest.mark.skipif(not shutil.which("manpath"), reason="man-db's manpath not installed")
def test_install_man_prints_no_manpath_line_when_man_already_looks_there(isolated_home):
    bin_dir = isolated_home / ".local/bin"
    bin_dir.mkdir(parents=True)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = run_gpm("install", "man", env=env, check=True)
    assert not [line for line in result.stdout.splitlines() if line.startswith("man: ")]


def test_install_completions_for_every_shell_matches_the_repository(isolated_home):
    result = run_gpm("install", "completions", check=True)
    targets = {
        "gpm.bash": isolated_home / ".local/share/bash-completion/completions/gpm",
        "_gpm": isolated_home / ".local/share/zsh/site-functions/_gpm",
        "gpm.fish": isolated_home / ".config/fish/completions/gpm.fish",
    }
    for name, path in targets.items():
        assert path.read_text() == (REPO / "completions" / name).read_text()
    zsh_line = f"zsh: fpath=({targets['_gpm'].parent} $fpath)   # in ~/.zshrc, before compinit"
    assert zsh_line in result.stdout.splitlines()


def test_install_completions_one_shell_and_quiet(isolated_home):
    result = run_gpm("-q", "install", "completions", "--shell", "fish", check=True)
    assert result.stdout == ""
    assert (isolated_home / ".config/fish/completions/gpm.fish").is_file()
    assert not (isolated_home / ".local/share/bash-completion").exists()


@pytest.mark.skipif(not shutil.which("fish"), reason="fish not installed")
def test_fish_loads_the_installed_completions_by_itself(isolated_home):
    run_gpm("install", "completions", "--shell", "fish", check=True)
    bin_dir = isolated_home / "bin"  # fish autoloads a command's completions once it is on PATH
    bin_dir.mkdir()
    (bin_dir / "gpm").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "gpm").chmod(0o755)
    env = gpm_env({"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    out = subprocess.run(["fish", "-c", "complete -C 'gpm sam'"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.split("\t")[0].strip() == "sample"


def test_install_man_into_an_unwritable_folder_is_one_line(isolated_home):
    share = isolated_home / ".local/share"
    share.mkdir(parents=True)
    (share / "man").write_text("a file where the folder should be")
    result = run_gpm("install", "man")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot write" in result.stderr
    assert "Traceback" not in result.stderr
