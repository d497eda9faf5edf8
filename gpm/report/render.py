"""Formatters: ``Report`` -> text, markdown, json or csv. No figures are computed here."""

from __future__ import annotations

import csv
import io
import json
from typing import Callable

from gpm.humanize import Column, cut, fmt_bytes, short_gpu_name, table, visible
from gpm.report.build import METHOD_INTEGRATED, Report
from gpm.report.cells import HOST_IN_CELL, Durations, day_label, in_units, kwh, pct
from gpm.report.cost import cost_notes, cost_table
from gpm.report.layout import MAX_DAY_ROWS, alignment, day_strip, failure_lines, weeks, wrap
from gpm.report.period import fmt_local, utc_iso
from gpm.report.rollup import THROTTLING
from gpm.report.sections import TITLES

FORMATS = ("text", "markdown", "json", "csv")
MAX_GAPS_SHOWN = 12
# Text fits the terminal (#13.1): when a table is too wide, these columns give
# way, first listed first; names, labels and reasons, never the numbers. A
# (header, floor) stops at floor columns, to give way again after the others.
GIVE_WAY: dict[str, tuple] = {
    "coverage": ("Host",), "gaps": ("Host",), "hosts": ("Host",), "gpus": ("Name",),
    "throttling": ("Why",), "trend": ("Top use",), "workload": ("Category",), "games": ("Game",),
    "llm": ("Model",), "models": ("Model", "Host"), "cost": ("What",), "processes": (("Label", 12), ("Program", 12), "Category", "Label", "Program"),
}
INTEGRATED_NOTE = "* no energy counter: power integrated over the sampled time (gaps not counted)."
LLM_NOTE = "* measured requests only: those whose GPU samples are in the database."
LLM_LEGEND = "Tok/s, TTFT: median/95th percentile; TPOT: median; J/tok: per generated token."
# Sums over the GPUs, next to coverage's wall-clock "Sampled" (#13.8): two
# GPUs busy for an hour are 2.0 h of GPU-busy in a 1.0 h sampled hour.
SUMMED_NOTE = "{}: summed over the GPUs (2 GPUs busy for 1 h: 2.0 h)."
JSON_VERSION = 1
UNKNOWN = "–"  # a count nobody reported (not zero)
UNLIMITED = 1 << 30  # the width of a file: every cell whole


def _d(seconds: float | None) -> Durations:
    return Durations("{}", (seconds,))


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
        **({"pricing": report.pricing} if report.pricing is not None else {}),
        "coverage": report.coverage,
        "hosts": report.hosts,
        "fleet": report.fleet,
        "gpus": report.gpus,
        "days": report.days,
        "workload": report.workload,
        "games": report.games,
        "llm": report.llm,
        "models": report.models,
        "processes": report.processes,
        "failures": report.failures,
        "hourly": report.hourly,
        "omitted": report.omitted,
    }
    if report.trend is not None:
        obj["trend"] = report.trend
    return obj


def render_json(report: Report, sections: tuple[str, ...] = ()) -> str:
    return json.dumps(to_json_obj(report), indent=2, ensure_ascii=False) + "\n"


# ---- tables shared by text, markdown and csv ----------------------------

def _on_host(report: Report, host: str, what: object) -> str:
    """``what`` prefixed by its host when the report has several."""
    return f"{cut(visible(host), HOST_IN_CELL)}:{what}" if len(report.coverage) > 1 else str(what)


def rows_for(report: Report, section: str, human: bool) -> tuple[list[str], list[list]]:
    """(headers, rows) of a section; ``human`` picks display units over machine units."""
    headers, rows = _table(report, section, human)
    return headers, in_units(rows) if human else rows


def _table(report: Report, section: str, human: bool) -> tuple[list[str], list[list]]:
    d = _d if human else (lambda s: s)
    if section == "cost":
        return cost_table(report, human)
    if section == "coverage":
        if human:
            return (["Host", "Sampled", "Coverage", "Gaps", "Gap time", "First sample", "Last sample"],
                    [[c["host"], d(c["sampled_seconds"]), pct(_pct(c["coverage_ratio"]), 1), len(c["gaps"]),
                      d(c["gap_seconds"]), fmt_local(c["first_sample_ms"]) if c["first_sample_ms"] else "-",
                      fmt_local(c["last_sample_ms"]) if c["last_sample_ms"] else "-"] for c in report.coverage])
        keys = ["host", "range_seconds", "before_first_sample_seconds", "sampled_seconds", "coverage_ratio", "gap_seconds",
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
            return (["Host", "GPUs", "Coverage", "GPU time", "GPU-busy", "Util", "Energy", "Throttled"],
                    [[r["host"], r["gpus"], pct(r["coverage_ratio"] * 100, 1) if r["coverage_ratio"] is not None else "",
                      d(r["gpu_sampled_seconds"]), d(r["busy_seconds"]), pct(r["utilization_mean_percent"]),
                      kwh(r["energy_joules"]), d(r["throttled_seconds"])] for r in rows])
        keys = ["host", "gpus", "coverage_ratio", "gpu_sampled_seconds", "busy_seconds",
                "utilization_mean_percent", "energy_joules", "throttled_seconds"]
        return keys + ["energy_methods"], [[r[k] for k in keys] + [" ".join(r["energy_methods"])] for r in rows]
    if section == "gpus":
        if human:
            return (["GPU", "Name", "Busy", "Util/p95", "Temp/max", "Peak mem", "Power", "Energy"],
                    [[_on_host(report, g["host"], g["gpu_index"]), short_gpu_name(g["gpu_name"]),
                      Durations("{} " + pct(_share(g["busy_seconds"], g["sampled_seconds"])),
                                (g["busy_seconds"],)),
                      f"{_num(g['utilization_mean_percent'])}/{pct(g['utilization_p95_percent'])}",
                      f"{_num(g['temperature_mean_celsius'])}/{_num(g['temperature_max_celsius'])}°C",
                      fmt_bytes(g["memory_peak_bytes"]),
                      "-" if g["power_mean_watts"] is None else f"{g['power_mean_watts']:.0f} W",
                      kwh(g["energy_joules"]) + ("*" if _integrated(g) else "")]
                     for g in report.gpus])
        keys = ["host", "gpu_index", "gpu_uuid", "gpu_name", "samples", "sampled_seconds", "busy_seconds",
                "utilization_mean_percent", "utilization_p95_percent", "temperature_mean_celsius",
                "temperature_max_celsius", "memory_peak_bytes", "memory_total_bytes", "power_mean_watts",
                "energy_joules", "energy_method", "throttled_seconds"]
        return keys, [[g[k] for k in keys] for g in report.gpus]
    if section == "throttling":
        if human:
            return (["GPU", "Throttled", "Share", "Why"],
                    [[_on_host(report, g["host"], g["gpu_index"]), d(g["throttled_seconds"]),
                      pct(_share(g["throttled_seconds"], g["sampled_seconds"]), 1),
                      _reasons(g["throttle_reasons_seconds"])]
                     for g in report.gpus])
        keys = [f"{r}_seconds" for r in THROTTLING]
        return (["host", "gpu_index", "gpu_uuid", "throttled_seconds", *keys],
                [[g["host"], g["gpu_index"], g["gpu_uuid"], g["throttled_seconds"],
                  *[g["throttle_reasons_seconds"][r] for r in THROTTLING]] for g in report.gpus])
    if section == "days":
        if human:
            weekly = len(report.days) > MAX_DAY_ROWS
            return (["Week" if weekly else "Day", "GPU time", "GPU-busy", "Util", "Energy"],
                    [[x["week"] if weekly else day_label(x["date"]), d(x["sampled_seconds"]), d(x["busy_seconds"]),
                      pct(x["utilization_mean_percent"]), kwh(x["energy_joules"])]
                     for x in (weeks(report.days) if weekly else report.days)])
        keys = ["date", "start_ms", "end_ms", "sampled_seconds", "busy_seconds", "utilization_mean_percent",
                "energy_joules"]
        return keys, [[x[k] for k in keys] for x in report.days]
    if section == "trend":
        trend = report.trend or []
        if human:
            return (["Week", "GPUs", "Covered", "GPU-busy", "Util", "Energy", "Throttled", "Gen tok", "Top use"],
                    [[t["iso_week"], t["gpus"],
                      pct(t["coverage_ratio"] * 100, 1) if t["coverage_ratio"] is not None else "-",
                      d(t["busy_seconds"]), pct(t["utilization_mean_percent"]), kwh(t["energy_joules"]),
                      d(t["throttled_seconds"]), _count(t["completion_tokens"]) if t["llm_requests"] else "-",
                      _top_use(t["category_energy_joules"])] for t in trend])
        keys = ["iso_week", "week_start_ms", "week_end_ms", "hosts", "gpus", "coverage_ratio",
                "gpu_sampled_seconds", "busy_seconds", "utilization_mean_percent", "energy_joules",
                "throttled_seconds", "llm_requests", "completion_tokens"]
        categories = sorted({c for t in trend for c in t["category_energy_joules"]})
        return (keys + ["energy_methods"] + [f"{c}_energy_joules" for c in categories],
                [[t[k] for k in keys] + [" ".join(t["energy_methods"])]
                 + [t["category_energy_joules"].get(c) for c in categories] for t in trend])
    if section == "workload":
        if human:
            return (["Category", "Runs", "GPU time", "Share", "Energy", "Share"],
                    [[w["category"], w["runs"], d(w["gpu_seconds"]), pct(_pct(w["gpu_time_share"]), 1),
                      kwh(w["energy_joules"]), pct(_pct(w["energy_share"]), 1)] for w in report.workload])
        keys = ["category", "runs", "gpu_seconds", "gpu_time_share", "energy_joules", "energy_share"]
        return keys, [[w[k] for k in keys] for w in report.workload]
    if section == "games":
        if human:
            return (["Game", "Sessions", "Hours", "Energy", "Last played"],
                    [[g["game"], g["sessions"], f"{g['gpu_seconds'] / 3600:.1f}", kwh(g["energy_joules"]),
                      fmt_local(g["last_seen_ms"])] for g in report.games])
        keys = ["game", "sessions", "gpu_seconds", "energy_joules", "first_seen_ms", "last_seen_ms"]
        return keys, [[g[k] for k in keys] for g in report.games]
    if section == "llm":
        if human:
            return (["Model", "Req", "Err", "In/out tok", "Tok/s", "TTFT", "TPOT", "Energy", "J/tok"],
                    [[m["model"], m["requests"], m["errors"],
                      _tokens(m["prompt_tokens"], m["completion_tokens"]),
                      f"{_num(m['tokens_per_second_p50'])}/{_num(m['tokens_per_second_p95'])}",
                      f"{_secs(m['ttft_seconds_p50'])}/{_secs(m['ttft_seconds_p95'])}",
                      _secs(m["tpot_seconds_p50"], 3), _joules(m, report),
                      "-" if m["joules_per_token"] is None else f"{m['joules_per_token']:.2f}"]
                     for m in report.llm])
        keys = ["model", "requests", "errors", "prompt_tokens", "completion_tokens", "tokens_per_second_p50",
                "tokens_per_second_p95", "ttft_seconds_p50", "ttft_seconds_p95", "tpot_seconds_p50",
                "load_seconds_max", "measured_requests", "energy_joules", "joules_per_token"]
        return keys, [[m[k] for k in keys] for m in report.llm]
    if section == "models":
        loads = {m["model"]: m["load_seconds_max"] for m in report.llm}
        if human:
            return (["Host", "Model", "Loads", "Loaded", "VRAM", "Longest load"],
                    [[m["host"], m["model"], m["loads"], d(m["loaded_seconds"]),
                      fmt_bytes(m["vram_max_bytes"]), _secs(loads.get(m["model"]))] for m in report.models])
        keys = ["host", "model", "loads", "loaded_seconds", "vram_max_bytes", "size_bytes"]
        return keys, [[m[k] for k in keys] for m in report.models]
    if section == "processes":
        ranked = [(by, p) for by, key in (("GPU time", "by_gpu_time"), ("energy", "by_energy"))
                  for p in report.processes.get(key, [])]
        if human:
            return (["By", "Program", "Category", "Label", "Runs", "GPU time", "Energy"],
                    [[by, _on_host(report, p["host"], p["name"] or "?"), p["category"],
                      p["label"] or "-", p["runs"], d(p["gpu_seconds"]), kwh(p["energy_joules"])]
                     for by, p in ranked])
        keys = ["host", "name", "category", "label", "runs", "gpu_seconds", "energy_joules", "max_used_memory_bytes"]
        return ["ranked_by", *keys], [[by.replace(" ", "_"), *[p[k] for k in keys]] for by, p in ranked]
    return [], []


def _integrated(g: dict) -> bool:
    """Whether a GPU's energy carries the ``*`` of INTEGRATED_NOTE."""
    return g["energy_method"] == METHOD_INTEGRATED and g["energy_joules"] is not None


def _unmeasured(m: dict) -> bool:
    """Whether a model's energy carries the ``*`` of LLM_NOTE (some of its requests not measured)."""
    return m["energy_joules"] is not None and m["measured_requests"] < m["requests"]


def _reasons(seconds: dict[str, float]) -> "Durations | str":
    reasons = {k: v for k, v in seconds.items() if v}
    return Durations(", ".join(f"{k} {{}}" for k in reasons), tuple(reasons.values())) if reasons else "-"


def _tokens(prompt: int | None, completion: int | None) -> str:
    """``in/out``; a count no request reported is ``–`` (unknown), not 0."""
    if prompt is None and completion is None:
        return UNKNOWN
    return f"{UNKNOWN if prompt is None else f'{prompt:,}'}/{UNKNOWN if completion is None else f'{completion:,}'}"


def _top_use(by_category: dict[str, float]) -> str:
    """The category that used the most process energy, after its share (so
    that a cell that gives way keeps the number)."""
    total = sum(by_category.values())
    if not total:
        return "-"
    top = max(sorted(by_category), key=lambda c: by_category[c])
    return f"{by_category[top] / total * 100:.0f}% {top}"


def _pct(share: float | None) -> float | None:
    return None if share is None else share * 100


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _secs(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}s"


def _joules(m: dict, report: Report) -> str:
    """Energy of the measured requests; a ``*`` when some requests were not measured."""
    if m["energy_joules"] is None:
        return "-"
    return kwh(m["energy_joules"]) + ("*" if _unmeasured(m) else "")


def _share(part: float | None, whole: float | None) -> float | None:
    return None if not whole or part is None else part / whole * 100


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


# ---- text and markdown ---------------------------------------------------

def _present(report: Report, sections: tuple[str, ...]) -> list[str]:
    if report.trend is not None:
        order = ["trend", "cost"]
    else:
        order = ["coverage", "gaps", "hosts", "gpus", "throttling", "days",
                 "workload", "games", "llm", "models", "processes", "cost"]
    if report.pricing is None and "cost" not in sections:
        order.remove("cost")  # no prices: no word of money or CO2 (#16)
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
                markdown: bool = False, width: int | None = None) -> str:
    """Text (or Markdown) in at most ``width`` columns; None: no limit (a file),
    every cell whole."""
    import click

    def title(text: str) -> str:
        if markdown:
            return f"## {text}"
        return click.style(text, bold=True) if color else text

    p = report.period
    head = f"gpm report: {p.label}"
    if p.iso_week:
        head += f" ({fmt_local(p.since_ms)} → {fmt_local(p.until_ms)})"
    lines = [f"# {head}" if markdown else (click.style(head, bold=True) if color else head)]
    lines += wrap(f"Busy: utilization above {report.busy_threshold_percent:g}%. Times are local. "
                  "Energy: the GPUs' energy counters.", width)
    for section in _present(report, sections):
        if not _has_data(report, section):
            if section == "hosts":
                continue
            lines.append("")
            if section in ("gaps", "throttling") and report.gpus:
                lines.append(f"{TITLES[section]}: none.")
            else:
                reason = report.omitted.get(section, "no data in this range")
                lines += wrap(f"{TITLES[section]}: omitted, {reason}.", width)
            continue
        lines.append("")
        lines.append(title(TITLES[section]))
        if not markdown:
            lines.append("")
        headers, rows = rows_for(report, section, True)
        notes: list[str] = []
        if section == "gaps" and len(rows) > MAX_GAPS_SHOWN:
            longest = sorted(range(len(rows)), key=lambda i: -_gap_seconds(report, i))[:MAX_GAPS_SHOWN]
            notes.append(f"{len(rows) - MAX_GAPS_SHOWN} shorter gaps not shown (all are in --format json).")
            rows = [rows[i] for i in sorted(longest)]
        if section == "days":
            lines.extend(day_strip(report, markdown, width))
            lines.append("")
        # Names, labels and models came from outside: table() shows their
        # escapes and newlines (#12.10), cuts them to the width (#13.1).
        lines.append(_layout(section, headers, rows, width, markdown, color))
        if section == "coverage":
            notes += [f"{visible(c['host'])}: first sample ever {fmt_local(report.first_samples[c['host']])}; "
                      "the range before it is not counted." for c in report.coverage
                      if c.get("before_first_sample_seconds")]
        if section in ("hosts", "days", "trend") and _summed(report, section):
            notes.append(SUMMED_NOTE.format("GPU-busy" if section == "trend" else "GPU time and GPU-busy"))
        if section == "gpus" and any(_integrated(g) for g in report.gpus):
            notes.append(INTEGRATED_NOTE)
        if section == "cost":
            notes += cost_notes(report)
        if section == "llm":
            notes.append(LLM_LEGEND)
            if any(_unmeasured(m) for m in report.llm):
                notes.append(LLM_NOTE)
        for note in notes:
            lines += wrap(note, width)
        if section == "coverage":
            lines += failure_lines(report, width, markdown)
    return "\n".join(lines) + "\n"


def _layout(section: str, headers: list[str], rows: list[list], width: int | None, markdown: bool,
            color: bool) -> str:
    """A section's table; the columns of GIVE_WAY give way, left-aligned (they are names)."""
    import click

    give_way = tuple((headers.index(e[0]), e[1]) if isinstance(e, tuple) else headers.index(e)
                     for e in GIVE_WAY.get(section, ()))
    names = {e[0] if isinstance(e, tuple) else e for e in give_way}
    right = alignment(rows) if rows else [False] * len(headers)
    columns = [Column(h, right=right[i] and i not in names) for i, h in enumerate(headers)]
    text = table(columns, rows, UNLIMITED if width is None else width, give_way=give_way, markdown=markdown)
    return click.style(text, fg="yellow") if color and section == "gaps" else text


def _summed(report: Report, section: str) -> bool:
    """Whether a row of ``section`` sums over several GPUs (SUMMED_NOTE is due)."""
    if section == "hosts":
        return any(h["gpus"] > 1 for h in report.hosts)
    if section == "trend":
        return any(t["gpus"] > 1 for t in report.trend or [])
    return len(report.gpus) > 1


def _gap_seconds(report: Report, i: int) -> float:
    gaps = [g for c in report.coverage for g in c["gaps"]]
    return gaps[i]["seconds"]


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


def render(report: Report, fmt: str, sections: tuple[str, ...] = (), *, color: bool = False,
           width: int | None = None) -> str:
    """``report`` in ``fmt``; text and markdown in at most ``width`` columns
    (None: no limit). json and csv are for programs and keep every value."""
    renderers: dict[str, Callable[..., str]] = {
        "json": render_json, "csv": render_csv,
        "markdown": lambda r, s: render_text(r, s, markdown=True, width=width),
        "text": lambda r, s: render_text(r, s, color=color, width=width),
    }
    return renderers[fmt](report, sections)
