"""``gpm install prometheus-rules``: promtool accepts the file, and its unit tests
show each rule firing on series shaped like gpm's at the moment gpm's rule would
(not before ``for_secs``, still firing inside the margin, resolved below it)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from gpm.config import load_config
from gpm.telemetry.prometheus_rules import alert_rules, duration, yaml_string
from tests.conftest import run_gpm

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package 'prometheus')")

STEP = 15  # seconds between input samples and rule evaluations
BOX = {"job": "gpm", "instance": "box:10435"}
GPU0 = {**BOX, "gpu": "0", "uuid": "GPU-0000-aaaa"}
GPU1 = {**BOX, "gpu": "1", "uuid": "GPU-1111-bbbb"}


def series(name: str, labels: dict, values: list[float]) -> dict:
    inner = ", ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": " ".join(f"{v:g}" for v in values)}


def promtool(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def check_rules(text: str, tmp_path) -> str:
    path = tmp_path / "gpm-rules.yml"
    path.write_text(text, encoding="utf-8")
    proc = promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def unit_test(rules_text: str, tmp_path, groups: list[dict]) -> None:
    """Run ``promtool test rules`` on ``groups`` (written as JSON, which YAML reads)."""
    (tmp_path / "gpm-rules.yml").write_text(rules_text, encoding="utf-8")
    test = {"rule_files": ["gpm-rules.yml"], "evaluation_interval": f"{STEP}s",
            "tests": [{"interval": f"{STEP}s", **g} for g in groups]}
    (tmp_path / "test.yml").write_text(json.dumps(test, ensure_ascii=False, indent=1), encoding="utf-8")
    proc = promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def firing(alertname: str, labels: dict, severity: str, rule: str | None, summary: str,
           description: str) -> dict:
    exp = {**labels, "severity": severity}
    if rule:
        exp["rule"] = rule
    return {"exp_labels": exp, "exp_annotations": {"summary": summary, "description": description}}


def checks(alertname: str, expected: dict[int, list[dict]]) -> list[dict]:
    return [{"eval_time": f"{t}s", "alertname": alertname, "exp_alerts": alerts}
            for t, alerts in sorted(expected.items())]


# --- threshold rules: above for 60 s fires; inside the margin keeps firing -----------------
# GPU 0: hot from 15 s to 75 s, then in the margin band, then below it, then in the band again.
# GPU 1: hot for 45 s, a dip into the band (which resets a pending alert), then hot from 75 s.
def hot_series(threshold: float, margin: float) -> tuple[list[float], list[float], dict[str, float]]:
    v = {"base": threshold - margin - 10, "hot": threshold + 2, "band": threshold - margin / 2,
         "cold": threshold - margin - 1}
    gpu0 = [v["base"]] + [v["hot"]] * 5 + [v["band"]] * 3 + [v["cold"], v["band"]]
    gpu1 = [v["base"]] + [v["hot"]] * 3 + [v["band"]] + [v["hot"]] * 6
    return gpu0, gpu1, v


def threshold_group(alertname: str, rule: str, inputs, what: str, unit: str, threshold: float,
                    margin: float) -> dict:
    gpu0, gpu1, v = hot_series(threshold, margin)

    def alert(labels: dict, value: float) -> dict:
        gpu = f"GPU {labels['gpu']}"
        return firing(
            alertname, labels, "warning", rule,
            f"{gpu} on box:10435: {what} above {threshold:g}{unit}",
            f"{gpu} ({labels['uuid']}) on box:10435: {what} is {value:.1f}{unit}, above {threshold:g}{unit} "
            f"for 60s; it resolves below {threshold - margin:g}{unit}.")

    return {
        "input_series": inputs(GPU0, gpu0) + inputs(GPU1, gpu1),
        "alert_rule_test": checks(alertname, {
            60: [],  # GPU 0 hot for 45 s: pending, not firing
            75: [alert(GPU0, v["hot"])],  # 60 s: fires
            120: [alert(GPU0, v["band"])],  # below the threshold, above threshold - margin
            135: [alert(GPU1, v["hot"])],  # GPU 0 below the band: resolved; GPU 1 hot for 60 s since its dip
            150: [alert(GPU1, v["hot"])],  # GPU 0 back in the band does not fire again
        }),
    }


def temperature_inputs(labels, values):
    return [series("gpm_gpu_temperature_celsius", labels, values)]


def memory_inputs(labels, values):  # percent of a 1000-byte GPU: exact in floating point
    return [series("gpm_gpu_memory_used_bytes", labels, [10 * p for p in values]),
            series("gpm_gpu_memory_total_bytes", labels, [1000] * len(values))]


def power_inputs(labels, values):  # percent of a 200 W limit
    return [series("gpm_gpu_power_watts", labels, [2 * p for p in values]),
            series("gpm_gpu_power_limit_watts", labels, [200] * len(values))]


def flag_group(alertname: str, rule: str | None, severity: str, inputs: list[dict],
               labels: list[dict], summary, description) -> dict:
    """A yes/no rule whose condition holds from 15 s to 75 s: firing at 75 s only."""
    alerts = [firing(alertname, lb, severity, rule, summary(lb), description(lb)) for lb in labels]
    return {"input_series": inputs,
            "alert_rule_test": checks(alertname, {60: [], 75: alerts, 90: []})}


FLIP = [1, 0, 0, 0, 0, 0, 1, 1]  # 0 from 15 s to 75 s
COLLECTOR_NVML = {**BOX, "collector": "nvml"}
COLLECTOR_OLLAMA = {**BOX, "collector": "ollama"}
DEVICE = "{gpu} ({uuid}) on box:10435"


def default_groups() -> list[dict]:
    gpu_lost = {**GPU0}
    return [
        threshold_group("GpmGpuTemperatureHigh", "temperature", temperature_inputs, "temperature", " °C", 85, 5),
        threshold_group("GpmGpuMemoryHigh", "memory", memory_inputs, "memory use", "%", 95, 5),
        threshold_group("GpmGpuPowerHigh", "power", power_inputs, "power draw (share of the limit)", "%", 98, 10),
        flag_group(
            "GpmGpuThrottled", "throttle", "warning",
            [series("gpm_gpu_throttle_reason", {**GPU0, "reason": "hw_thermal_slowdown"},
                    [1 - x for x in FLIP]),
             series("gpm_gpu_throttle_reason", {**GPU0, "reason": "sw_power_cap"}, [1] * 8),
             # at the power cap all along: not a reason in the default list, never fires
             series("gpm_gpu_throttle_reason", {**GPU1, "reason": "sw_power_cap"}, [1] * 8),
             series("gpm_gpu_throttle_reason", {**GPU1, "reason": "hw_slowdown"}, [0] * 8)],
            [GPU0], lambda lb: "GPU 0 on box:10435: clocks slowed down",
            lambda lb: ("GPU 0 (GPU-0000-aaaa) on box:10435: clocks held down by one of hw_slowdown, "
                        "sw_thermal_slowdown, hw_thermal_slowdown, hw_power_brake_slowdown for 60s "
                        "(gpm_gpu_throttle_reason says which).")),
        flag_group(
            "GpmGpuLost", "gpu_lost", "critical",
            [series("gpm_gpu_up", gpu_lost, FLIP), series("gpm_gpu_up", GPU1, [1] * 8)],
            [gpu_lost], lambda lb: "GPU 0 on box:10435: lost or failing",
            lambda lb: "GPU 0 (GPU-0000-aaaa) on box:10435 failed to read for 60s (fallen off the bus, driver error)."),
        flag_group(
            "GpmOllamaDown", "ollama_down", "warning",
            [series("gpm_collector_success", COLLECTOR_OLLAMA, FLIP),
             series("gpm_collector_success", COLLECTOR_NVML, [1] * 8)],
            [COLLECTOR_OLLAMA], lambda lb: "Ollama on box:10435 does not answer",
            lambda lb: "gpm on box:10435 could not reach the Ollama server for 60s."),
        flag_group(
            "GpmCollectorFailing", None, "warning",
            # Ollama down is GpmOllamaDown's, not a failing collector as well
            [series("gpm_collector_success", COLLECTOR_NVML, FLIP),
             series("gpm_collector_success", COLLECTOR_OLLAMA, [0] * 8)],
            [COLLECTOR_NVML], lambda lb: "gpm on box:10435: the nvml collector fails",
            lambda lb: "gpm on box:10435 could not read nvml for 60s; its metrics are missing or stale."),
        flag_group(
            "GpmTargetDown", None, "critical",
            [series("up", BOX, FLIP), series("up", {"job": "node", "instance": "box:9100"}, [0] * 8)],
            [BOX], lambda lb: "gpm on box:10435 cannot be scraped",
            lambda lb: "Prometheus could not scrape box:10435 for 60s: gpm is stopped or unreachable."),
        {   # no target of job gpm at all (another job's target is up): fires once that held for 60 s
            "input_series": [series("up", {"job": "node", "instance": "box:9100"}, [1] * 8)],
            "alert_rule_test": checks("GpmTargetAbsent", {45: [], 60: [firing(
                "GpmTargetAbsent", {"job": "gpm"}, "critical", None, "no gpm target is scraped",
                "Prometheus has had no target of job gpm for 60s (the scrape configuration lost it, "
                "or service discovery finds none).")]}),
        },
        {   # a target there: never absent
            "input_series": [series("up", BOX, [1] * 8)],
            "alert_rule_test": checks("GpmTargetAbsent", {60: [], 105: []}),
        },
    ]


@needs_promtool
def test_default_rules_pass_promtool_and_fire_as_gpm_rules_do(tmp_path):
    result = run_gpm("install", "prometheus-rules", check=True)
    out = check_rules(result.stdout, tmp_path)
    assert "SUCCESS: 9 rules found" in out
    assert "# gpm rule ecc is not here: gpm exports no ECC error counter yet." in result.stdout
    unit_test(result.stdout, tmp_path, default_groups())


@needs_promtool
def test_overrides_thresholds_and_a_disabled_rule(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        "[alerts]\ntemp_threshold_celsius = 70.5\nfor_secs = 30\n"
        'throttle_reasons = ["sw_power_cap"]\n'
        '[[alerts.override]]\nrule = "power"\nenabled = false\n'
        '[[alerts.override]]\nrule = "temperature"\nmargin = 0\nfor_secs = 0\nseverity = "critical"\n'
        '[[alerts.override]]\nrule = "memory"\nmargin = 2.5\nfor_secs = 0.5\n')
    result = run_gpm("--config", config, "install", "prometheus-rules", check=True)
    text = result.stdout
    assert "SUCCESS: 8 rules found" in check_rules(text, tmp_path)
    assert "GpmGpuPowerHigh" not in text
    assert "# gpm rule power is not here: disabled in [alerts]." in text
    assert 'for: "500ms"' in text
    hot = {**GPU0}
    unit_test(text, tmp_path, [
        {   # for_secs 0 and no margin: fires at the first evaluation above 70.5, resolves at once below it
            "input_series": [series("gpm_gpu_temperature_celsius", hot, [70, 71, 70.5, 71])],
            "alert_rule_test": checks("GpmGpuTemperatureHigh", {
                0: [], 15: [firing("GpmGpuTemperatureHigh", hot, "critical", "temperature",
                                   "GPU 0 on box:10435: temperature above 70.5 °C",
                                   "GPU 0 (GPU-0000-aaaa) on box:10435: temperature is 71.0 °C, above 70.5 °C "
                                   "for 0s.")],
                30: []}),
        },
        {   # the power cap now counts as throttling, for 30 s
            "input_series": [series("gpm_gpu_throttle_reason", {**GPU1, "reason": "sw_power_cap"},
                                    [0, 1, 1, 1, 1])],
            "alert_rule_test": checks("GpmGpuThrottled", {30: [], 45: [firing(
                "GpmGpuThrottled", GPU1, "warning", "throttle", "GPU 1 on box:10435: clocks slowed down",
                "GPU 1 (GPU-1111-bbbb) on box:10435: clocks held down by one of sw_power_cap for 30s "
                "(gpm_gpu_throttle_reason says which).")]}),
        },
        {   # memory: margin 2.5 keeps it firing at 93 % (above 92.5), not at 92 %
            "input_series": memory_inputs(GPU0, [96, 96, 93, 92]),
            "alert_rule_test": checks("GpmGpuMemoryHigh", {
                0: [],  # pending: above for less than 500 ms
                30: [firing("GpmGpuMemoryHigh", GPU0, "warning", "memory",
                            "GPU 0 on box:10435: memory use above 95%",
                            "GPU 0 (GPU-0000-aaaa) on box:10435: memory use is 93.0%, above 95% for 500ms; "
                            "it resolves below 92.5%.")],
                45: []}),
        },
    ])


@needs_promtool
def test_a_job_name_with_quotes_and_backslashes_is_quoted_in_promql_and_yaml(tmp_path):
    job = 'lab "gpu" \\ box ü'
    result = run_gpm("install", "prometheus-rules", "--job", job, check=True)
    check_rules(result.stdout, tmp_path)
    target = {"job": job, "instance": "box:10435"}
    unit_test(result.stdout, tmp_path, [{
        "input_series": [series("up", target, FLIP), series("up", BOX, [0] * 8)],
        "alert_rule_test": checks("GpmTargetDown", {75: [firing(
            "GpmTargetDown", target, "critical", None, "gpm on box:10435 cannot be scraped",
            "Prometheus could not scrape box:10435 for 60s: gpm is stopped or unreachable.")]})
        + checks("GpmTargetAbsent", {75: []}),
    }])


def test_alerts_disabled_leaves_only_the_exporter_rules():
    cfg = load_config(env={"GPM_ALERTS_ENABLED": "false"})
    rules, skipped = alert_rules(cfg)
    assert [r.alert for r in rules] == ["GpmCollectorFailing", "GpmTargetDown", "GpmTargetAbsent"]
    assert set(skipped) == {"temperature", "memory", "power", "throttle", "gpu_lost", "ecc", "xid",
                            "ollama_down", "sampler_stalled", "disk_free"}


def test_a_bad_job_name_is_a_usage_error_and_a_missing_folder_too(tmp_path):
    result = run_gpm("install", "prometheus-rules", "--job", "a\nb")
    assert result.returncode == 2
    assert result.stderr.startswith("gpm: Invalid value for --job: 'a\\nb': it holds a control character")
    result = run_gpm("install", "prometheus-rules", "--job", "")
    assert result.returncode == 2 and "it is empty" in result.stderr
    result = run_gpm("install", "prometheus-rules", "-o", tmp_path / "missing" / "rules.yml")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_output_file_is_what_stdout_would_be(tmp_path):
    out = tmp_path / "gpm-rules.yml"
    result = run_gpm("install", "prometheus-rules", "-o", out, check=True)
    assert result.stdout == f"wrote {out}\n"
    assert out.read_text(encoding="utf-8") == run_gpm("install", "prometheus-rules", check=True).stdout


@pytest.mark.parametrize("text, quoted", [
    ("plain", '"plain"'),
    ('a "b" \\ c', '"a \\"b\\" \\\\ c"'),
    ("tab\tnew\nline\x7f\x85\u2028é😀", '"tab\tnew\\x0aline\\x7f\\x85\\u2028é😀"'),
    ("\ufeff\ufffe\x00", '"\\ufeff\\ufffe\\x00"'),
])
def test_yaml_strings(text, quoted):
    assert yaml_string(text) == quoted


@pytest.mark.parametrize("secs, text", [(60, "60s"), (0, "0s"), (0.5, "500ms"), (90.25, "90250ms")])
def test_durations(secs, text):
    assert duration(secs) == text
