"""What the week cost (#16): money and CO2 from the [report] prices, on the
known week of tests/test_report.py.

With a price and an intensity set, every priced object's cost and CO2 equal
its energy in kWh times the price to the cent and times the intensity to
the gram, in json and in the text and markdown tables; unset, no word of
money or CO2 anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time

import pytest

from gpm.humanize import display_width
from tests.conftest import run_gpm
from tests.test_report import UTC, WEEK, fill_last_week, fill_week

PRICE, CURRENCY, INTENSITY = 4.5, "SEK", 1234.5
PRICED = {**UTC, "GPM_REPORT_ELECTRICITY_PRICE_PER_KWH": str(PRICE), "GPM_REPORT_CURRENCY": CURRENCY,
          "GPM_REPORT_CARBON_INTENSITY_G_PER_KWH": str(INTENSITY)}
KWH = 3_600_000
# Every list (or object) of the json whose energy is priced, and the key naming each row.
PRICED_SECTIONS = {"gpus": "gpu_index", "hosts": "host", "workload": "category", "games": "game", "llm": "model"}


@contextlib.contextmanager
def isolated(folder):
    """What conftest's isolated_home does for a test, for a module's fixture: no GPM_* variable, no user's config."""
    with pytest.MonkeyPatch.context() as mp:
        for var in [v for v in os.environ if v.startswith("GPM_")]:
            mp.delenv(var)
        mp.setenv("XDG_CONFIG_HOME", str(folder / "config"))
        mp.setenv("TZ", "UTC")
        time.tzset()
        yield
    time.tzset()


@pytest.fixture(scope="module")
def week_db(tmp_path_factory):
    """The known week, stored once for the module (its reports only read it, and store the same week)."""
    folder = tmp_path_factory.mktemp("cost")
    with isolated(folder):
        fill_week(folder / "gpm.db")
    return folder / "gpm.db"


@pytest.fixture(scope="module")
def priced_json(week_db) -> dict:
    """The known week's json report with PRICED's prices."""
    with isolated(week_db.parent):
        return json.loads(report(run_gpm, week_db, "--week", WEEK, "--format", "json").stdout)


def exact_cost(joules: float) -> float:
    return joules / KWH * PRICE


def exact_co2(joules: float) -> float:
    return joules / KWH * INTENSITY


def report(gpm, db, *args, env=PRICED, check=True):
    return gpm("--db", db, "report", *args, env=env, check=check)


def test_json_prices_every_energy_exactly(priced_json, week_db):
    got = priced_json
    assert got["pricing"] == {"electricity_price_per_kwh": PRICE, "currency": CURRENCY,
                              "carbon_intensity_g_per_kwh": INTENSITY}
    rows = [got["fleet"]] + [row for section in PRICED_SECTIONS for row in got[section]]
    assert len(rows) == 1 + 2 + 1 + 5 + 2 + 2
    for row in rows:
        joules = row["energy_joules"]
        assert joules > 0, row
        assert row["cost"] == pytest.approx(exact_cost(joules), abs=1e-6), row
        assert row["co2_grams"] == pytest.approx(exact_co2(joules), abs=1e-3), row
        keys = list(row)
        assert keys[keys.index("energy_joules") + 1:][:2] == ["cost", "co2_grams"], "beside the energy"
    # The fleet: 3,118,400 J = 0.866 kWh: SEK 3.90 and 1,069 g.
    assert (round(got["fleet"]["cost"], 2), round(got["fleet"]["co2_grams"])) == (3.90, 1069)
    for model in got["llm"]:
        per_million = exact_cost(model["joules_per_token"] * 1_000_000)
        assert model["cost_per_million_tokens"] == pytest.approx(per_million, abs=1e-6)
    assert round(got["llm"][0]["cost_per_million_tokens"], 2) == 3.41  # 2.727 J/token
    # Days, processes and loaded models carry no prices; nor does the stored week.
    assert not [k for day in got["days"] for k in day if k in ("cost", "co2_grams")]
    stored = sqlite3.connect(week_db).execute("SELECT gpus_json FROM weekly_summaries").fetchone()[0]
    assert "cost" not in stored and "co2" not in stored


def _text_rows(text: str) -> dict[tuple[str, str], tuple[str, ...]]:
    """(kind, what) -> (cost, CO2, per 1M tokens) of the text's "Cost and CO2" table."""
    lines = text.splitlines()
    at = lines.index("Cost and CO2") + 4
    row = re.compile(rf"^(\S+)\s+(.*?)\s+({CURRENCY}\s+[\d,.]+)\s+([\d,.]+ (?:g|kg|t))(?:\s+({CURRENCY}\s+[\d.]+))?$")
    out = {}
    for line in lines[at:]:
        m = row.match(line)
        if not m:
            break
        out[(m[1], m[2])] = m.groups()[2:]
    return out


def _markdown_rows(text: str) -> dict[tuple[str, str], tuple[str, ...]]:
    lines = text.splitlines()
    at = lines.index("## Cost and CO2") + 3
    out = {}
    for line in lines[at:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[(cells[0], cells[1])] = tuple(cells[2:])
    return out


def _amount(cell: str) -> float:
    assert cell.startswith(CURRENCY + " "), cell
    return float(cell[len(CURRENCY):].replace(",", ""))


def _grams(cell: str) -> float:
    number, unit = cell.split()
    return float(number.replace(",", "")) * {"g": 1, "kg": 1000, "t": 1_000_000}[unit]


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_text_and_markdown_show_cost_and_co2_to_the_cent_and_the_gram(gpm, week_db, priced_json, fmt):
    got = priced_json
    text = report(gpm, week_db, "--week", WEEK, "--format", fmt).stdout
    shown = _text_rows(text) if fmt == "text" else _markdown_rows(text)
    expected = {("GPU", f"{g['gpu_index']} RTX 4090"): g for g in got["gpus"]}
    expected[("host", "lab")] = got["hosts"][0]
    expected.update({("category", w["category"]): w for w in got["workload"]})
    expected.update({("game", g["game"]): g for g in got["games"]})
    expected.update({("model", m["model"]): m for m in got["llm"]})
    assert list(shown) == list(expected)
    for key, row in expected.items():
        cells = shown[key]
        assert abs(_amount(cells[0]) - exact_cost(row["energy_joules"])) <= 0.005 + 1e-9, (key, cells)
        assert abs(_grams(cells[1]) - exact_co2(row["energy_joules"])) <= 0.5 + 1e-9, (key, cells)
        if key[0] == "model":
            per_million = exact_cost(row["joules_per_token"] * 1_000_000)
            assert abs(_amount(cells[2]) - per_million) <= 0.005 + 1e-9, (key, cells)
        else:
            assert not cells[2:] or not cells[2], (key, cells)
    assert shown[("host", "lab")][:2] == ("SEK 3.90", "1.069 kg")
    assert f"At {CURRENCY} 4.5 per kWh and 1234.5 g CO2 per kWh" in text
    if fmt == "text":
        assert max(display_width(line) for line in text.splitlines()) <= 80


def test_a_price_alone_gives_money_only(gpm, week_db):
    env = {**UTC, "GPM_REPORT_ELECTRICITY_PRICE_PER_KWH": "0.3"}
    got = json.loads(report(gpm, week_db, "--week", WEEK, "--format", "json", env=env).stdout)
    assert got["pricing"] == {"electricity_price_per_kwh": 0.3, "currency": None, "carbon_intensity_g_per_kwh": None}
    assert "co2" not in json.dumps(got).lower()
    assert got["fleet"]["cost"] == pytest.approx(3118400 / KWH * 0.3, abs=1e-6)
    text = report(gpm, week_db, "--week", WEEK, "--section", "cost", env=env).stdout
    header = next(line for line in text.splitlines() if line.startswith("Kind "))
    assert header.split() == ["Kind", "What", "Cost", "Per", "1M", "tok"]
    assert re.search(r"^host +lab +0\.26$", text, re.M)  # no code: the bare amount
    assert "At 0.3 per kWh ([report] in the configuration)." in text


def test_a_price_of_zero_is_a_price(gpm, week_db):
    env = {**UTC, "GPM_REPORT_ELECTRICITY_PRICE_PER_KWH": "0", "GPM_REPORT_CURRENCY": "EUR"}
    got = json.loads(report(gpm, week_db, "--week", WEEK, "--format", "json", env=env).stdout)
    assert got["fleet"]["cost"] == 0.0 and got["pricing"]["electricity_price_per_kwh"] == 0.0


@pytest.mark.parametrize("fmt", ["text", "markdown", "json", "csv"])
def test_unset_means_no_money_or_co2_anywhere(gpm, week_db, fmt):
    text = report(gpm, week_db, "--week", WEEK, "--format", fmt, env=UTC).stdout.lower()
    for word in ("cost", "co2", "currency", "price", "pricing", "sek", "eur"):
        assert word not in text, word
    # A currency alone prices nothing.
    alone = report(gpm, week_db, "--week", WEEK, "--format", fmt, env={**UTC, "GPM_REPORT_CURRENCY": "EUR"}).stdout
    generated = re.compile(r'"generated_ms": \d+')
    assert generated.sub("", alone.lower()) == generated.sub("", text)


def test_asking_for_the_section_without_prices_says_why(gpm, week_db):
    text = report(gpm, week_db, "--week", WEEK, "--section", "cost", env=UTC).stdout
    assert "Cost and CO2: omitted, no [report] electricity_price_per_kwh or" in text


@pytest.mark.parametrize("line, shown", [
    ('currency = "euro"', "[report] currency = 'euro': expected an ISO 4217 code of three capital letters"),
    ('currency = "EU"', "[report] currency = 'EU': expected an ISO 4217 code"),
    ("electricity_price_per_kwh = -0.3", "[report] electricity_price_per_kwh = -0.3: expected a number from 0"),
    ("carbon_intensity_g_per_kwh = -1", "[report] carbon_intensity_g_per_kwh = -1: expected a number from 0"),
])
def test_a_bad_price_or_currency_is_one_line_exit_2(gpm, week_db, tmp_path, line, shown):
    config = tmp_path / "config.toml"
    config.write_text(f"[report]\n{line}\n")
    proc = gpm("--config", config, "--db", week_db, "report", "--week", WEEK, env=UTC)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"gpm: {config}:2: {shown}" + proc.stderr.split(shown, 1)[1]
    assert len(proc.stderr.splitlines()) == 1


def test_config_show_says_not_set(gpm):
    shown = gpm("config", "show", env={"COLUMNS": "200"}, check=True).stdout
    line = next(line for line in shown.splitlines() if line.startswith("report.electricity_price_per_kwh "))
    assert line.split()[1:] == ["(not", "set)", "default"]
    as_json = json.loads(gpm("config", "show", "--json", check=True).stdout)["report"]
    assert as_json["carbon_intensity_g_per_kwh"] == {"value": None, "source": "default"}


def test_the_weekly_trend_prices_each_week(gpm, tmp_path):
    db = tmp_path / "gpm.db"
    last_week = fill_last_week(db)
    trend = json.loads(report(gpm, db, "--weeks", "3", "--format", "json").stdout)["trend"]
    assert [t["iso_week"] for t in trend][-1] == last_week
    assert trend[-1]["cost"] == pytest.approx(exact_cost(360000), abs=1e-6)  # 0.1 kWh
    assert trend[-1]["co2_grams"] == pytest.approx(exact_co2(360000), abs=1e-3)
    assert [(t["cost"], t["co2_grams"]) for t in trend[:2]] == [(None, None)] * 2
    text = report(gpm, db, "--weeks", "3").stdout
    rows = [line.split() for line in text.splitlines() if line.startswith("week ")]
    assert rows == [["week", t["iso_week"], "-", "-"] for t in trend[:2]] + [["week", last_week, "SEK", "0.45", "123", "g"]]
    assert "Every week is priced at today's settings." in text
    csv_rows = report(gpm, db, "--weeks", "3", "--format", "csv", "--section", "cost").stdout.splitlines()
    assert csv_rows[0] == "kind,host,name,energy_joules,cost,co2_grams"
    assert csv_rows[-1] == f"week,,{last_week},360000.0,0.45,123.45"
