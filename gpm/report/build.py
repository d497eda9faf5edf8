"""The rollup's minute rows -> the ``Report`` (figures in machine units).

Pure functions over Polars frames; nothing here reads a database or prints.
Definitions (also in docs/report.md):

- before the first sample: the part of the range before a host's first
  sample ever (``gpus.first_seen_ms``) is neither a gap nor in the coverage.
- sampled time: the sum of the intervals between consecutive samples that are
  not gaps; a gap is an interval longer than ``gap_ms`` (60 s, or 5 times the
  usual sampling interval when that is longer): the sampler was not running.
- busy time: sampled time of each minute times the share of its samples whose
  utilization is above the busy threshold. Throttled time likewise, per reason.
- energy: from the driver's energy counter, the sum of its positive steps per
  GPU (counted across gaps too, since the counter keeps counting while
  nobody samples; a reset after a driver reload is skipped). Only a GPU
  without a counter falls back to integrated power (each sample's power times
  the interval ending at it), and then only over intervals that are not gaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpm.report.hourly import MAX_HOURLY_DAYS, hour_starts, hourly
from gpm.report.rollup import MIN_GAP_SECS, SHARES, THROTTLING
from gpm.report.period import Period, day_starts, local_date

if TYPE_CHECKING:
    import polars as pl

HOST_CODE = 2**32  # gid = host code x HOST_CODE + UUID code
GAP_INTERVALS = 5  # an interval this many times the usual one is a gap (if > 60 s)
QUARTER_MS = 15 * 60_000  # the span over which the usual interval is measured

METHOD_COUNTER = "energy_counter"
METHOD_INTEGRATED = "integrated_power"


@dataclass
class Report:
    """Everything ``gpm report`` says, in machine units, with stable keys."""

    period: Period
    generated_ms: int
    busy_threshold_percent: float
    coverage: list[dict] = field(default_factory=list)  # one per host
    hosts: list[dict] = field(default_factory=list)
    fleet: dict = field(default_factory=dict)
    gpus: list[dict] = field(default_factory=list)
    days: list[dict] = field(default_factory=list)
    trend: list[dict] | None = None
    # What used the GPUs (gpm.report.usage).
    workload: list[dict] = field(default_factory=list)
    games: list[dict] = field(default_factory=list)
    llm: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    processes: dict = field(default_factory=dict)
    # Per host: category and LLM totals, for weekly_summaries (not printed).
    host_usage: dict[str, dict] = field(default_factory=dict)
    # section name -> one line saying why it is not in this report
    omitted: dict[str, str] = field(default_factory=dict)
    # host -> its first GPU sample ever (database and archive)
    first_samples: dict[str, int] = field(default_factory=dict)
    # Spans of a GPU's consecutive failed samples (gpm.report.failures)
    failures: list[dict] = field(default_factory=list)
    # Alerts per rule and GPU (gpm.report.alerts)
    alerts: list[dict] = field(default_factory=list)
    # The [report] prices (gpm.report.cost), None when none is set: no money or CO2 figure then.
    pricing: dict | None = None
    # Each GPU's local hours (gpm.report.hourly); None over long ranges
    hourly: dict | None = None

    def nothing_recorded(self) -> bool:
        """No GPU sample ever, nor any process run or LLM request in the range: a new database."""
        return not (self.first_samples or self.gpus or self.workload or self.llm or self.models)


def by_gpu(minutes: "pl.DataFrame") -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """(one row per GPU: ``gid``, host, uuid, its last index and name; the
    minute rows with the integer ``gid`` instead of the text columns).

    A year is 4.2 M minute rows: windows and group-bys over host and UUID
    strings took 18-22 s of the report; over one integer they take well
    under a second (#14.1). ``gid`` is the host's and the UUID's category
    codes side by side, so ``gid // HOST_CODE`` tells the host.
    """
    import polars as pl

    host, uuid = (pl.col(c).cast(pl.Categorical).to_physical().cast(pl.UInt64).fill_null(HOST_CODE - 1)
                  for c in ("host", "gpu_uuid"))
    frame = minutes.with_columns(gid=host * HOST_CODE + uuid)
    # Each GPU's latest minute by its row number: grouping the text columns themselves costs a second.
    latest = frame.select("gid", "minute").with_row_index("row").group_by("gid").agg(
        pl.col("row").get(pl.col("minute").arg_max()))
    gpus = frame[latest["row"]].select("gid", "host", "gpu_uuid", "gpu_index", "gpu_name")
    return gpus, frame.drop("host", "gpu_uuid", "gpu_index", "gpu_name")


# per_gpu_span's figures, summed or taken the largest of when spans are combined.
SUMMED = ["samples", "sampled_ms", *[f"{name}_ms" for name, _, _ in SHARES], "util_n", "util_sum", "temp_n",
          "temp_sum", "power_n", "power_sum_mw", "energy_n", "counter_j", "counter_n", "integrated_j",
          "integrated_n"]
MAXED = ["temp_max", "mem_max", "mem_total"]


def per_gpu_span(minutes: "pl.DataFrame", gap_ms: int, starts: list[int]) -> "pl.DataFrame":
    """One row per GPU (``gid``) and span (``span``, an index into ``starts``,
    local days or hours; a minute counts in the span of its first sample):
    sampled, busy and throttled time, energy both ways and the sums of each
    minute's figures, with the interval that leads into each minute from the
    GPU's previous one.

    The per-minute figures are only ever summed: computed inside the
    group-by, they never become columns of a year's 4.2 M minutes (each
    was a fresh 34 MB; with the quarter-hour group-by below, ~2 GB of page
    faults made a year's report as slow in the kernel as in Polars, #14).
    """
    import polars as pl

    # Each GPU's previous minute, once (every figure below uses it).
    lf = minutes.lazy().with_columns(
        _prev_last=pl.col("last_ts_ms").shift(1).over("gid", order_by="minute"),
        _prev_e=pl.col("energy_last_mj").forward_fill().shift(1).over("gid", order_by="minute"),
    )
    incoming = pl.col("first_ts_ms") - pl.col("_prev_last")
    ok_in = pl.when(incoming <= gap_ms).then(incoming).otherwise(0)
    span = pl.col("last_ts_ms") - pl.col("first_ts_ms")
    sampled = span + ok_in
    step_in = (pl.col("energy_first_mj") - pl.col("_prev_e")).clip(lower_bound=0).fill_null(0)
    # Integrated power (rectangle rule, the interval ending at each sample):
    # mW x ms = uJ. Inside a minute the interval is its mean spacing.
    within_power = pl.when(pl.col("power_n") > 1).then(
        (pl.col("power_sum_mw") - pl.col("power_first_mw").fill_null(0)) * span / (pl.col("n") - 1)
    ).otherwise(0)
    incoming_power = pl.col("power_first_mw").fill_null(0) * ok_in
    counter = pl.when(pl.col("energy_n") > 0).then((pl.col("energy_within_mj").fill_null(0) + step_in) / 1000.0)
    integrated = (within_power + incoming_power) / 1e6

    def share(num: str, den: str) -> "pl.Expr":
        return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den)).otherwise(0.0)

    span = pl.lit(pl.Series(starts, dtype=pl.Int64)).search_sorted(pl.col("first_ts_ms"), side="right") - 1
    return lf.group_by("gid", span.cast(pl.Int64).alias("span")).agg(
        pl.col("n").sum().alias("samples"),
        pl.col("first_ts_ms").min(), pl.col("last_ts_ms").max(),
        sampled.sum().alias("sampled_ms"),
        *[(sampled * share(num, den)).sum().alias(f"{name}_ms") for name, num, den in SHARES],
        pl.col("util_n", "util_sum", "temp_n", "temp_sum", "power_n", "power_sum_mw", "energy_n").sum(),
        pl.col(MAXED).max(),
        counter.sum().alias("counter_j"), counter.count().alias("counter_n"),
        integrated.sum().alias("integrated_j"), integrated.count().alias("integrated_n"),
    ).collect()


def combined(per_span: "pl.DataFrame", *keys: str) -> "pl.DataFrame":
    """``per_gpu_span``'s rows combined by ``keys``."""
    import polars as pl

    return per_span.group_by(*keys).agg(pl.col(SUMMED).sum(), pl.col("first_ts_ms").min(),
                                        pl.col("last_ts_ms").max(), pl.col(MAXED).max())


def in_spans(per_span: "pl.DataFrame", span_starts: list[int], starts: list[int]) -> "pl.DataFrame":
    """``per_gpu_span``'s rows over finer spans (hours) summed into the coarser
    spans that hold them (the local days the hours were counted from)."""
    import polars as pl

    outer = pl.Series(starts, dtype=pl.Int64).search_sorted(pl.Series(span_starts, dtype=pl.Int64), side="right") - 1
    spans = pl.DataFrame({"span": range(len(span_starts)), "outer": outer}, schema={"span": pl.Int64, "outer": pl.Int64})
    return combined(per_span.join(spans, on="span", how="left").with_columns(pl.col("outer").fill_null(-1))
                    .drop("span").rename({"outer": "span"}), "gid", "span")


def gap_ms_for(minutes: "pl.DataFrame") -> int:
    """The gap threshold: 60 s, or 5 usual sampling intervals when sampling is
    slower. The usual interval is the median over each GPU's quarter hours
    of their mean interval (a quarter, not a minute: a sampler slower than
    once a minute has one sample per minute).

    A quarter's mean interval counts the interval that leads into it from
    the GPU's previous sample (unless that one is longer than a quarter
    hour: a sampler stopped, not a slow one). Without it, a quarter that
    holds two runs of `gpm sample -n 3` from cron is 5 intervals long, and
    the threshold was the cron spacing itself: every run that started a
    moment later than the one before, as runs do on a busy machine, was
    reported as a gap. With it, each quarter says the rate the runs
    keep, spacing / 3 here, wherever the quarter's edges fall. Only the
    columns it needs enter the group-by: over the whole minute frame it
    page-faulted a gigabyte for a year (#14).
    """
    import polars as pl

    prev_last = pl.col("last_ts_ms").shift(1).over("gid", order_by="minute")
    incoming = pl.col("first_ts_ms") - prev_last
    leads_in = incoming.is_not_null() & (incoming <= QUARTER_MS)
    per = minutes.select("gid", "minute", "n", "first_ts_ms", "last_ts_ms").with_columns(
        _span=pl.col("last_ts_ms") - pl.col("first_ts_ms") + pl.when(leads_in).then(incoming).otherwise(0),
        _intervals=pl.col("n") - 1 + leads_in.cast(pl.Int64),
    ).group_by("gid", pl.col("minute") // 15).agg(pl.col("_span").sum(), pl.col("_intervals").sum())
    usual = per.filter(pl.col("_intervals") > 0).select((pl.col("_span") / pl.col("_intervals")).median()).item()
    return int(max(MIN_GAP_SECS * 1000, (usual or 0) * GAP_INTERVALS))


def _p95(hist: "pl.DataFrame") -> dict[tuple[str, str], int]:
    """Nearest-rank 95th percentile of each GPU's utilization histogram."""
    import polars as pl

    out = {}
    if hist.is_empty():
        return out
    ranked = hist.sort("host", "gpu_uuid", "util").with_columns(
        cum=pl.col("n").cum_sum().over("host", "gpu_uuid"),
        total=pl.col("n").sum().over("host", "gpu_uuid"),
    )
    for row in ranked.filter(pl.col("cum") >= (pl.col("total") * 0.95).ceil()).group_by(
        "host", "gpu_uuid"
    ).agg(pl.col("util").min()).iter_rows():
        out[(row[0], row[1])] = row[2]
    return out


def _div(num: float | None, den: float | None) -> float | None:
    return None if not den or num is None else num / den


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


def gpu_figures(per_day: "pl.DataFrame", hist: "pl.DataFrame", gpus: "pl.DataFrame") -> list[dict]:
    """Each GPU's figures over the range, from ``per_gpu_span``."""
    p95 = _p95(hist)
    per = combined(per_day, "gid")
    out = []
    for r in per.join(gpus, on="gid").sort("host", "gpu_index", "gpu_uuid").iter_rows(named=True):
        if r["energy_n"]:
            method, energy = METHOD_COUNTER, r["counter_j"]
        elif r["power_n"]:
            method, energy = METHOD_INTEGRATED, r["integrated_j"]
        else:
            method, energy = None, None
        out.append({
            "host": r["host"],
            "gpu_index": r["gpu_index"],
            "gpu_uuid": r["gpu_uuid"],
            "gpu_name": r["gpu_name"],
            "samples": r["samples"],
            "first_sample_ms": r["first_ts_ms"],
            "last_sample_ms": r["last_ts_ms"],
            "sampled_seconds": _r(r["sampled_ms"] / 1000),
            "busy_seconds": _r(r["busy_ms"] / 1000),
            "utilization_mean_percent": _r(_div(r["util_sum"], r["util_n"]), 2),
            "utilization_p95_percent": p95.get((r["host"], r["gpu_uuid"])),
            "temperature_mean_celsius": _r(_div(r["temp_sum"], r["temp_n"]), 2),
            "temperature_max_celsius": r["temp_max"],
            "memory_peak_bytes": r["mem_max"],
            "memory_total_bytes": r["mem_total"],
            "power_mean_watts": _r(r["power_sum_mw"] / r["power_n"] / 1000) if r["power_n"] else None,
            "energy_joules": _r(energy),
            "energy_method": method,
            "throttled_seconds": _r(r["thr_any_ms"] / 1000),
            "throttle_reasons_seconds": {name: _r(r[f"thr_{name}_ms"] / 1000) for name in THROTTLING},
        })
    return out


def host_coverage(frame: "pl.DataFrame", gpus: "pl.DataFrame", period: Period, gap_ms: int, hosts: list[str],
                  first_samples: dict[str, int] | None = None) -> list[dict]:
    """Per host: the span sampled and every gap (the sampler was not running).

    The range before the host's first sample ever (``first_samples``) is
    not a gap: gpm was not installed yet; coverage is of the rest (#13.2).

    Each row (a GPU's minute) is an interval sampled without a gap, so the host's gaps are the holes longer than the
    threshold between the union of its rows' intervals: sorted by start, a
    hole is a row's first sample less the latest end before it.
    """
    import polars as pl

    names = dict(gpus.select(pl.col("gid") // HOST_CODE, "host").unique().iter_rows())
    spans = frame.select((pl.col("gid") // HOST_CODE).alias("hid"), "first_ts_ms", "last_ts_ms").sort(
        "first_ts_ms").with_columns(
        prev_end=pl.col("last_ts_ms").cum_max().shift(1).over("hid"))
    holes = spans.filter(pl.col("first_ts_ms") - pl.col("prev_end") > gap_ms).with_columns(
        host=pl.col("hid").replace_strict(names, return_dtype=pl.String))
    bounds = {names[r[0]]: r[1:] for r in spans.group_by("hid").agg(
        pl.col("first_ts_ms").min(), pl.col("last_ts_ms").max()).iter_rows()}
    out = []
    for host in hosts:
        gaps: list[dict] = []
        start = min(max(period.since_ms, (first_samples or {}).get(host, period.since_ms)), period.until_ms)
        if host not in bounds:
            if start < period.until_ms:
                gaps.append(_gap(start, period.until_ms))
            first = last = None
            sampled = 0.0
        else:
            first, last = bounds[host]
            start = min(start, first)
            if first - start > gap_ms:
                gaps.append(_gap(start, first))
            inner = [_gap(start, end) for start, end in
                     holes.filter(pl.col("host") == host).select("prev_end", "first_ts_ms").iter_rows()]
            gaps.extend(inner)
            sampled = (last - first - sum(g["end_ms"] - g["start_ms"] for g in inner)) / 1000
            if period.until_ms - last > gap_ms:
                gaps.append(_gap(last, period.until_ms))
        out.append({
            "host": host,
            "range_seconds": _r(period.seconds),
            "first_sample_ms": first,
            "last_sample_ms": last,
            "before_first_sample_seconds": _r((start - period.since_ms) / 1000),
            "sampled_seconds": _r(sampled),
            "coverage_ratio": _r(sampled / ((period.until_ms - start) / 1000), 4) if period.until_ms > start else None,
            "gap_seconds": _r(sum(gap["seconds"] for gap in gaps)),
            "gaps": gaps,
        })
    return out


def _gap(start_ms: int, end_ms: int) -> dict:
    return {"start_ms": start_ms, "end_ms": end_ms, "seconds": _r((end_ms - start_ms) / 1000)}


def daily(per_day: "pl.DataFrame", period: Period, energy_methods: dict[int, str | None]) -> list[dict]:
    """One row per local day, from ``per_gpu_span`` over days: sampled time, mean
    utilization, energy (each GPU by its method)."""
    import polars as pl

    starts = day_starts(period.since_ms, period.until_ms)
    if not starts:
        return []
    method = pl.DataFrame(list(energy_methods.items()), schema={"gid": pl.UInt64, "method": pl.String}, orient="row")
    frame = per_day.join(method, on="gid", how="left").with_columns(
        energy_j=pl.when(pl.col("method") == METHOD_COUNTER).then(pl.col("counter_j"))
        .when(pl.col("method") == METHOD_INTEGRATED).then(pl.col("integrated_j")),
        energy_n=pl.when(pl.col("method") == METHOD_COUNTER).then(pl.col("counter_n"))
        .when(pl.col("method") == METHOD_INTEGRATED).then(pl.col("integrated_n")).otherwise(0),
    )
    per_day = {
        r["span"]: r for r in frame.group_by("span").agg(
            pl.col("sampled_ms", "util_sum", "util_n", "busy_ms", "energy_j", "energy_n").sum(),
        ).iter_rows(named=True)
    }
    out = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else None
        r = per_day.get(i)
        out.append({
            "date": local_date(start).isoformat(),
            "start_ms": max(start, period.since_ms),
            "end_ms": min(end, period.until_ms) if end else period.until_ms,
            "sampled_seconds": _r(r["sampled_ms"] / 1000) if r else 0.0,
            "busy_seconds": _r(r["busy_ms"] / 1000) if r else 0.0,
            "utilization_mean_percent": _r(_div(r["util_sum"], r["util_n"]), 2) if r else None,
            "energy_joules": _r(r["energy_j"]) if r and r["energy_n"] else None,
            "category_energy_joules": {},  # filled by gpm.report.make from process runs
        })
    return out


def hosts_and_fleet(gpus: list[dict], coverage: list[dict]) -> tuple[list[dict], dict]:
    cov = {c["host"]: c for c in coverage}
    hosts = []
    for host in cov:
        mine = [g for g in gpus if g["host"] == host]
        hosts.append(_totals(mine, {"host": host, "sampled_seconds": cov[host]["sampled_seconds"],
                                    "coverage_ratio": cov[host]["coverage_ratio"]}))
    return hosts, _totals(gpus, {"hosts": len(hosts)})


def _totals(gpus: list[dict], base: dict) -> dict:
    energies = [g["energy_joules"] for g in gpus if g["energy_joules"] is not None]
    util_num = sum((g["utilization_mean_percent"] or 0) * g["sampled_seconds"] for g in gpus)
    util_den = sum(g["sampled_seconds"] for g in gpus if g["utilization_mean_percent"] is not None)
    methods = sorted({g["energy_method"] for g in gpus if g["energy_method"]})
    return {
        **base,
        "gpus": len(gpus),
        "gpu_sampled_seconds": _r(sum(g["sampled_seconds"] for g in gpus)),
        "busy_seconds": _r(sum(g["busy_seconds"] for g in gpus)),
        "utilization_mean_percent": _r(_div(util_num, util_den), 2),
        "energy_joules": _r(sum(energies)) if energies else None,
        "energy_methods": methods,
        "throttled_seconds": _r(sum(g["throttled_seconds"] for g in gpus)),
    }


def build_gpu_report(minutes: "pl.DataFrame", hist: "pl.DataFrame", period: Period, *,
                     busy_threshold: float, generated_ms: int, hosts: list[str] | None = None,
                     first_samples: dict[str, int] | None = None) -> Report:
    """The GPU sections of the report (coverage, hosts, per GPU, per day), from minute rows."""
    report = Report(period=period, generated_ms=generated_ms, busy_threshold_percent=busy_threshold,
                    first_samples=dict(first_samples or {}))
    host_names = sorted(set(hosts or []) | set(minutes["host"].unique().to_list()))
    gpus, minutes = by_gpu(minutes)
    if minutes.is_empty():
        report.coverage = host_coverage(minutes, gpus, period, 60_000, host_names, first_samples)
        report.hosts, report.fleet = hosts_and_fleet([], report.coverage)
        return report
    gap_ms = gap_ms_for(minutes)
    days = day_starts(period.since_ms, period.until_ms)
    hours = hour_starts(period) if period.seconds <= MAX_HOURLY_DAYS * 86_400 else None
    if hours is not None:  # the html page's hours, and the days summed from them
        per_hour = per_gpu_span(minutes, gap_ms, hours)
        per_day = in_spans(per_hour, hours, days)
    else:
        per_hour, per_day = None, per_gpu_span(minutes, gap_ms, days)
    report.gpus = gpu_figures(per_day, hist, gpus)
    report.coverage = host_coverage(minutes, gpus, period, gap_ms, host_names, first_samples)
    report.hosts, report.fleet = hosts_and_fleet(report.gpus, report.coverage)
    gid = {(host, uuid): i for host, uuid, i in gpus.select("host", "gpu_uuid", "gid").iter_rows()}
    report.days = daily(per_day, period, {gid[(g["host"], g["gpu_uuid"])]: g["energy_method"] for g in report.gpus})
    report.hourly = hourly(per_hour, gid, report.gpus, period) if per_hour is not None else None
    return report
