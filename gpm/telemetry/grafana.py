"""A Grafana dashboard over gpm's Prometheus metrics (``gpm install grafana-dashboard``).

Made for Grafana's "Import dashboard": every panel reads from the
``${datasource}`` variable (any Prometheus data source) and is limited to
the instances picked in ``$instance``, so the same file serves one machine
or a fleet. The panels: GPU utilization, memory, temperature, power and
energy per GPU; workload categories; LLM tokens/s, time to first token and
requests per model; collector health; firing alerts, both gpm's own
(``gpm_alerts_firing``) and Prometheus's from ``gpm install prometheus-rules``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gpm import __version__

UID = "gpm-gpus"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'
GPU_LEGEND = "{{instance}} GPU {{gpu}}"
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""
    stack: bool = False


PANELS: tuple[Panel, ...] = (
    Panel("GPU utilization", ((f"100 * gpm_gpu_utilization_ratio{{{SEL}}}", GPU_LEGEND),),
          "percent", description="Share of the last sample period the GPU was busy."),
    Panel("GPU memory used", ((f"gpm_gpu_memory_used_bytes{{{SEL}}}", GPU_LEGEND),
                              (f"gpm_gpu_memory_total_bytes{{{SEL}}}", GPU_LEGEND + " total")),
          "bytes"),
    Panel("GPU temperature", ((f"gpm_gpu_temperature_celsius{{{SEL}}}", GPU_LEGEND),), "celsius"),
    Panel("GPU power", ((f"gpm_gpu_power_watts{{{SEL}}}", GPU_LEGEND),
                        (f"gpm_gpu_power_limit_watts{{{SEL}}}", GPU_LEGEND + " limit")), "watt"),
    Panel("GPU energy over the time range",
          ((f"increase(gpm_gpu_energy_joules_total{{{SEL}}}[$__range]) / 3600000", GPU_LEGEND),),
          "kwatth", kind="bargauge", description="Energy each GPU used in the dashboard's time range."),
    Panel("GPU memory by workload category",
          ((f"sum by (category) (gpm_category_gpu_memory_bytes{{{SEL}}})", "{{category}}"),),
          "bytes", stack=True, description="gaming, llm_inference, ml_training, desktop, ... (gpm classify)."),
    Panel("GPU processes by workload category",
          ((f"sum by (category) (gpm_category_processes{{{SEL}}})", "{{category}}"),), stack=True),
    Panel("LLM tokens per second",
          ((f"sum by (model) (rate(gpm_llm_completion_tokens_total{{{SEL}}}[{RATE}]))", "{{model}} output"),
           (f"sum by (model) (rate(gpm_llm_prompt_tokens_total{{{SEL}}}[{RATE}]))", "{{model}} prompt")),
          "short", description="Tokens through gpm's recording proxy (gpm ollama-watch --proxy)."),
    Panel("LLM time to first token",
          tuple((f"histogram_quantile({q}, sum by (model, le) "
                 f"(rate(gpm_llm_time_to_first_token_seconds_bucket{{{SEL}}}[{RATE}])))",
                 f"{{{{model}}}} p{round(q * 100)}") for q in (0.5, 0.95)),
          "s"),
    Panel("LLM requests per second",
          ((f"sum by (model, status) (rate(gpm_llm_requests_total{{{SEL}}}[{RATE}]))",
            "{{model}} {{status}}"),),
          "reqps", stack=True),
    Panel("Collector health", ((f"gpm_collector_success{{{SEL}}}", "{{instance}} {{collector}}"),
                               (f"up{{{SEL}}}", "{{instance}} scrape ({{job}})")),
          "bool_yes_no", kind="state-timeline", description="1: the source was read at the last scrape."),
    Panel("Firing alerts (gpm)", ((f"gpm_alerts_firing{{{SEL}}}", "{{instance}} {{rule}} GPU {{gpu}}"),),
          kind="table", description="Alerts gpm's own rules fire ([alerts]; needs gpm's database)."),
    Panel("Firing alerts (Prometheus)",
          ((f'ALERTS{{alertstate="firing", alertname=~"Gpm.*", {SEL}}}', "{{alertname}} {{instance}}"),),
          kind="table", description="Alerts of the rules from gpm install prometheus-rules."),
)


def _panel(panel_id: int, p: Panel, x: int, y: int) -> dict:
    defaults: dict = {"unit": p.unit}
    if p.kind == "timeseries":
        defaults["custom"] = {"stacking": {"mode": "normal" if p.stack else "none"},
                              "fillOpacity": 30 if p.stack else 10}
    targets = [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                "legendFormat": legend, "instant": p.kind in ("table", "bargauge"),
                "range": p.kind not in ("table", "bargauge")}
               for i, (expr, legend) in enumerate(p.targets)]
    out = {"id": panel_id, "type": p.kind, "title": p.title, "description": p.description,
           "datasource": DATASOURCE, "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
           "fieldConfig": {"defaults": defaults, "overrides": []}, "targets": targets}
    if p.kind == "table":
        out["transformations"] = [{"id": "labelsToFields", "options": {}}]
    return out


def dashboard() -> dict:
    """The dashboard as Grafana's JSON model (schema 39)."""
    panels = [_panel(i + 1, p, 12 * (i % 2), 8 * (i // 2)) for i, p in enumerate(PANELS)]
    variables = [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "options": []},
        {"name": "instance", "label": "Instance", "type": "query", "datasource": DATASOURCE,
         "query": {"query": "label_values(gpm_build_info, instance)", "refId": "instance"},
         "definition": "label_values(gpm_build_info, instance)", "refresh": 2, "multi": True,
         "includeAll": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
         "sort": 1, "hide": 0, "options": []},
    ]
    return {
        "uid": UID, "title": "gpm: GPUs and local LLMs", "tags": ["gpm", "gpu", "llm"],
        "description": f"Generated by `gpm install grafana-dashboard` (gpm {__version__}).",
        "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "timezone": "",
        "templating": {"list": variables}, "annotations": {"list": []}, "links": [],
        "panels": panels,
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"
