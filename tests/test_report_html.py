"""`gpm report --format html` (#16): the report tests' week as one page of charts.

The page is rendered for real (`gpm report --format html -o page.html`), read
back by the standard library's HTML parser, checked by `tidy` and drawn by a
headless Chromium (Debian packages; the tests that need them skip without).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gpm.report.html import page
from tests.conftest import run_gpm
from tests.png import read_png
from tests.test_report import UTC, WEEK, fill_week

CHROMIUM = shutil.which("chromium")
TIDY = shutil.which("tidy")
CHARTS = ["c-heatmap", "c-energy", "c-temp", "c-mem", "c-llm-tps", "c-llm-ttft", "c-llm-days", "c-llm-jpt",
          "c-games-hours", "c-games-energy", "c-proc-time", "c-proc-energy"]
HOSTILE = "<script>alert(1)</script>\x1b[31mred\u202e"


@pytest.fixture(scope="module")
def week(tmp_path_factory) -> dict:
    """The known week's page and json report, rendered once for the module."""
    base = tmp_path_factory.mktemp("html")
    db = base / "gpm.db"
    fill_week(db)
    out = base / "page.html"
    run_gpm("--db", db, "report", "--week", WEEK, "--format", "html", "-o", out, env=UTC, check=True)
    obj = json.loads(run_gpm("--db", db, "report", "--week", WEEK, "--format", "json", env=UTC, check=True).stdout)
    return {"dir": base, "path": out, "html": out.read_text(encoding="utf-8"), "json": obj}


class Page(HTMLParser):
    """Every number cell (its json path and value), the charts and their titles, every tag."""

    def __init__(self, text: str):
        super().__init__()
        self.cells: list[tuple[list | None, object, str]] = []
        self.charts: dict[str, str] = {}
        self.tags: list[str] = []
        self.texts: list[str] = []
        self._cell: dict | None = None
        self._svg: str | None = None
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "data-value" in a:
            self._cell = {"path": json.loads(a["data-json"]) if "data-json" in a else None,
                          "value": json.loads(a["data-value"]), "text": ""}
        if tag == "svg" and "chart" in (a.get("class") or ""):
            self._svg = a["id"]
            self.charts[a["id"]] = ""
        if tag == "title" and self._svg:
            self._in_title = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append((self._cell["path"], self._cell["value"], self._cell["text"]))
            self._cell = None
        if tag == "svg":
            self._svg = None
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        self.texts.append(data)
        if self._cell is not None:
            self._cell["text"] += data
        if self._in_title and self._svg and not self.charts[self._svg]:
            self.charts[self._svg] = data


def at(obj, path: list):
    for key in path:
        obj = obj[key]
    return obj


def test_the_tables_say_what_the_json_report_says(week):
    parsed = Page(week["html"])
    traced = [(path, value) for path, value, _ in parsed.cells if path is not None]
    assert len(traced) > 150
    for path, value in traced:
        assert at(week["json"], path) == value, path
    sections = {path[0] for path, _ in traced}
    assert sections >= {"fleet", "gpus", "coverage", "days", "workload", "hourly", "llm", "games", "processes"}
    # Every hour with a sample is in the heat map's table, and every GPU's energy, each day's total.
    util = {tuple(p) for p, _ in traced if p[0] == "hourly" and p[3] == "utilization_mean_percent"}
    assert util == {("hourly", "gpus", k, "utilization_mean_percent", h) for k in (0, 1) for h in (8, 9, 34)}
    assert {tuple(p) for p, _ in traced if p[0] == "days" and p[-1] == "energy_joules"} == {
        ("days", i, "energy_joules") for i in range(7)}
    # The energy no process was charged with is the day's total less its categories.
    day0 = week["json"]["days"][0]
    derived = [v for p, v, _ in parsed.cells if p is None and isinstance(v, float)]
    assert round(day0["energy_joules"] - sum(day0["category_energy_joules"].values()), 3) in derived
    assert "0.41 kWh" in [text for _, _, text in parsed.cells]


def test_the_page_is_one_valid_self_contained_file(week):
    text = week["html"]
    parsed = Page(text)
    assert "script" not in parsed.tags and "<script" not in text
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)|url\(\s*["']?([^"')]+)""", text)
    assert refs, "the favicon and the heat map's pattern are references"
    for ref in (a or b for a, b in refs):
        assert not re.match(r"\s*(https?:)?//", ref, re.I), ref
    assert not re.search(r"https?://", text)
    assert sorted(parsed.charts) == sorted(CHARTS) and all(parsed.charts.values())
    assert 'name="viewport"' in text and "prefers-color-scheme:dark" in text and "@media print" in text
    if TIDY is None:
        pytest.skip("tidy is not installed (Debian package tidy)")
    proc = subprocess.run([TIDY, "-q", "-e", str(week["path"])], capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr  # 1: warnings only
    assert "Error:" not in proc.stderr, proc.stderr


def test_outside_names_are_shown_as_text(week):
    obj = copy.deepcopy(week["json"])
    obj["processes"]["by_gpu_time"][0]["name"] = HOSTILE
    obj["games"][0]["game"] = HOSTILE
    obj["llm"][0]["model"] = HOSTILE
    obj["gpus"][0]["gpu_name"] = HOSTILE
    text = page(obj)
    parsed = Page(text)
    assert "script" not in parsed.tags and "<script" not in text
    assert "\x1b" not in text and "\u202e" not in text
    shown = "<script>alert(1)</script>\\x1b[31mred\\u202e"
    assert sum(shown in t for t in parsed.texts) >= 4


def test_pricing_and_alerts_are_shown_only_when_the_report_has_them(week):
    plain = Page(week["html"])
    assert "c-alerts" not in plain.charts and "Cost" not in plain.texts
    obj = copy.deepcopy(week["json"])
    obj["pricing"] = {"electricity_price_per_kwh": 0.3, "currency": "EUR", "carbon_intensity_g_per_kwh": 400}
    for rows in (obj["gpus"], obj["workload"], obj["games"], obj["llm"]):
        for row in rows:
            kwh = (row["energy_joules"] or 0) / 3.6e6
            row["cost"], row["co2_grams"] = round(kwh * 0.3, 4), round(kwh * 400, 3)
    for m in obj["llm"]:
        m["cost_per_million_tokens"] = 1.25
    obj["alerts"] = [{"rule": "hot", "gpu_index": 0, "gpu_uuid": "GPU-0aaaaaaa-0000", "severity": "warning",
                      "fired": 2, "firing_seconds": 5400.0, "longest_seconds": 3600.0}]
    parsed = Page(page(obj))
    assert "c-alerts" in parsed.charts and parsed.charts["c-alerts"] == "Alerts that fired"
    traced = {tuple(p): v for p, v, _ in parsed.cells if p is not None}
    for p, v in traced.items():
        assert at(obj, list(p)) == v
    for section, rows in (("gpus", obj["gpus"]), ("workload", obj["workload"]), ("games", obj["games"]),
                          ("llm", obj["llm"])):
        for i in range(len(rows)):
            assert (section, i, "cost") in traced and (section, i, "co2_grams") in traced
    assert traced[("llm", 0, "cost_per_million_tokens")] == 1.25
    assert traced[("alerts", 0, "firing_seconds")] == 5400.0 and traced[("alerts", 0, "fired")] == 2
    assert "Cost" in parsed.texts and "EUR 1.25" in parsed.texts  # as the text report writes amounts
    obj["alerts"] = []
    assert "no alert fired in this range" in page(obj)


def test_eight_gpus_sampled_every_hour_of_a_week_stay_under_2_mb(week):
    """The page's weight grows with the hours sampled; every hour of 8 GPUs is its largest week."""
    obj = copy.deepcopy(week["json"])
    hours = len(obj["hourly"]["hour_starts_ms"])
    gpus, rows = [], []
    for k in range(8):
        g = {**obj["gpus"][0], "gpu_index": k, "gpu_uuid": f"GPU-{k}"}
        gpus.append(g)
        rows.append({"host": "lab", "gpu_index": k, "gpu_uuid": f"GPU-{k}",
                     "sampled_seconds": [3600.0] * hours,
                     "utilization_mean_percent": [round(37.5 + h % 60, 2) for h in range(hours)],
                     "temperature_max_celsius": [40 + h % 45 for h in range(hours)],
                     "memory_max_bytes": [(h % 24) << 30 for h in range(hours)],
                     "throttled_seconds": [float(h % 7) for h in range(hours)]})
    obj["gpus"], obj["hourly"]["gpus"] = gpus, rows
    text = page(obj)
    size = len(text.encode())
    assert 200_000 < size < 2_000_000, size
    assert len([p for p, _, _ in Page(text).cells if p and p[0] == "hourly"]) == 8 * hours * 4


# ---- drawn by Chromium ---------------------------------------------------------------

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]
MEASURE = """<script>
document.body.setAttribute("data-boxes", JSON.stringify([...document.querySelectorAll("svg.chart")].map(s => {
  const r = s.getBoundingClientRect();
  return [s.id, r.left + scrollX, r.top + scrollY, r.width, r.height];
})));
document.body.setAttribute("data-height", document.documentElement.scrollHeight);
</script>"""


def chromium(tmp: Path, url: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args, url.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def console_errors(stderr: str) -> list[str]:
    """What the page wrote to the console (errors, failed loads, uncaught exceptions)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package chromium)")
def test_chromium_draws_every_chart_light_and_dark(week, tmp_path):
    # The DOM as the browser built it: every chart's <svg> with its title; no console output.
    dom = chromium(tmp_path, week["path"], "--dump-dom", "--window-size=1280,2000")
    assert console_errors(dom.stderr) == []
    parsed = Page(dom.stdout)
    assert sorted(parsed.charts) == sorted(CHARTS) and all(parsed.charts.values())
    # The harness's own check of its console reading: a page that fails is caught.
    bad = tmp_path / "bad.html"
    bad.write_text(week["html"].replace("</body>", "<script>nosuch();</script></body>"), encoding="utf-8")
    assert any("Uncaught" in line for line in console_errors(chromium(tmp_path, bad, "--dump-dom").stderr))

    # Where each chart lies: measured on a copy with a script (the page itself has none).
    measured = tmp_path / "measured.html"
    measured.write_text(week["html"].replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    body = re.search(r"<body([^>]*)>", chromium(tmp_path, measured, "--dump-dom",
                                                "--window-size=1280,2000").stdout).group(1)
    boxes = json.loads(re.search(r'data-boxes="([^"]*)"', body).group(1).replace("&quot;", '"'))
    height = int(re.search(r'data-height="(\d+)"', body).group(1))
    assert sorted(b[0] for b in boxes) == sorted(CHARTS)

    shot = tmp_path / "light.png"
    chromium(tmp_path, week["path"], f"--screenshot={shot}", "--window-size=1280,2000")
    light = read_png(shot)
    assert (light.width, light.height) == (1280, 2000)
    background = light.pixel(2, 2)
    assert len(light.region(0, 0, 1280, 2000)) > 50, "blank screenshot"
    assert light.mean_luminance() > 0.8
    # The whole page at half scale (the same layout): each chart's box holds more than the background.
    whole = tmp_path / "whole.png"
    chromium(tmp_path, week["path"], f"--screenshot={whole}", f"--window-size=1280,{height}",
             "--force-device-scale-factor=0.5")
    full = read_png(whole)
    for cid, x, y, w, h in boxes:
        assert w > 500 and h > 100, (cid, w, h)
        colours = full.region(int(x / 2), int(y / 2), int((x + w) / 2), int((y + h) / 2))
        assert len(colours - {background}) > 5, f"{cid} is empty"

    dark = tmp_path / "dark.png"
    chromium(tmp_path, week["path"], f"--screenshot={dark}", "--window-size=1280,2000", "--force-dark-mode",
             "--force-device-scale-factor=0.5")
    assert read_png(dark).mean_luminance() < 0.2
