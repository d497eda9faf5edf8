"""The text report reads right (#13.8): what a new user saw on the known week
of tests/test_report.py, or on a week built for the case, through `gpm report`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gpm.store.db import open_db, write
from gpm.store.llm import save_request
from gpm.store.samples import save_samples
from tests.test_report import (HOUR, MON, UTC, WEEK, archive_db, gpu, request,  # noqa: F401 (fixtures)
                               utc, week_db)


NOTE = re.compile(r"\* |.*\.$")  # a note or a sentence: they end in "."


def section(text: str, title: str) -> list[list[str]]:
    """The rows of a text section's table, cells split on runs of 2+ spaces
    (the notes under it, sentences, left out)."""
    lines = text.splitlines()
    at = lines.index(title) + 2
    end = next((i for i in range(at, len(lines)) if not lines[i].strip()), len(lines))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[at:end] if not NOTE.match(line)]


def column(rows: list[list[str]], name: str) -> list[str]:
    return [r[rows[0].index(name)] for r in rows[2:]]


def report(gpm, db: Path, *args) -> str:
    return gpm("--db", db, "report", "--week", WEEK, *args, env=UTC, check=True).stdout


def test_every_duration_column_has_one_unit(gpm, week_db):
    text = report(gpm, week_db)
    # Before: 8h 00m, 24h 00m and 5d 13h in one column; 1h 59m beside 59m 50s.
    assert column(section(text, "Gaps (sampler not running)"), "Length") == ["24.0 h", "133.0 h"]
    assert column(section(text, "Workload mix"), "GPU time") == ["2.0 h", "1.0 h", "1.0 h", "2.0 h", "0.5 h"]
    assert column(section(text, "LLM models loaded"), "Loaded") == ["9.9 min", "8.4 min"]
    lines = text.splitlines()
    days = [re.split(r"\s{2,}", line) for line in lines[lines.index("Per day") + 6:][:9]]
    assert column(days, "GPU time") == ["4.0 h", "2.0 h"] + ["0.0 h"] * 5


def test_the_hours_column_holds_hours(gpm, week_db):
    # Before: "1h 29m" and "30m" under "Hours".
    assert column(section(report(gpm, week_db), "Games"), "Hours") == ["1.5", "0.5"]


def test_energy_under_a_tenth_of_a_kwh_is_in_wh_everywhere(gpm, week_db):
    text = report(gpm, week_db)
    # 144 kJ is 40 Wh: before, "0.04 kWh" in the workload, games and processes.
    assert column(section(text, "Workload mix"), "Energy") == ["0.26 kWh", "40 Wh", "0.10 kWh", "30 Wh", "40 Wh"]
    assert column(section(text, "Games"), "Energy") == ["0.22 kWh", "40 Wh"]
    assert column(section(text, "Top processes"), "Energy")[:3] == ["30 Wh", "0.22 kWh", "40 Wh"]
    assert column(section(text, "LLM requests per model"), "Energy") == ["0.4 Wh", "0.1 Wh*"]
    assert "kWh" not in "".join(column(section(text, "Workload mix"), "Energy")[1:2])


def test_a_day_without_energy_draws_no_block(gpm, tmp_path):
    """Monday uses energy, Tuesday is sampled with a counter that does not move,
    the other days have no samples: an empty cell, then the gap marks."""
    db = tmp_path / "gpm.db"
    conn = open_db(db)
    save_samples(conn, "lab", [gpu(MON + HOUR + i * 10_000, 0, utilization_gpu_percent=50, power_watts=100.0,
                                   energy_joules=1000.0 + i * 1000) for i in range(100)]
                 + [gpu(MON + 25 * HOUR + i * 10_000, 0, utilization_gpu_percent=0, power_watts=0.0,
                        energy_joules=500.0) for i in range(100)])
    conn.close()
    days = json.loads(report(gpm, db, "--format", "json"))["days"]
    assert [d["energy_joules"] for d in days[:3]] == [99000.0, 0.0, None]
    strip = dict(line.split(None, 1) for line in report(gpm, db).splitlines()
                 if line.startswith(("days ", "energy ")))
    assert strip["energy"].startswith("█ ·····  0–28 Wh per day"), strip


def test_unknown_token_counts_are_a_dash_not_zero(gpm, tmp_path):
    db = tmp_path / "gpm.db"
    conn = open_db(db)
    with write(conn):
        save_request(conn, request("mistral:7b", MON + HOUR, MON + HOUR + 1_000, status=500,
                                   error="model not found"))
        save_request(conn, request("llama3.1:8b", MON + HOUR, MON + HOUR + 1_000, completion_tokens=12))
    conn.close()
    rows = section(report(gpm, db), "LLM requests per model")
    assert dict(zip(column(rows, "Model"), column(rows, "In/out tok"))) == {"llama3.1:8b": "–/12",
                                                                           "mistral:7b": "–"}
    llm = {m["model"]: m for m in json.loads(report(gpm, db, "--format", "json"))["llm"]}
    assert (llm["mistral:7b"]["prompt_tokens"], llm["mistral:7b"]["completion_tokens"]) == (None, None)
    assert (llm["llama3.1:8b"]["prompt_tokens"], llm["llama3.1:8b"]["completion_tokens"]) == (None, 12)


def test_a_footnote_only_under_rows_that_carry_its_mark(gpm, week_db, tmp_path):
    text = report(gpm, week_db)
    assert column(section(text, "Per GPU"), "Energy") == ["0.63 kWh", "0.24 kWh*"]
    assert text.count("\n* no energy counter") == 1 and text.count("\n* measured requests only") == 1
    # Archived requests are counted, not measured: no energy, no mark, so no footnote.
    archive = tmp_path / "archive"
    archive_db(week_db, archive, "lab")
    text = report(gpm, week_db, "--archive-dir", archive)
    assert column(section(text, "LLM requests per model"), "Energy") == ["-", "-"]
    assert "*" not in "".join(column(section(text, "LLM requests per model"), "Energy"))
    assert "measured requests only" not in text


def test_a_missing_archived_file_is_reported_once(gpm, week_db, tmp_path):
    """The report reads the archive around its cached hours in three spans,
    and the history reader said so for each of them."""
    report(gpm, week_db, "-o", tmp_path / "cache-the-hours.txt")
    archive = tmp_path / "archive"
    archive_db(week_db, archive, "lab")
    gone = sorted((archive / "gpu_metrics").rglob("*.parquet"))[0]
    gone.unlink()
    proc = gpm("--db", week_db, "report", "--week", WEEK, "--archive-dir", archive, env=UTC)
    assert proc.returncode == 0
    assert proc.stderr.splitlines() == [f"{gone}: archived file is missing"]


def test_an_unknown_gpu_is_a_usage_error_naming_the_known_ones(gpm, week_db):
    # Before: exit 0 and a report of a 7-day gap.
    proc = gpm("--db", week_db, "report", "--week", WEEK, "--gpu", "7", env=UTC)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.splitlines() == ["gpm: --gpu 7: no such GPU; known GPUs: 0 (NVIDIA GeForce RTX 4090), "
                                        "1 (NVIDIA GeForce RTX 4090) (give an index or a UUID prefix)"]


def test_a_new_database_says_how_to_start_sampling(gpm, tmp_path):
    db = tmp_path / "new.db"
    proc = gpm("--db", db, "report", env=UTC)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [f"gpm report: nothing sampled yet (database {db}).",
                                        "Take a sample now:        gpm sample",
                                        "Keep sampling (systemd):  gpm install systemd --user --write",
                                        "Then run `gpm report` again."]


def test_the_range_before_the_first_sample_ever_is_no_gap(gpm, week_db):
    before = report(gpm, week_db).split("\nGaps")[0]
    assert "lab: first sample ever 2025-11-17 08:00; the range before it is not counted." in before
    coverage = json.loads(report(gpm, week_db, "--format", "json"))["coverage"][0]
    assert coverage["gaps"][0]["start_ms"] == MON + 10 * HOUR - 10_000
    assert coverage["before_first_sample_seconds"] == 8 * 3600
    earlier = json.loads(gpm("--db", week_db, "report", "--week", "2025-W46", "--format", "json",
                             env=UTC, check=True).stdout)["coverage"][0]
    assert (earlier["gaps"], earlier["gap_seconds"], earlier["coverage_ratio"]) == ([], 0.0, None)


def on_a_terminal(args: list, env: dict, rows: int = 24, cols: int = 80) -> tuple[int, str]:
    """Run `gpm ARGS` with stdin and stdout on a pseudo-terminal of ROWS x COLS; (exit code, what it showed)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios
    import threading

    from tests.conftest import gpm_env

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    shown = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    proc = subprocess.run([sys.executable, "-m", "gpm", *map(str, args)], stdin=slave, stdout=slave,
                          stderr=subprocess.PIPE, env=gpm_env({**env, "COLUMNS": cols, "LINES": rows}),
                          timeout=60)
    os.close(slave)
    reader.join(timeout=5)
    os.close(master)
    return proc.returncode, shown.decode("utf-8", "replace").replace("\r\n", "\n")


def test_a_long_text_report_on_a_terminal_goes_through_the_pager(gpm, week_db, tmp_path):
    paged = tmp_path / "paged.txt"
    pager = tmp_path / "pager"
    pager.write_text(f"#!/bin/sh\ncat > '{paged}'\n")
    pager.chmod(0o755)
    env = {**UTC, "PAGER": pager}
    args = ["--db", week_db, "report", "--week", WEEK]
    piped = gpm(*args, env=env, check=True).stdout
    assert not paged.exists(), "piped output is never paged"
    code, shown = on_a_terminal(args, env)
    assert code == 0 and shown == ""
    assert paged.read_text(encoding="utf-8") == piped and len(piped.splitlines()) > 24
    paged.unlink()
    # What fits the terminal, a file (-o) and json are written as they are.
    code, shown = on_a_terminal([*args, "--section", "coverage"], env)
    assert code == 0 and shown.startswith("gpm report: 2025-W47") and not paged.exists()
    code, _ = on_a_terminal([*args, "-o", tmp_path / "week.txt"], env)
    assert code == 0 and not paged.exists() and (tmp_path / "week.txt").read_text(encoding="utf-8") == piped
    code, shown = on_a_terminal([*args, "--format", "json"], env)
    assert code == 0 and json.loads(shown)["report"]["iso_week"] == WEEK and not paged.exists()


LONG_MODEL = "hf.co/bartowski/Meta-Llama-3.1-70B-Instruct-GGUF:Q4_K_M"


def test_markdown_in_a_file_keeps_whole_cells_text_fits_80_and_a_terminal_its_width(gpm, week_db, tmp_path):
    """#13.1: a file is not a terminal. Markdown written with -o keeps every
    cell whole, text written with -o fits 80 columns whatever the terminal,
    and markdown on an 80-column terminal fits it too."""
    from gpm.humanize import display_width

    conn = open_db(week_db)
    with write(conn):
        save_request(conn, request(LONG_MODEL, MON + HOUR, MON + HOUR + 1_000, completion_tokens=12))
    conn.close()
    args = ["--db", week_db, "report", "--week", WEEK]
    md, txt = tmp_path / "week.md", tmp_path / "week.txt"
    assert on_a_terminal([*args, "--format", "markdown", "-o", md], UTC, cols=200)[0] == 0
    assert on_a_terminal([*args, "-o", txt], UTC, cols=200)[0] == 0
    markdown = md.read_text(encoding="utf-8")
    assert f"| {LONG_MODEL} |" in markdown and max(map(display_width, markdown.splitlines())) > 80
    text = txt.read_text(encoding="utf-8")
    assert max(map(display_width, text.splitlines())) <= 80
    assert [line for line in text.splitlines() if line.startswith("hf.co/bartow") and "…" in line]
    code, shown = on_a_terminal([*args, "--format", "markdown"], UTC, cols=80)
    assert code == 0 and max(map(display_width, shown.splitlines())) <= 80
    rows = [line for line in shown.splitlines() if line.startswith("| hf.co/")]
    assert len(rows) == 1 and "…" in rows[0] and rows[0].endswith(" |"), rows


def test_busy_summed_over_gpus_is_labelled_gpu_busy_and_says_so(gpm, tmp_path):
    """#13.8: Hosts showed "Busy" 5.0 h (both GPUs) beside coverage's
    "Sampled" 3.0 h (the host's wall time), and read as busy > sampled."""
    from tests.test_report import fill_week

    db = tmp_path / "two-hosts.db"
    fill_week(db, "lab")
    fill_week(db, "rig")
    text = report(gpm, db)
    summed = "GPU time and GPU-busy: summed over the GPUs (2 GPUs busy for 1 h: 2.0 h)."
    coverage, hosts = section(text, "Coverage"), section(text, "Hosts")
    assert column(coverage, "Sampled") == ["3.0 h", "3.0 h"]
    assert hosts[0] == ["Host", "GPUs", "Coverage", "GPU time", "GPU-busy", "Util", "Energy", "Throttled"]
    assert column(hosts, "GPU-busy")[:2] == ["5.0 h", "5.0 h"]
    assert " 10.0 h " in text.splitlines()[text.splitlines().index("Hosts") + 6], "fleet"
    assert section(text, "Per GPU")[0][2] == "Busy", "per GPU, busy is that GPU's"
    days = text[text.index("\nDay "):]
    assert days.split("\n")[1].split() == ["Day", "GPU", "time", "GPU-busy", "Util", "Energy"]
    assert text.count(summed) == 2, "under Hosts and Per day"
    one = gpm("--db", db, "report", "--week", WEEK, "--host", "lab", "--gpu", "0", env=UTC, check=True).stdout
    assert "GPU-busy" in one and "summed over the GPUs" not in one, "one GPU: nothing summed"


def test_the_trend_fits_80_columns_with_its_numbers_whole():
    """The weekly trend was 90 columns; "Top use" (a label) gives way, after its share."""
    from gpm.humanize import display_width
    from gpm.report.build import Report
    from gpm.report.period import Period
    from gpm.report.render import render

    week = {"iso_week": "2025-W47", "gpus": 12, "coverage_ratio": 0.987, "busy_seconds": 123.4 * 3600,
            "utilization_mean_percent": 55.0, "energy_joules": 3.6e9, "throttled_seconds": 99.5 * 3600,
            "category_energy_joules": {"general_compute": 1.0, "llm_inference": 3.0},
            "llm_requests": 5, "completion_tokens": 1_234_567}
    rep = Report(period=Period(MON, MON + 7 * 24 * HOUR, "last 1 weeks"), generated_ms=MON,
                 busy_threshold_percent=5, trend=[week])
    lines = render(rep, "text", width=80).splitlines()
    assert max(map(display_width, lines)) <= 80
    at = lines.index("Weekly trend") + 2
    assert lines[at].split() == ["Week", "GPUs", "Covered", "GPU-busy", "Util", "Energy", "Throttled", "Gen",
                                 "tok", "Top", "use"]
    assert lines[at + 2] == "2025-W47    12    98.7%   123.4 h   55%  1000 kWh     99.5 h  1,234,567  75% ll…"
    assert lines[at + 3] == "GPU-busy: summed over the GPUs (2 GPUs busy for 1 h: 2.0 h)."
    wide = render(rep, "text", width=120).splitlines()
    assert wide[at + 2].endswith("  75% llm_inference")
