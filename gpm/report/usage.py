"""What used the GPUs: workload mix, games, LLM models and top processes.

Read from ``process_events`` (one row per process run, see
``gpm.store.schema_classify``) and the Ollama tables (``llm_requests``,
``llm_sessions``), in SQLite and in the archive, through the shared history
reader. Figures in machine units (seconds, joules, bytes).

- A process run is counted in the range by the share of its span
  ``[first_seen, last_seen]`` that lies in the range (all of it when it ran
  inside the range): its GPU time and energy are totals of the whole run.
- Process energy is the run's share of its GPU's energy (the saver splits
  each interval's counter delta among the processes in the sample), so idle
  draw is charged to whoever held the GPU; shares are of the energy charged
  to processes, not of the GPUs' total.
- A game's session is one process run (its GPUs together); its hours are
  the GPU time of its busiest GPU.
- LLM energy per request is ``gpm.llm.energy.request_energy``: the GPU
  energy counter over the request's span, shared among concurrent requests.
  It needs the request's GPU samples in the database, so requests whose
  samples were archived (or never taken) are counted but not measured
  (``measured_requests``); joules per token divides the measured requests'
  energy by their generated tokens.
- Percentiles are nearest-rank over the requests that report the figure.
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from gpm.llm.energy import request_energy
from gpm.report.period import local_date
from gpm.report.rollup import Selection
from gpm.store.history import scan
from gpm.store.timeseries import table_exists

if TYPE_CHECKING:
    import polars as pl

CATEGORIES = ("gaming", "llm_inference", "ml_training", "desktop", "general_compute")
TOP_PROCESSES = 10


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (the same rule as the GPUs' utilization p95)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _history(conn: sqlite3.Connection | None, archive_dir: Path | None, table: str, *,
             since_ms: int | None, until_ms: int, hosts: tuple[str, ...], own_host: str | None,
             ) -> "pl.DataFrame | None":
    """All of ``table``'s rows in the range from both stores; None when neither has the table."""
    in_db = conn is not None and table_exists(conn, table)
    archived = archive_dir is not None and (Path(archive_dir) / table).is_dir()
    if not in_db and not archived:
        return None
    return scan(table, conn=conn if in_db else None, archive_dir=archive_dir if archived else None,
                since_ms=since_ms, until_ms=until_ms, hosts=hosts or None, own_host=own_host).collect()


# ---- process runs -----------------------------------------------------------

def process_runs(conn, archive_dir, sel: Selection, own_host: str | None) -> "pl.DataFrame | None":
    """Process runs overlapping the selection, with ``part`` (the share of the
    run's span inside the range) and its GPU time and energy scaled by it."""
    import polars as pl

    # A run is filed under its first sighting, which may be before the range.
    runs = _history(conn, archive_dir, "process_events", since_ms=None, until_ms=sel.until_ms,
                    hosts=sel.hosts, own_host=own_host)
    if runs is None:
        return None
    runs = runs.filter(pl.col("last_seen_ms") >= sel.since_ms)
    if sel.gpus:
        keep = [sel.gpu_matches(u, i) for u, i in zip(runs["gpu_uuid"], runs["gpu_index"])]
        runs = runs.filter(pl.Series(keep, dtype=pl.Boolean))
    span = pl.col("last_seen_ms") - pl.col("first_seen_ms")
    inside = (pl.min_horizontal("last_seen_ms", pl.lit(sel.until_ms))
              - pl.max_horizontal("first_seen_ms", pl.lit(sel.since_ms)))
    part = pl.when(span > 0).then(inside.clip(lower_bound=0) / span).otherwise(1.0)
    return runs.with_columns(part=part).with_columns(
        seconds=pl.col("gpu_seconds") * pl.col("part"),
        joules=pl.col("energy_joules") * pl.col("part"),
        who=pl.coalesce("label", "name", pl.lit("?")),
        session=pl.coalesce("start_time_ms", "first_seen_ms"),
    )


def workload(runs: "pl.DataFrame") -> list[dict]:
    import polars as pl

    per = {r["category"]: r for r in runs.group_by("category").agg(
        pl.len().alias("runs"), pl.col("seconds").sum(), pl.col("joules").sum()).iter_rows(named=True)}
    total_s = sum(r["seconds"] for r in per.values())
    total_j = sum(r["joules"] for r in per.values())
    order = [c for c in CATEGORIES if c in per] + sorted(c for c in per if c not in CATEGORIES)
    return [{
        "category": c,
        "runs": per[c]["runs"],
        "gpu_seconds": _r(per[c]["seconds"]),
        "gpu_time_share": _r(per[c]["seconds"] / total_s, 4) if total_s else None,
        "energy_joules": _r(per[c]["joules"]),
        "energy_share": _r(per[c]["joules"] / total_j, 4) if total_j else None,
    } for c in order]


def category_energy_per_day(runs: "pl.DataFrame", days: list[dict]) -> list[dict[str, float]]:
    """Each day's process energy per category (``days``: the report's, with
    ``start_ms``/``end_ms``): a run's energy is shared among the days by the
    part of its span in each, as the range itself counts it; a run of one
    sighting goes to the day it was seen. Sums over the days to ``workload``."""
    import polars as pl

    out: list[dict[str, float]] = []
    span = pl.col("last_seen_ms") - pl.col("first_seen_ms")
    for day in days:
        inside = (pl.min_horizontal("last_seen_ms", pl.lit(day["end_ms"]))
                  - pl.max_horizontal("first_seen_ms", pl.lit(day["start_ms"]))).clip(lower_bound=0)
        seen = pl.col("first_seen_ms").is_between(day["start_ms"], day["end_ms"], closed="left")
        share = pl.when(span > 0).then(inside / span).otherwise(seen.cast(pl.Float64))
        per = runs.group_by("category").agg((pl.col("energy_joules") * share).sum().alias("j")).sort("category")
        out.append({r[0]: _r(r[1]) for r in per.iter_rows() if r[1]})
    return out


def games(runs: "pl.DataFrame") -> list[dict]:
    import polars as pl

    sessions = runs.filter(pl.col("category") == "gaming").group_by("host", "pid", "session", "who").agg(
        pl.col("seconds").max(), pl.col("joules").sum(),
        pl.col("first_seen_ms").min(), pl.col("last_seen_ms").max(),
    )
    per = sessions.group_by("who").agg(
        pl.len().alias("sessions"), pl.col("seconds").sum(), pl.col("joules").sum(),
        pl.col("first_seen_ms").min(), pl.col("last_seen_ms").max(),
    ).sort(["seconds", "who"], descending=[True, False])
    return [{
        "game": r["who"], "sessions": r["sessions"], "gpu_seconds": _r(r["seconds"]),
        "energy_joules": _r(r["joules"]), "first_seen_ms": r["first_seen_ms"], "last_seen_ms": r["last_seen_ms"],
    } for r in per.iter_rows(named=True)]


def top_processes(runs: "pl.DataFrame", limit: int = TOP_PROCESSES) -> dict[str, list[dict]]:
    """The programs that held the GPUs longest and used the most energy (runs of one program together)."""
    import polars as pl

    per = runs.group_by("host", "name", "category", "label").agg(
        pl.len().alias("runs"), pl.col("seconds").sum(), pl.col("joules").sum(),
        pl.col("max_used_memory_bytes").max(),
    )

    def rows(key: str) -> list[dict]:
        top = per.sort([key, "host", "name"], descending=[True, False, False], nulls_last=True).head(limit)
        return [{
            "host": r["host"], "name": r["name"], "category": r["category"], "label": r["label"],
            "runs": r["runs"], "gpu_seconds": _r(r["seconds"]), "energy_joules": _r(r["joules"]),
            "max_used_memory_bytes": r["max_used_memory_bytes"],
        } for r in top.iter_rows(named=True)]

    return {"by_gpu_time": rows("seconds"), "by_energy": rows("joules")}


def host_usage(runs: "pl.DataFrame | None", requests: "pl.DataFrame | None") -> dict[str, dict]:
    """Per host: GPU time and energy per category, LLM requests and tokens (for weekly_summaries)."""
    import polars as pl

    out: dict[str, dict] = defaultdict(lambda: {"category_gpu_seconds": {}, "category_energy_joules": {},
                                               "llm_requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
    if runs is not None and not runs.is_empty():
        for r in runs.group_by("host", "category").agg(pl.col("seconds").sum(), pl.col("joules").sum()).sort(
                "host", "category").iter_rows(named=True):
            out[r["host"]]["category_gpu_seconds"][r["category"]] = _r(r["seconds"])
            out[r["host"]]["category_energy_joules"][r["category"]] = _r(r["joules"])
    if requests is not None and not requests.is_empty():
        for r in requests.group_by("host").agg(
                pl.len().alias("n"), pl.col("prompt_tokens").sum(), pl.col("completion_tokens").sum(),
        ).iter_rows(named=True):
            out[r["host"]].update(llm_requests=r["n"], prompt_tokens=r["prompt_tokens"] or 0,
                                  completion_tokens=r["completion_tokens"] or 0)
    return dict(out)


# ---- LLM ------------------------------------------------------------------------

def llm_requests(conn, archive_dir, sel: Selection, own_host: str | None) -> "pl.DataFrame | None":
    """Requests that started in the range, each with its energy (None: not measured).

    SQLite rows and archived rows are read apart: only the database's own
    requests can be matched with its GPU samples (archived ids may repeat
    another database's).
    """
    import polars as pl

    frames = []
    in_db = conn is not None and table_exists(conn, "llm_requests")
    archived = archive_dir is not None and (Path(archive_dir) / "llm_requests").is_dir()
    if not in_db and not archived:
        return None
    if in_db:
        recent = scan("llm_requests", conn=conn, since_ms=sel.since_ms, until_ms=sel.until_ms,
                      hosts=sel.hosts or None, own_host=own_host).collect()
        energy = request_energy(conn, sel.since_ms, sel.until_ms) if not recent.is_empty() else {}
        frames.append(recent.with_columns(
            energy_joules=pl.Series([energy.get(i) for i in recent["id"]], dtype=pl.Float64)))
    if archived:
        old = scan("llm_requests", conn=conn if in_db else None, archive_dir=archive_dir,
                   since_ms=sel.since_ms, until_ms=sel.until_ms, hosts=sel.hosts or None,
                   own_host=own_host, recent=False).collect()
        frames.append(old.with_columns(energy_joules=pl.lit(None, dtype=pl.Float64)))
    return pl.concat(frames, how="diagonal_relaxed")


def distribution(values: list[float], digits: int) -> dict | None:
    """Five nearest-rank points and the 95th percentile of ``values`` (a box plot's numbers)."""
    if not values:
        return None
    return {"n": len(values), "min": _r(min(values), digits),
            **{f"p{q}": _r(percentile(values, q / 100), digits) for q in (25, 50, 75, 95)},
            "max": _r(max(values), digits)}


def llm_models(requests: "pl.DataFrame") -> list[dict]:
    import polars as pl

    out = []
    requests = requests.with_columns(model=pl.col("model").fill_null("?"))
    for model in sorted(requests["model"].unique().to_list()):
        rq = requests.filter(pl.col("model") == model)

        def known(col: str) -> list[float]:
            return rq[col].drop_nulls().to_list()

        measured = rq.filter(pl.col("energy_joules").is_not_null())
        with_tokens = measured.filter(pl.col("completion_tokens") > 0)
        tokens = with_tokens["completion_tokens"].sum()
        out.append({
            "model": model,
            "requests": rq.height,
            "errors": rq["error"].is_not_null().sum(),
            # None when no request reported the count: unknown, not zero (#13.8).
            "prompt_tokens": rq["prompt_tokens"].sum() if rq["prompt_tokens"].count() else None,
            "completion_tokens": rq["completion_tokens"].sum() if rq["completion_tokens"].count() else None,
            "tokens_per_second_p50": _r(percentile(known("tokens_per_second"), 0.50), 2),
            "tokens_per_second_p95": _r(percentile(known("tokens_per_second"), 0.95), 2),
            "ttft_seconds_p50": _r(percentile(known("ttft_seconds"), 0.50)),
            "ttft_seconds_p95": _r(percentile(known("ttft_seconds"), 0.95)),
            "tpot_seconds_p50": _r(percentile(known("tpot_seconds"), 0.50), 4),
            "load_seconds_max": _r(max(known("load_seconds"), default=None)),
            "measured_requests": measured.height,
            "energy_joules": _r(measured["energy_joules"].sum()) if measured.height else None,
            "joules_per_token": _r(with_tokens["energy_joules"].sum() / tokens) if tokens else None,
            "tokens_per_second_distribution": distribution(known("tokens_per_second"), 2),
            "ttft_seconds_distribution": distribution(known("ttft_seconds"), 3),
            "requests_per_day": _per_day(rq["ts_ms"].to_list()),
        })
    return sorted(out, key=lambda m: (-m["requests"], m["model"]))


def _per_day(ts_ms: list[int]) -> dict[str, int]:
    """Requests per local date (``2026-11-17``), days without any left out."""
    out: dict[str, int] = {}
    for ts in sorted(ts_ms):
        day = local_date(ts).isoformat()
        out[day] = out.get(day, 0) + 1
    return out


def llm_sessions(conn, archive_dir, sel: Selection, own_host: str | None) -> list[dict] | None:
    """Per host and model: loads in the range, time loaded, VRAM (from ``/api/ps``)."""
    import polars as pl

    rows = _history(conn, archive_dir, "llm_sessions", since_ms=None, until_ms=sel.until_ms,
                    hosts=sel.hosts, own_host=own_host)
    if rows is None:
        return None
    end = pl.coalesce("unloaded_at_ms", "last_seen_ms")
    rows = rows.filter(end >= sel.since_ms).with_columns(
        loaded=(pl.min_horizontal(end, pl.lit(sel.until_ms))
                - pl.max_horizontal("loaded_at_ms", pl.lit(sel.since_ms))).clip(lower_bound=0),
        new=pl.col("loaded_at_ms") >= sel.since_ms,
    )
    per = rows.group_by("host", "model").agg(
        pl.col("new").sum().alias("loads"), pl.col("loaded").sum(),
        pl.col("size_vram_bytes").max(), pl.col("size_bytes").max(),
    ).sort("host", "model")
    return [{
        "host": r["host"], "model": r["model"], "loads": r["loads"], "loaded_seconds": _r(r["loaded"] / 1000),
        "vram_max_bytes": r["size_vram_bytes"], "size_bytes": r["size_bytes"],
    } for r in per.iter_rows(named=True)]
