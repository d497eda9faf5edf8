"""The html report's GPU charts, from the json report's dict: the utilization heat
map, energy per day by workload, and memory and temperature over the range."""

from __future__ import annotations

from gpm.humanize import short_gpu_name
from gpm.report import figures as f
from gpm.report import svg
from gpm.report.hourly import HOUR_MS, TOO_LONG
from gpm.report.period import fmt_local, local_date, local_midnight_ms
from gpm.report.usage import CATEGORIES

NOT_CHARGED = "not charged to a process"


def gpu_names(obj: dict) -> list[str]:
    """``GPU 0 (RTX 4090)`` per row of ``hourly.gpus``, with the host when there are several."""
    names = {(g["host"], g["gpu_uuid"]): g["gpu_name"] for g in obj["gpus"]}
    multi = len({g["host"] for g in obj["gpus"]}) > 1
    out = []
    for g in obj["hourly"]["gpus"]:
        host = f"{g['host']}:" if multi else ""
        out.append(f"{host}GPU {g['gpu_index']} ({short_gpu_name(names.get((g['host'], g['gpu_uuid'])) or '?')})")
    return out


def _days(starts: list[int]) -> list[tuple[str, list[tuple[int, int]]]]:
    """Hours grouped by local date: (date, [(index in hourly, hour of the day)])."""
    out: dict[str, list[tuple[int, int]]] = {}
    for i, start in enumerate(starts):
        day = local_date(start)
        out.setdefault(day.isoformat(), []).append((i, (start - local_midnight_ms(day)) // HOUR_MS))
    return list(out.items())


def _monitored_from(obj: dict) -> dict[str, int]:
    """Per host: where the range counts (before it, gpm was not sampling yet: no gap)."""
    since = obj["report"]["since_ms"]
    return {c["host"]: since + int(c["before_first_sample_seconds"] * 1000) for c in obj["coverage"]}


def heatmap(obj: dict) -> str:
    title = "GPU utilization by hour of day"
    hourly = obj.get("hourly")
    if not hourly or not hourly["gpus"]:
        return f.omitted("heatmap", title, _why_no_hours(obj))
    starts = hourly["hour_starts_ms"]
    days = _days(starts)
    columns = max(24, *(h + 1 for _, hs in days for _, h in hs))
    monitored = _monitored_from(obj)
    blocks, rows, gaps = [], [], 0
    for k, (name, g) in enumerate(zip(gpu_names(obj), hourly["gpus"])):
        block = []
        for iso, hours in days:
            cells: list = [svg.OUTSIDE] * columns
            row: list = [f"{name} {iso}"] + [""] * columns
            for i, h in hours:
                util = g["utilization_mean_percent"][i]
                if g["sampled_seconds"][i] > 0 and util is not None:
                    cells[h] = util
                    row[1 + h] = f.cell(util, lambda v: f"{v:.0f}",
                                        ("hourly", "gpus", k, "utilization_mean_percent", i))
                elif starts[i] + HOUR_MS > monitored.get(g["host"], 0):
                    cells[h] = svg.GAP
                    row[1 + h] = "gap"
                    gaps += 1
            block.append((f.day_label(iso), cells))
            rows.append(row)
        blocks.append((name, block))
    desc = (f"Mean utilization of each GPU in each hour of each day of {obj['report']['since'][:10]} to "
            f"{obj['report']['until'][:10]}, darker is busier; {gaps} hours are gaps (hatched): gpm was not "
            "sampling, so they are unknown, not idle. The numbers are in the table below.")
    chart = svg.heatmap("c-heatmap", title, desc, blocks, columns)
    headers = ["GPU and day", *[f"{h:02d}" for h in range(columns)]]
    return f.figure("heatmap", title, chart, f.table(headers, rows, "Mean utilization, percent, per local hour"),
                    "Hatched: a gap (gpm was not sampling), which is unknown, not idle.")


def _why_no_hours(obj: dict) -> str:
    if not obj["gpus"]:
        return obj["omitted"].get("gpus", "no GPU samples in this range")
    return TOO_LONG


def energy_per_day(obj: dict) -> str:
    title = "Energy per day by workload"
    days = obj["days"]
    if not days or all(d["energy_joules"] is None and not d.get("category_energy_joules") for d in days):
        return f.omitted("energy", title, obj["omitted"].get("days", "no energy figures in this range"))
    seen = {c for d in days for c in d.get("category_energy_joules", {})}
    categories = [c for c in CATEGORIES if c in seen] + sorted(seen - set(CATEGORIES))
    series = [(c, [d.get("category_energy_joules", {}).get(c) or 0 for d in days]) for c in categories]
    rest = [None if d["energy_joules"] is None
            else round(max(0.0, d["energy_joules"] - sum(d.get("category_energy_joules", {}).values())), 3)
            for d in days]
    if any(rest):
        series.append((NOT_CHARGED, rest))
    labels = [f.day_label(d["date"]) for d in days]
    totals = [d["energy_joules"] for d in days]
    known = [t for t in totals if t is not None]
    desc = (f"Energy of all GPUs per local day, stacked by the workload category of the processes it was "
            f"charged to; the total of the range is {f.energy(sum(known)) if known else 'unknown'}. "
            "The numbers are in the table below.")
    chart = svg.stacked_bars("c-energy", title, desc, labels, series, totals, f.energy, "energy per day (kWh)",
                             "day", scale_by=3.6e6)
    rows = []
    for i, d in enumerate(days):
        rows.append([d["date"], *[f.cell(d["category_energy_joules"].get(c), f.energy,
                                         ("days", i, "category_energy_joules", c)
                                         if c in d["category_energy_joules"] else None) for c in categories],
                     *([f.cell(rest[i], f.energy)] if any(rest) else []),
                     f.cell(d["energy_joules"], f.energy, ("days", i, "energy_joules"))])
    headers = ["Day", *categories, *([NOT_CHARGED] if any(rest) else []), "Total (all GPUs)"]
    return f.figure("energy", title, chart, f.table(headers, rows) + workload_table(obj),
                    "A process's energy is its share of its GPU's counter; idle draw goes to whoever held the GPU.")


def workload_table(obj: dict) -> str:
    if not obj["workload"]:
        return ""
    rows = [[w["category"], f.cell(w["runs"], f.count, ("workload", i, "runs")),
             f.cell(w["gpu_seconds"], f.hours, ("workload", i, "gpu_seconds")),
             f.cell(w["energy_joules"], f.energy, ("workload", i, "energy_joules")),
             f.cell(w["energy_share"], lambda v: f"{v * 100:.1f} %", ("workload", i, "energy_share")),
             *f.price_cells(obj, w, "workload", i)]
            for i, w in enumerate(obj["workload"])]
    return f.table(["Category", "Runs", "GPU time", "Energy", "Energy share", *f.price_headers(obj)], rows,
                   "Workload mix over the range")


def _ticks(starts: list[int]) -> list[tuple[int, str]]:
    return [(hours[0][0], f.day_label(iso)) for iso, hours in _days(starts)]


def memory_and_temperature(obj: dict) -> str:
    title = "GPU memory and temperature over the range"
    hourly = obj.get("hourly")
    if not hourly or not hourly["gpus"]:
        return f.omitted("memtemp", title, _why_no_hours(obj))
    starts = hourly["hour_starts_ms"]
    names = gpu_names(obj)
    gpus = hourly["gpus"]
    marks = [(n.split(" (")[0], [bool(t) for t in g["throttled_seconds"]]) for n, g in zip(names, gpus)]
    throttled = sum(1 for _, flags in marks for x in flags if x)
    temp = svg.lines("c-temp", "GPU temperature, hourly maximum",
                     f"Each GPU's highest temperature in each hour; {throttled} GPU-hours with throttling are "
                     "marked in the lanes under the plot. The numbers are in the table below.",
                     len(starts), _ticks(starts), [(n, g["temperature_max_celsius"]) for n, g in zip(names, gpus)],
                     f.celsius, "temperature (°C)", "local day", marks, "throttled in this hour")
    mem = svg.lines("c-mem", "GPU memory used, hourly maximum",
                    "Each GPU's highest memory use in each hour, in GiB; gaps break the lines. "
                    "The numbers are in the table below.",
                    len(starts), _ticks(starts),
                    [(n, [None if b is None else b / (1 << 30) for b in g["memory_max_bytes"]])
                     for n, g in zip(names, gpus)],
                    lambda v: f"{v:g}", "memory (GiB)", "local day", marks, "throttled in this hour")
    headers = ["Hour"]
    for n in names:
        headers += [f"{n} temp", f"{n} memory", f"{n} throttled"]
    rows = []
    for i, start in enumerate(starts):
        if not any(g["sampled_seconds"][i] for g in gpus):
            continue
        row: list = [fmt_local(start)]
        for k, g in enumerate(gpus):
            row += [f.cell(g["temperature_max_celsius"][i], f.celsius,
                           ("hourly", "gpus", k, "temperature_max_celsius", i)),
                    f.cell(g["memory_max_bytes"][i], f.nbytes, ("hourly", "gpus", k, "memory_max_bytes", i)),
                    f.cell(g["throttled_seconds"][i], f.secs, ("hourly", "gpus", k, "throttled_seconds", i))]
        rows.append(row)
    note = "Hours without any sample are left out of the table and break the lines."
    return f.figure("memtemp", title, temp + mem, f.table(headers, rows, "Per local hour with samples"), note)
