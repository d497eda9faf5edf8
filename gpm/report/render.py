"""Formatters: ``Report`` -> text, markdown, json or csv. No figures are computed here."""

from __future__ import annotations

import csv
import io
import json
from typing import Callable

from gpm.cli.units import fmt_bytes, fmt_duration
from gpm.report.build import METHOD_INTEGRATED, Report
from gpm.report.partials import THROTTLING
from gpm.report.period import fmt_local, utc_iso

FORMATS = ("text", "markdown", "json", "csv")
SECTIONS = ("coverage", "gaps", "hosts", "gpus", "throttling", "days", "trend",
            "workload", "games", "llm", "processes")
TITLES = {
    "coverage": "Coverage", "gaps": "Gaps (sampler not running)", "hosts": "Hosts",
    "gpus": "Per GPU", "throttling": "Throttling", "days": "Per day", "trend": "Weekly trend",
    "workload": "Workload mix", "games": "Games", "llm": "LLM", "processes": "Top processes",
}
BLOCKS = "▁▂▃▄▅▆▇█"
MAX_GAPS_SHOWN = 12
INTEGRATED_NOTE = "* no energy counter: integrated power over the sampled intervals (gaps not counted)."
JSON_VERSION = 1


def kwh(joules: float | None) -> str:
    return "-" if joules is None else f"{joules / 3.6e6:.2f} kWh"


def pct(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}%"


def sparkline(values: list[float | None], top: float | None = None) -> str:
    """One block per value, scaled to ``top`` (default: the largest); ``·`` = no data."""
    known = [v for v in values if v is not None]
    top = top if top is not None else (max(known) if known else 0)
    out = []
    for v in values:
        if v is None:
            out.append("·")
        elif top <= 0:
            out.append(BLOCKS[0])
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, max(0, round(v / top * (len(BLOCKS) - 1))))])
    return "".join(out)


# ---- json ---------------------------------------------------------------

def to_json_obj(report: Report) -> dict:
    p = report.period
    obj = {
        "report": {
            "version": JSON_VERSION,
            "since_ms": p.since_ms,
            "until_ms": p.until_ms,
            "since": utc_iso(p.since_ms),
            "until": utc_iso(p.until_ms),
            "range_seconds": p.seconds,
            "iso_week": p.iso_week,
            "generated_ms": report.generated_ms,
            "busy_threshold_percent": report.busy_threshold_percent,
        },
        "coverage": report.coverage,
        "hosts": report.hosts,
        "fleet": report.fleet,
        "gpus": report.gpus,
        "days": report.days,
        "omitted": report.omitted,
    }
    if report.trend is not None:
        obj["trend"] = report.trend
    return obj


def render_json(report: Report, sections: tuple[str, ...] = ()) -> str:
    return json.dumps(to_json_obj(report), indent=2, ensure_ascii=False) + "\n"


# ---- tables shared by text, markdown and csv ----------------------------

def _gpu_name(report: Report, g: dict) -> str:
    multi = len(report.coverage) > 1
    return f"{g['host']}:{g['gpu_index']}" if multi else str(g["gpu_index"])


def rows_for(report: Report, section: str, human: bool) -> tuple[list[str], list[list]]:
    """(headers, rows) of a section; ``human`` picks display units over machine units."""
    d = fmt_duration if human else (lambda s: s)
    if section == "coverage":
        if human:
            return (["Host", "Sampled", "Coverage", "Gaps", "Gap time", "First sample", "Last sample"],
                    [[c["host"], d(c["sampled_seconds"]), pct(c["coverage_ratio"] * 100, 1), len(c["gaps"]),
                      d(c["gap_seconds"]), fmt_local(c["first_sample_ms"]) if c["first_sample_ms"] else "-",
                      fmt_local(c["last_sample_ms"]) if c["last_sample_ms"] else "-"] for c in report.coverage])
        keys = ["host", "range_seconds", "sampled_seconds", "coverage_ratio", "gap_seconds",
                "first_sample_ms", "last_sample_ms"]
        return keys + ["gaps"], [[c[k] for k in keys] + [len(c["gaps"])] for c in report.coverage]
    if section == "gaps":
        gaps = [(c["host"], g) for c in report.coverage for g in c["gaps"]]
        if human:
            return (["Host", "From", "To", "Length"],
                    [[h, fmt_local(g["start_ms"]), fmt_local(g["end_ms"]), d(g["seconds"])] for h, g in gaps])
        return ["host", "start_ms", "end_ms", "seconds"], [[h, g["start_ms"], g["end_ms"], g["seconds"]] for h, g in gaps]
    if section == "hosts":
        rows = report.hosts + ([{**report.fleet, "host": "fleet", "sampled_seconds": None, "coverage_ratio": None}]
                               if len(report.hosts) > 1 else [])
        if human:
            return (["Host", "GPUs", "Coverage", "GPU time", "Busy", "Util", "Energy", "Throttled"],
                    [[r["host"], r["gpus"], pct(r["coverage_ratio"] * 100, 1) if r["coverage_ratio"] is not None else "",
                      d(r["gpu_sampled_seconds"]), d(r["busy_seconds"]), pct(r["utilization_mean_percent"]),
                      kwh(r["energy_joules"]), d(r["throttled_seconds"])] for r in rows])
        keys = ["host", "gpus", "coverage_ratio", "gpu_sampled_seconds", "busy_seconds",
                "utilization_mean_percent", "energy_joules", "throttled_seconds"]
        return keys + ["energy_methods"], [[r[k] for k in keys] + [" ".join(r["energy_methods"])] for r in rows]
    if section == "gpus":
        if human:
            return (["GPU", "Name", "Busy", "Util avg/p95", "Temp avg/max", "Peak mem", "Power", "Energy"],
                    [[_gpu_name(report, g), _short(g["gpu_name"]),
                      f"{d(g['busy_seconds'])} {pct(_share(g['busy_seconds'], g['sampled_seconds']))}",
                      f"{_num(g['utilization_mean_percent'])}/{pct(g['utilization_p95_percent'])}",
                      f"{_num(g['temperature_mean_celsius'])}/{_num(g['temperature_max_celsius'])}°C",
                      fmt_bytes(g["memory_peak_bytes"]),
                      "-" if g["power_mean_watts"] is None else f"{g['power_mean_watts']:.0f} W",
                      kwh(g["energy_joules"]) + ("*" if g["energy_method"] == METHOD_INTEGRATED else "")]
                     for g in report.gpus])
        keys = ["host", "gpu_index", "gpu_uuid", "gpu_name", "samples", "sampled_seconds", "busy_seconds",
                "utilization_mean_percent", "utilization_p95_percent", "temperature_mean_celsius",
                "temperature_max_celsius", "memory_peak_bytes", "memory_total_bytes", "power_mean_watts",
                "energy_joules", "energy_method", "throttled_seconds"]
        return keys, [[g[k] for k in keys] for g in report.gpus]
    if section == "throttling":
        if human:
            return (["GPU", "Throttled", "Share", "Why"],
                    [[_gpu_name(report, g), d(g["throttled_seconds"]),
                      pct(_share(g["throttled_seconds"], g["sampled_seconds"]), 1),
                      ", ".join(f"{k} {d(v)}" for k, v in g["throttle_reasons_seconds"].items() if v) or "-"]
                     for g in report.gpus])
        keys = [f"{r}_seconds" for r in THROTTLING]
        return (["host", "gpu_index", "gpu_uuid", "throttled_seconds", *keys],
                [[g["host"], g["gpu_index"], g["gpu_uuid"], g["throttled_seconds"],
                  *[g["throttle_reasons_seconds"][r] for r in THROTTLING]] for g in report.gpus])
    if section == "days":
        if human:
            return (["Day", "GPU time", "Busy", "Util", "Energy"],
                    [[_day(x["date"]), d(x["sampled_seconds"]), d(x["busy_seconds"]),
                      pct(x["utilization_mean_percent"]), kwh(x["energy_joules"])] for x in report.days])
        keys = ["date", "start_ms", "end_ms", "sampled_seconds", "busy_seconds", "utilization_mean_percent",
                "energy_joules"]
        return keys, [[x[k] for k in keys] for x in report.days]
    if section == "trend":
        trend = report.trend or []
        if human:
            return (["Week", "Hosts", "GPUs", "Coverage", "Busy", "Util", "Energy", "Throttled"],
                    [[t["iso_week"], t["hosts"], t["gpus"],
                      pct(t["coverage_ratio"] * 100, 1) if t["coverage_ratio"] is not None else "-",
                      d(t["busy_seconds"]), pct(t["utilization_mean_percent"]), kwh(t["energy_joules"]),
                      d(t["throttled_seconds"])] for t in trend])
        keys = ["iso_week", "week_start_ms", "week_end_ms", "hosts", "gpus", "coverage_ratio",
                "gpu_sampled_seconds", "busy_seconds", "utilization_mean_percent", "energy_joules",
                "throttled_seconds"]
        return keys + ["energy_methods"], [[t[k] for k in keys] + [" ".join(t["energy_methods"])] for t in trend]
    return [], []


def _share(part: float | None, whole: float | None) -> float | None:
    return None if not whole or part is None else part / whole * 100


def _short(name: str | None, width: int = 16) -> str:
    """"NVIDIA GeForce RTX 4090" -> "RTX 4090": the table has 100 columns."""
    text = (name or "?").replace("NVIDIA ", "").replace("GeForce ", "")
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _day(iso_date: str) -> str:
    from datetime import date

    return date.fromisoformat(iso_date).strftime("%a %m-%d")


# ---- text and markdown ---------------------------------------------------

def _present(report: Report, sections: tuple[str, ...]) -> list[str]:
    if report.trend is not None:
        order = ["trend"]
    else:
        order = ["coverage", "gaps", "hosts", "gpus", "throttling", "days",
                 "workload", "games", "llm", "processes"]
    return [s for s in order if not sections or s in sections]


def _has_data(report: Report, section: str) -> bool:
    if section in report.omitted:
        return False
    if section == "gaps":
        return any(c["gaps"] for c in report.coverage)
    if section == "hosts":
        return len(report.hosts) > 1
    if section == "throttling":
        return any(g["throttled_seconds"] for g in report.gpus)
    return bool(rows_for(report, section, True)[1])


def render_text(report: Report, sections: tuple[str, ...] = (), *, color: bool = False,
                markdown: bool = False) -> str:
    from tabulate import tabulate

    import click

    def title(text: str) -> str:
        if markdown:
            return f"## {text}"
        return click.style(text, bold=True) if color else text

    fmt = "github" if markdown else "simple"
    p = report.period
    head = f"gpm report: {p.label}"
    if p.iso_week:
        head += f" ({fmt_local(p.since_ms)} → {fmt_local(p.until_ms)})"
    lines = [f"# {head}" if markdown else (click.style(head, bold=True) if color else head)]
    lines.append(f"Busy: utilization above {report.busy_threshold_percent:g}%. Times are local. "
                 "Energy: the GPUs' energy counters.")
    for section in _present(report, sections):
        if not _has_data(report, section):
            if section == "hosts":
                continue
            lines.append("")
            if section in ("gaps", "throttling") and report.gpus:
                lines.append(f"{TITLES[section]}: none.")
            else:
                reason = report.omitted.get(section, "no data in this range")
                lines.append(f"{TITLES[section]}: omitted, {reason}.")
            continue
        lines.append("")
        lines.append(title(TITLES[section]))
        if not markdown:
            lines.append("")
        headers, rows = rows_for(report, section, True)
        note = ""
        if section == "gaps" and len(rows) > MAX_GAPS_SHOWN:
            longest = sorted(range(len(rows)), key=lambda i: -_gap_seconds(report, i))[:MAX_GAPS_SHOWN]
            note = f"{len(rows) - MAX_GAPS_SHOWN} shorter gaps not shown (all are in --format json)."
            rows = [rows[i] for i in sorted(longest)]
        if section == "days":
            lines.extend(_strip(report, markdown))
            lines.append("")
        table = tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)
        if color and section == "gaps":
            table = click.style(table, fg="yellow")
        lines.append(table)
        if section == "gpus" and any(g["energy_method"] == METHOD_INTEGRATED for g in report.gpus):
            note = INTEGRATED_NOTE
        if note:
            lines.append(note)
    return "\n".join(lines) + "\n"


def _gap_seconds(report: Report, i: int) -> float:
    gaps = [g for c in report.coverage for g in c["gaps"]]
    return gaps[i]["seconds"]


def _strip(report: Report, markdown: bool) -> list[str]:
    days = report.days
    util = [x["utilization_mean_percent"] for x in days]
    energy = [x["energy_joules"] for x in days]
    known = [e for e in energy if e is not None]
    labels = "".join(_day(x["date"])[0] for x in days)
    rows = [
        f"{'days':<12} {labels}",
        f"{'utilization':<12} {sparkline(util, 100)}  0–100%",
        f"{'energy':<12} {sparkline(energy)}  0–{kwh(max(known)) if known else '-'} per day",
    ]
    return ["```", *rows, "```"] if markdown else rows


def render_csv(report: Report, sections: tuple[str, ...] = ()) -> str:
    section = sections[0] if sections else "gpus"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    headers, rows = rows_for(report, section, False)
    if not headers:
        headers = ["omitted"]
        rows = [[report.omitted.get(section, "no data")]]
    writer.writerow(headers)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def render(report: Report, fmt: str, sections: tuple[str, ...] = (), *, color: bool = False) -> str:
    renderers: dict[str, Callable[..., str]] = {
        "json": render_json, "csv": render_csv,
        "markdown": lambda r, s: render_text(r, s, markdown=True),
        "text": lambda r, s: render_text(r, s, color=color),
    }
    return renderers[fmt](report, sections)
