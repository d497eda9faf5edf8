"""The html report's charts of what used the GPUs, from the json report's dict:
LLM models, games, top processes and the alerts that fired."""

from __future__ import annotations

from gpm.report import figures as f
from gpm.report import svg


LLM_NOTE = ("Tok/s and TTFT: nearest-rank percentiles over the requests that report them; "
            "joules per token over the measured requests (those whose GPU samples are in the database).")


def llm(obj: dict) -> str:
    title = "LLM requests per model"
    models = obj["llm"]
    if not models:
        return f.omitted("llm", title, obj["omitted"].get("llm", "no LLM requests in this range"))
    names = [m["model"] for m in models]
    tps = svg.boxes("c-llm-tps", "Generation speed per model",
                    "Box plot per model of the tokens per second of its requests: box from the 25th to the 75th "
                    "percentile, a bar at the median, a tick at the 95th, whiskers from min to max. "
                    "The numbers are in the table below.",
                    [(n, m["tokens_per_second_distribution"]) for n, m in zip(names, models)],
                    lambda v: f"{v:g}", "tokens per second")
    ttft = svg.boxes("c-llm-ttft", "Time to first token per model",
                     "Box plot per model of its requests' time to first token, in seconds, drawn like the one "
                     "above. The numbers are in the table below.",
                     [(n, m["ttft_seconds_distribution"]) for n, m in zip(names, models)], f.secs,
                     "time to first token (s)")
    dates = [d["date"] for d in obj["days"]] or sorted({d for m in models for d in m["requests_per_day"]})
    per_day = svg.stacked_bars("c-llm-days", "LLM requests per day",
                               "Requests per local day, stacked by model. The numbers are in the table below.",
                               [f.day_label(d) for d in dates],
                               [(n, [m["requests_per_day"].get(d, 0) for d in dates]) for n, m in zip(names, models)],
                               [sum(m["requests_per_day"].get(d, 0) for m in models) for d in dates],
                               f.count, "requests", "day")
    jpt = svg.hbars("c-llm-jpt", "Energy per generated token",
                    "Joules per generated token per model, over its measured requests. "
                    "The numbers are in the table below.",
                    [(n, m["joules_per_token"]) for n, m in zip(names, models)],
                    lambda v: f"{v:.2f} J", "joules per generated token", "f2")
    priced = f.priced(obj)
    rows = []
    for i, m in enumerate(models):
        p = ("llm", i)
        tps_d, ttft_d = m["tokens_per_second_distribution"] or {}, m["ttft_seconds_distribution"] or {}
        rows.append([m["model"], f.cell(m["requests"], f.count, (*p, "requests")),
                     f.cell(m["errors"], f.count, (*p, "errors")),
                     f.cell(m["completion_tokens"], f.count, (*p, "completion_tokens")),
                     *[f.cell(tps_d.get(q), lambda v: f"{v:.1f}",
                              (*p, "tokens_per_second_distribution", q) if tps_d else None)
                       for q in ("min", "p50", "p95", "max")],
                     *[f.cell(ttft_d.get(q), f.secs, (*p, "ttft_seconds_distribution", q) if ttft_d else None)
                       for q in ("min", "p50", "p95", "max")],
                     f.cell(m["energy_joules"], f.energy, (*p, "energy_joules")),
                     f.cell(m["joules_per_token"], lambda v: f"{v:.3f}", (*p, "joules_per_token")),
                     *f.price_cells(obj, m, *p),
                     *([f.cell(m.get("cost_per_million_tokens"), f.money(obj),
                               (*p, "cost_per_million_tokens") if "cost_per_million_tokens" in m else None)]
                       if priced else [])])
    headers = ["Model", "Requests", "Errors", "Generated tokens", "Tok/s min", "Tok/s p50", "Tok/s p95",
               "Tok/s max", "TTFT min", "TTFT p50", "TTFT p95", "TTFT max", "Energy", "J/token",
               *f.price_headers(obj), *(["Cost per million tokens"] if priced else [])]
    day_rows = [[d, *[f.cell(m["requests_per_day"].get(d, 0), f.count,
                             ("llm", i, "requests_per_day", d) if d in m["requests_per_day"] else None)
                      for i, m in enumerate(models)]] for d in dates]
    tables = f.table(headers, rows, "Per model") + f.table(["Day", *names], day_rows, "Requests per day")
    return f.figure("llm", title, tps + ttft + per_day + jpt, tables, LLM_NOTE)


def games(obj: dict) -> str:
    title = "Games"
    games = obj["games"]
    if not games:
        return f.omitted("games", title, obj["omitted"].get("games", "no games in this range"))
    names = [g["game"] for g in games]
    played = svg.hbars("c-games-hours", "Hours played per game",
                       "GPU time of each game over the range (its busiest GPU), in hours. "
                       "The numbers are in the table below.",
                       [(n, g["gpu_seconds"] / 3600) for n, g in zip(names, games)],
                       lambda v: f"{v:.1f} h", "hours played", "f0")
    energy = svg.hbars("c-games-energy", "Energy per game",
                       "GPU energy charged to each game over the range, in kWh. The numbers are in the table below.",
                       [(n, None if g["energy_joules"] is None else g["energy_joules"] / 3.6e6)
                        for n, g in zip(names, games)],
                       lambda v: f"{v:.2f} kWh", "energy (kWh)", "f1")
    rows = [[g["game"], f.cell(g["sessions"], f.count, ("games", i, "sessions")),
             f.cell(g["gpu_seconds"], f.hours, ("games", i, "gpu_seconds")),
             f.cell(g["energy_joules"], f.energy, ("games", i, "energy_joules")),
             *f.price_cells(obj, g, "games", i)] for i, g in enumerate(games)]
    table = f.table(["Game", "Sessions", "Hours played", "Energy", *f.price_headers(obj)], rows)
    return f.figure("games", title, played + energy, table)


def processes(obj: dict) -> str:
    title = "Top processes"
    top = obj["processes"]
    if not top or not (top.get("by_gpu_time") or top.get("by_energy")):
        return f.omitted("processes", title, obj["omitted"].get("processes", "no process runs in this range"))

    def who(p: dict) -> str:
        return f"{p['name']} ({p['label']})" if p["label"] and p["label"] != p["name"] else p["name"]

    by_time = svg.hbars("c-proc-time", "Programs with the most GPU time",
                        "GPU time of the programs that held the GPUs longest, in hours. "
                        "The numbers are in the table below.",
                        [(who(p), p["gpu_seconds"] / 3600) for p in top["by_gpu_time"]],
                        lambda v: f"{v:.1f} h", "GPU time (hours)", "f3")
    by_energy = svg.hbars("c-proc-energy", "Programs with the most energy",
                          "GPU energy charged to the programs that used the most, in kWh. "
                          "The numbers are in the table below.",
                          [(who(p), None if p["energy_joules"] is None else p["energy_joules"] / 3.6e6)
                           for p in top["by_energy"]],
                          lambda v: f"{v:.2f} kWh", "energy (kWh)", "f4")
    tables = []
    for key, caption in (("by_gpu_time", "By GPU time"), ("by_energy", "By energy")):
        rows = [[who(p), p["host"], p["category"], f.cell(p["runs"], f.count, ("processes", key, i, "runs")),
                 f.cell(p["gpu_seconds"], f.hours, ("processes", key, i, "gpu_seconds")),
                 f.cell(p["energy_joules"], f.energy, ("processes", key, i, "energy_joules")),
                 f.cell(p["max_used_memory_bytes"], f.nbytes, ("processes", key, i, "max_used_memory_bytes"))]
                for i, p in enumerate(top[key])]
        tables.append(f.table(["Program", "Host", "Category", "Runs", "GPU time", "Energy", "Peak memory"],
                              rows, caption))
    return f.figure("processes", title, by_time + by_energy, "".join(tables))


def alerts(obj: dict) -> str:
    """The alerts that fired (helper E's ``alerts`` section); nothing when the report has none."""
    title = "Alerts that fired"
    fired = obj.get("alerts")
    if fired is None:
        return ""
    if not fired:
        return f.omitted("alerts", title, "no alert fired in this range")

    def name(a: dict) -> str:
        return f"{a['rule']} (GPU {a['gpu_index']})" if a.get("gpu_index") is not None else a["rule"]

    chart = svg.hbars("c-alerts", title,
                      "Time each alert rule was firing over the range, per GPU, in hours. "
                      "The numbers are in the table below.",
                      [(name(a), (a.get("firing_seconds") or 0) / 3600) for a in fired],
                      lambda v: f"{v:.1f} h", "time firing (hours)", "f5")
    rows = [[a["rule"], "" if a.get("gpu_index") is None else str(a["gpu_index"]), a.get("severity") or "",
             f.cell(a.get("fired"), f.count, ("alerts", i, "fired")),
             f.cell(a.get("firing_seconds"), f.secs, ("alerts", i, "firing_seconds")),
             f.cell(a.get("longest_seconds"), f.secs, ("alerts", i, "longest_seconds"))]
            for i, a in enumerate(fired)]
    return f.figure("alerts", title, chart,
                    f.table(["Rule", "GPU", "Severity", "Fired", "Firing for", "Longest"], rows))
