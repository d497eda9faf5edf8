"""``gpm install grafana-dashboard``: a dashboard Grafana imports, every query of
which a real Prometheus, scraping a real ``gpm serve-metrics``, answers."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.conftest import run_gpm
from tests.fakes.nvml import FakeProcess, Scenario
from tests.fakes.telemetry_data import requests, save_requests
from tests.test_cli_serve_metrics import free_port, running_prometheus, scrape_config, serving
from tests.test_telemetry_alerts import event, save_alerts

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def load_dashboard() -> dict:
    return json.loads(run_gpm("install", "grafana-dashboard", check=True).stdout)


def targets(dash: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel."""
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def test_dashboard_is_json_grafana_imports_with_a_datasource_variable(tmp_path):
    dash = load_dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) == 13
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    assert variables["instance"]["definition"] == "label_values(gpm_build_info, instance)"
    for panel in dash["panels"]:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"] and all(t["datasource"] == DATASOURCE for t in panel["targets"])
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    for title, expr in targets(dash):
        assert 'instance=~"$instance"' in expr, title
    cells = {(x, y) for p in dash["panels"] for g in [p["gridPos"]]
             for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
    assert len(cells) == sum(p["gridPos"]["w"] * p["gridPos"]["h"] for p in dash["panels"])  # no overlap
    titles = " / ".join(p["title"] for p in dash["panels"])
    for word in ("utilization", "memory", "temperature", "power", "energy", "workload category",
                 "tokens per second", "time to first token", "requests", "Collector health", "Firing alerts"):
        assert word in titles
    out = tmp_path / "gpm-dashboard.json"
    assert run_gpm("install", "grafana-dashboard", "-o", out, check=True).stdout == f"wrote {out}\n"
    assert json.loads(out.read_text(encoding="utf-8")) == dash


def substitute(expr: str, instances: list[str]) -> str:
    """What Grafana sends: $instance as an escaped regex of the picked values, intervals filled in."""
    regex = "(" + "|".join(re.escape(i).replace("\\", "\\\\") for i in instances) + ")"
    expr = expr.replace("$instance", regex).replace("$__rate_interval", "4s").replace("$__range", "1m")
    assert "$" not in expr, expr
    return expr


def gpus_with_processes() -> Scenario:
    scenario = Scenario.many(2)
    for i, gpu in enumerate(scenario.gpus):
        gpu.processes = [FakeProcess(pid=50000 + 10 * i + k, used_memory=(k + 1) * 2**28, type="compute",
                                     name=f"worker{k}") for k in range(3)]
    return scenario


@pytest.mark.slow
def test_a_real_prometheus_answers_every_panel_query(fake_nvml, tmp_path):
    fake_nvml.set(gpus_with_processes())
    db = tmp_path / "gpm.db"
    save_requests(db, requests())  # the recording proxy's rows: LLM tokens, TTFT, requests
    save_alerts(db, [event("temperature", 0)])  # a firing alert of gpm's own engine
    # Prometheus's own alerts, from the generated rules: GPUs above 30 °C fire at once
    config = tmp_path / "config.toml"
    config.write_text('[alerts]\ntemp_threshold_celsius = 30\n'
                      '[[alerts.override]]\nrule = "temperature"\nfor_secs = 0\n')
    rules = tmp_path / "gpm-rules.yml"
    run_gpm("--config", config, "install", "prometheus-rules", "-o", rules, check=True)
    dash = load_dashboard()

    gpm_port = free_port()
    env = fake_nvml.env({"GPM_DB": db, "GPM_SERVICE_HOSTNAME": "box"})
    with serving("--cache-secs", "0", env=env, port=gpm_port), \
            running_prometheus(tmp_path, scrape_config(gpm_port, f"rule_files: ['{rules}']\n")) as (prom, query):
        deadline = time.monotonic() + 60
        empty: list = ["not asked yet"]
        while empty and time.monotonic() < deadline and prom.poll() is None:
            time.sleep(1)
            # the instance variable's own query: label_values(gpm_build_info, instance)
            instances = sorted({r["metric"]["instance"] for r in query("gpm_build_info")})
            if not instances:
                continue
            empty = [(title, substitute(expr, instances)) for title, expr in targets(dash)
                     if not query(substitute(expr, instances))]
        assert instances == [f"127.0.0.1:{gpm_port}"]
        assert empty == [], f"panel queries with no series: {empty}" + (
            f"\nprometheus: {prom.stderr.read()}" if prom.poll() is not None else "")
        firing = query('ALERTS{alertstate="firing", rule="temperature"}')
        assert {r["metric"]["gpu"] for r in firing} == {"0", "1"}
        own = query("gpm_alerts_firing")
        assert [(r["metric"]["rule"], r["metric"]["gpu"], r["value"][1]) for r in own] == [("temperature", "0", "1")]
