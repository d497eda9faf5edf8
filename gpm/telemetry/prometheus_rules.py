"""gpm's alert rules as a Prometheus alerting-rules file (``gpm install prometheus-rules``).

One alert per rule of ``gpm.alerts.rules.rules_from_config`` that gpm's
own metrics can express, with the same threshold, ``for`` duration and
severity, plus three about the exporter itself (a failing collector, a
target down, a target gone), so a fleet alerts in Prometheus and
Alertmanager the way one machine alerts in gpm.

gpm's hysteresis (a firing alert resolves only once the value is below
``threshold - margin``) is written in PromQL: the condition is "above the
threshold, or at least ``threshold - margin`` while this alert is firing"
(the rule reads its own ``ALERTS`` series). ``keep_firing_for`` is not
used: it holds an alert for a time, not until a value has come down.

The YAML is written by hand (gpm has no YAML dependency): every string is
double-quoted with YAML's escapes, and the job name, the one string from
outside, is also a quoted PromQL string inside ``expr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpm import __version__
from gpm.alerts.rules import Rule, rules_from_config

DEFAULT_JOB = "gpm"
GROUP = "gpm"
UNITS = {"celsius": " °C", "percent": "%"}

# gpm rules that no gpm metric expresses, and why (written into the file as comments).
NOT_EXPRESSED = {
    "ecc": "gpm exports no ECC error counter yet",
    "xid": "Xid errors come from the kernel log, not from a metric",
    "sampler_stalled": "it is about gpm's database; GpmTargetDown and GpmTargetAbsent are "
                       "Prometheus's counterpart",
    "disk_free": "node_exporter's node_filesystem_avail_bytes covers free space",
}


@dataclass(frozen=True)
class AlertRule:
    """One Prometheus alerting rule; ``rule`` is gpm's rule name ("" for the exporter's own)."""

    alert: str
    expr: str
    for_secs: float
    severity: str
    rule: str
    summary: str
    description: str

    def labels(self) -> dict[str, str]:
        return {"severity": self.severity, **({"rule": self.rule} if self.rule else {})}


def job_problem(job: str) -> str | None:
    """Why ``job`` cannot be a job name in the file, or None."""
    if not job:
        return "it is empty"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in job):
        return "it holds a control character or bytes that are not UTF-8"
    return None


def promql_string(text: str) -> str:
    """A PromQL double-quoted string literal (``job_problem`` rules out control characters)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def number(value: float) -> str:
    """85.0 -> "85", 92.5 -> "92.5": the way a threshold is written in PromQL and prose."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def duration(secs: float) -> str:
    """A Prometheus duration: whole seconds as "60s", anything finer in milliseconds."""
    ms = round(secs * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _gpu_subject() -> str:
    return "GPU {{ $labels.gpu }} ({{ $labels.uuid }}) on {{ $labels.instance }}"


def _threshold_rule(rule: Rule, alert: str, value_expr: str, what: str) -> AlertRule:
    """A per-GPU rule "value above threshold", with gpm's hysteresis."""
    unit = UNITS.get(rule.unit, f" {rule.unit}")
    above = f"{value_expr} > {number(rule.threshold)}"
    resolves = ""
    if rule.margin:
        low = rule.threshold - rule.margin
        firing = promql_string(alert)
        above = (f"{above} or ({value_expr} >= {number(low)} and ignoring(alertname, alertstate, "
                 f"severity, rule) ALERTS{{alertname={firing}, alertstate=\"firing\"}})")
        resolves = f"; it resolves below {number(low)}{unit}"
    return AlertRule(
        alert, above, rule.for_secs, rule.severity, rule.name,
        summary=f"GPU {{{{ $labels.gpu }}}} on {{{{ $labels.instance }}}}: {what} above {number(rule.threshold)}{unit}",
        description=(f"{_gpu_subject()}: {what} is {{{{ $value | printf \"%.1f\" }}}}{unit}, above "
                     f"{number(rule.threshold)}{unit} for {duration(rule.for_secs)}{resolves}."),
    )


def _gpm_rule(rule: Rule, sel: str, cfg: Any) -> AlertRule | str:
    """The Prometheus rule for one gpm rule, or why there is none."""
    if rule.name == "temperature":
        return _threshold_rule(rule, "GpmGpuTemperatureHigh", f"gpm_gpu_temperature_celsius{sel}",
                               "temperature")
    if rule.name == "memory":
        return _threshold_rule(rule, "GpmGpuMemoryHigh",
                               f"100 * gpm_gpu_memory_used_bytes{sel} / gpm_gpu_memory_total_bytes{sel}",
                               "memory use")
    if rule.name == "power":
        return _threshold_rule(rule, "GpmGpuPowerHigh",
                               f"100 * gpm_gpu_power_watts{sel} / gpm_gpu_power_limit_watts{sel}",
                               "power draw (share of the limit)")
    if rule.name == "throttle":
        reasons = list(cfg.get("alerts.throttle_reasons"))
        if not reasons:
            return "[alerts] throttle_reasons is empty"
        matcher = sel[:-1] + f", reason=~{promql_string('|'.join(reasons))}}}"
        return AlertRule(
            "GpmGpuThrottled", f"max without(reason) (gpm_gpu_throttle_reason{matcher}) == 1",
            rule.for_secs, rule.severity, rule.name,
            summary="GPU {{ $labels.gpu }} on {{ $labels.instance }}: clocks slowed down",
            description=(f"{_gpu_subject()}: clocks held down by one of {', '.join(reasons)} "
                         f"for {duration(rule.for_secs)} (gpm_gpu_throttle_reason says which)."),
        )
    if rule.name == "gpu_lost":
        return AlertRule(
            "GpmGpuLost", f"gpm_gpu_up{sel} == 0", rule.for_secs, rule.severity, rule.name,
            summary="GPU {{ $labels.gpu }} on {{ $labels.instance }}: lost or failing",
            description=(f"{_gpu_subject()} failed to read for {duration(rule.for_secs)} "
                         "(fallen off the bus, driver error)."),
        )
    if rule.name == "ollama_down":
        return AlertRule(
            "GpmOllamaDown", f"gpm_collector_success{sel[:-1]}, collector=\"ollama\"}} == 0",
            rule.for_secs, rule.severity, rule.name,
            summary="Ollama on {{ $labels.instance }} does not answer",
            description=("gpm on {{ $labels.instance }} could not reach the Ollama server for "
                         f"{duration(rule.for_secs)}."),
        )
    return NOT_EXPRESSED.get(rule.name, "no gpm metric expresses it")


def _exporter_rules(sel: str, for_secs: float) -> list[AlertRule]:
    """Rules about gpm's exporter itself: they have no gpm rule and use [alerts] for_secs."""
    up = f"up{sel}"
    return [
        AlertRule("GpmCollectorFailing", f"gpm_collector_success{sel[:-1]}, collector!=\"ollama\"}} == 0",
                  for_secs, "warning", "",
                  summary="gpm on {{ $labels.instance }}: the {{ $labels.collector }} collector fails",
                  description=("gpm on {{ $labels.instance }} could not read {{ $labels.collector }} for "
                               f"{duration(for_secs)}; its metrics are missing or stale.")),
        AlertRule("GpmTargetDown", f"{up} == 0", for_secs, "critical", "",
                  summary="gpm on {{ $labels.instance }} cannot be scraped",
                  description=(f"Prometheus could not scrape {{{{ $labels.instance }}}} for "
                               f"{duration(for_secs)}: gpm is stopped or unreachable.")),
        AlertRule("GpmTargetAbsent", f"absent({up})", for_secs, "critical", "",
                  summary="no gpm target is scraped",
                  description=("Prometheus has had no target of job {{ $labels.job }} for "
                               f"{duration(for_secs)} (the scrape configuration lost it, or service "
                               "discovery finds none).")),
    ]


def alert_rules(cfg: Any, job: str = DEFAULT_JOB) -> tuple[list[AlertRule], dict[str, str]]:
    """(the rules, {gpm rule left out: why}) for ``cfg``'s [alerts] settings.

    Disabled gpm rules are left out; the exporter's own rules are always there.
    """
    sel = f"{{job={promql_string(job)}}}"
    rules: list[AlertRule] = []
    skipped: dict[str, str] = {}
    for rule in rules_from_config(cfg):
        if not rule.enabled:
            skipped[rule.name] = "disabled in [alerts]"
            continue
        made = _gpm_rule(rule, sel, cfg)
        if isinstance(made, str):
            skipped[rule.name] = made
        else:
            rules.append(made)
    rules += _exporter_rules(sel, float(cfg.get("alerts.for_secs")))
    return rules, skipped


def yaml_string(text: str) -> str:
    """A YAML double-quoted scalar: printable characters as they are, the rest escaped.

    Line breaks of YAML 1.1 (NEL, U+2028, U+2029) and the byte order mark are
    escaped too: a parser would fold or drop them.
    """
    out = []
    for c in text:
        n = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif (n == 0x09 or 0x20 <= n < 0x7F or 0xA0 <= n < 0xD800 or 0xE000 <= n <= 0xFFFD or n > 0xFFFF) \
                and c not in "\u2028\u2029\ufeff":
            out.append(c)
        elif n <= 0xFF:
            out.append(f"\\x{n:02x}")
        else:
            out.append(f"\\u{n:04x}")
    return '"' + "".join(out) + '"'


def render(rules: list[AlertRule], skipped: dict[str, str], job: str) -> str:
    """The rules file: one group, each rule's strings quoted."""
    lines = [
        f"# Generated by `gpm install prometheus-rules` (gpm {__version__}) from gpm's [alerts]",
        f"# settings, over gpm's metrics scraped as job {yaml_string(job)}. Load it with rule_files:",
        "# in prometheus.yml; check it with `promtool check rules FILE`.",
    ]
    for name, why in skipped.items():
        lines.append(f"# gpm rule {name} is not here: {why}.")
    lines += ["groups:", f"  - name: {yaml_string(GROUP)}", "    rules:"]  # never empty: the exporter's rules
    for r in rules:
        lines += [
            f"      - alert: {yaml_string(r.alert)}",
            f"        expr: {yaml_string(r.expr)}",
            f"        for: {yaml_string(duration(r.for_secs))}",
            "        labels:",
            *(f"          {k}: {yaml_string(v)}" for k, v in r.labels().items()),
            "        annotations:",
            f"          summary: {yaml_string(r.summary)}",
            f"          description: {yaml_string(r.description)}",
        ]
    return "\n".join(lines) + "\n"


def rules_file(cfg: Any, job: str = DEFAULT_JOB) -> str:
    rules, skipped = alert_rules(cfg, job)
    return render(rules, skipped, job)
