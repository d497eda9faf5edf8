"""Quarter-hour partials: a year of GPU-minutes (4.2 million rows for 8 GPUs)
read and reduced as 15 times fewer rows, every figure unchanged.

A quarter row sums a GPU's minute rows of one quarter hour (15 minutes: every
time zone's offset is a multiple of it, so a quarter never crosses a local
midnight and the per-day figures stay exact). What the report derives from
minutes inside the quarter is folded in with the same formulas
(``gpm.report.build``): the sampled time of each minute is its span plus the
interval leading into it, busy and throttled time are that times the
minute's share of busy or throttled samples, integrated power and the energy
counter's steps likewise. This is exact as long as no interval between two
of the quarter's minutes is a gap, which depends on the gap threshold known
only when the whole range is read: so each quarter keeps its longest such
interval (``max_step_ms``), and a quarter whose longest interval is over the
threshold is replaced by its minute rows, kept beside it for that case. The
minutes are kept only for quarters with an interval over 60 s (the least
threshold): a sampler that runs steadily needs none.

A quarter whose counter readings come and go (some samples with energy, some
without) keeps its minutes too and is never used (``IRREGULAR``): the minute
rule for such readings looks back across quarters.

Reduced days are stored beside the raw Parquet (``write_day``; `gpm archive`
does it for every day it moves) and in the report's day cache for archives
that have none, one folder per host and UTC day: ``partials.pq``
(quarter rows and the minutes they may need), ``hist.pq`` (utilization
histogram) and ``sources.json`` (the part files reduced, by name and size,
and the busy threshold), written last: a reduction is used only while it
names exactly the day's files.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from gpm.report.partials import (BUCKET_MS, MIN_GAP_SECS, SHARES, SUM_COLUMNS, Selection, lazy_partials,
                                 normalize)

if TYPE_CHECKING:
    import polars as pl

QUARTER_MINUTES = 15
QUARTER_MS = QUARTER_MINUTES * BUCKET_MS
IRREGULAR = 2**62  # max_step_ms of a quarter that must always be read as minutes
KEEP_MINUTES_ABOVE_MS = int(MIN_GAP_SECS * 1000)
REDUCTIONS_DIR = "gpu_reductions"
# Parquet, but not named *.parquet: in the archive that means a part file of the manifest.
FILES = {"partials": "partials.pq", "hist": "hist.pq"}
FORMAT_VERSION = 1


def quarter_of(minute: "pl.Expr") -> "pl.Expr":
    return minute // QUARTER_MINUTES * QUARTER_MINUTES


def coarsen(minutes: "pl.DataFrame") -> "pl.DataFrame":
    """Minute partials (sorted by host, GPU, minute) -> one quarter row per GPU and quarter."""
    import polars as pl

    if minutes.is_empty():
        return normalize(minutes)
    g = ["host", "gpu_uuid"]
    q = quarter_of(pl.col("minute"))
    same_q = (q == q.shift(1)).over(g).fill_null(False)
    inner_in = pl.when(same_q).then(pl.col("first_ts_ms") - pl.col("last_ts_ms").shift(1).over(g)).otherwise(0)
    span = pl.col("last_ts_ms") - pl.col("first_ts_ms")
    sampled = span + inner_in

    def share(num: str, den: str) -> "pl.Expr":
        return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den)).otherwise(0.0)

    within_power = pl.when(pl.col("power_n") > 1).then(
        (pl.col("power_sum_mw") - pl.col("power_first_mw").fill_null(0)) * span / (pl.col("n") - 1)
    ).otherwise(0)
    prev_e = pl.col("energy_last_mj").forward_fill().shift(1).over(g)
    step_in = pl.when(same_q).then((pl.col("energy_first_mj") - prev_e).clip(lower_bound=0).fill_null(0)).otherwise(0)
    frame = minutes.with_columns(
        _q=q,
        _sampled=sampled, _inner_in=pl.when(same_q).then(inner_in),
        _power=within_power + pl.col("power_first_mw").fill_null(0) * inner_in,
        _energy=pl.when(pl.col("energy_n") > 0).then(pl.col("energy_within_mj").fill_null(0) + step_in),
        _regular=(pl.col("energy_n") == pl.col("n")) | (pl.col("energy_n") == 0),
        **{f"_{name}": sampled * share(num, den) for name, num, den in SHARES},
    )
    first_counts = sorted({c for _, num, den in SHARES for c in (num, den)})
    regular = pl.col("_regular").all() & ((pl.col("energy_n") == 0).all() | (pl.col("energy_n") > 0).all())
    quarters = frame.group_by(*g, "_q", maintain_order=True).agg(
        pl.col("gpu_index", "gpu_name").last(),
        pl.col("first_ts_ms").min(), pl.col("last_ts_ms").max(),
        *[pl.col(c).sum() for c in SUM_COLUMNS if c != "energy_within_mj"],
        pl.col("temp_max", "mem_max", "mem_total").max(),
        pl.col("power_first_mw", "energy_first_mj").first(),
        pl.col("energy_last_mj").drop_nulls().last(),
        pl.when(pl.col("energy_n").sum() > 0).then(pl.col("_energy").sum()).alias("energy_within_mj"),
        pl.when(regular).then(pl.col("_inner_in").max().fill_null(0)).otherwise(IRREGULAR).alias("max_step_ms"),
        *[pl.col(f"_{name}").sum().alias(f"{name}_within_ms") for name, _, _ in SHARES],
        pl.col("_power").sum().cast(pl.Float64).alias("power_within_uj"),
        *[pl.col(c).first().alias(f"in_{c}") for c in first_counts],
    ).with_columns(minute=pl.col("_q"), span_minutes=pl.lit(QUARTER_MINUTES))
    return normalize(quarters)


def reduce_minutes(minutes: "pl.DataFrame") -> "pl.DataFrame":
    """What is stored for a day: every quarter, plus the minutes of quarters that may need them."""
    import polars as pl

    quarters = coarsen(minutes)
    keep = quarters.filter(pl.col("max_step_ms") > KEEP_MINUTES_ABOVE_MS).select("host", "gpu_uuid", "minute")
    alt = minutes.with_columns(_q=quarter_of(pl.col("minute"))).join(
        keep.rename({"minute": "_q"}), on=["host", "gpu_uuid", "_q"], how="semi").drop("_q")
    return pl.concat([quarters, normalize(alt)]).sort("host", "gpu_uuid", "minute", "span_minutes")


def gap_ms_for(frame: "pl.DataFrame") -> int:
    """The gap threshold: 60 s, or 5 usual sampling intervals when sampling is
    slower. The usual interval is the median over each GPU's quarter hours of
    their mean interval, the same from quarter rows as from minute rows."""
    import polars as pl

    from gpm.report.build import GAP_INTERVALS

    per = frame.filter(pl.col("span_minutes") == QUARTER_MINUTES).select("n", "first_ts_ms", "last_ts_ms")
    minutes = frame.filter(pl.col("span_minutes") == 1)
    if not minutes.is_empty():
        per = pl.concat([per, minutes.group_by("host", "gpu_uuid", quarter_of(pl.col("minute"))).agg(
            pl.col("n").sum(), pl.col("first_ts_ms").min(), pl.col("last_ts_ms").max(),
        ).select("n", "first_ts_ms", "last_ts_ms")])
    usual = per.filter(pl.col("n") > 1).select(
        ((pl.col("last_ts_ms") - pl.col("first_ts_ms")) / (pl.col("n") - 1)).median()).item()
    return int(max(MIN_GAP_SECS * 1000, (usual or 0) * GAP_INTERVALS))


def resolve(plain: "pl.DataFrame", reduced: "pl.DataFrame") -> tuple["pl.DataFrame", int]:
    """(partials, gap threshold) from plain minute rows and reduced rows (quarters
    with their spare minutes): each quarter whose longest interval is not a gap
    is used, the others are replaced by their minutes."""
    import polars as pl

    quarters = reduced.filter(pl.col("span_minutes") == QUARTER_MINUTES)
    gap_ms = gap_ms_for(pl.concat([plain, quarters]))
    if reduced.is_empty():
        return plain, gap_ms
    clean = pl.col("max_step_ms") <= gap_ms
    broken = quarters.filter(~clean).select("host", "gpu_uuid", _q="minute")
    spare = reduced.filter(pl.col("span_minutes") == 1).with_columns(_q=quarter_of(pl.col("minute")))
    used = spare.join(broken, on=["host", "gpu_uuid", "_q"], how="semi").drop("_q")
    return pl.concat([plain, quarters.filter(clean), used]).sort("host", "gpu_uuid", "minute"), gap_ms


def usable_quarters(lo: int, hi: int, local_day_starts: list[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """[lo, hi) as (spans of whole quarters a reduction may give, spans to read raw).

    Raw: the parts of quarters cut by the range's ends, and a quarter that a
    local midnight cuts (a time zone with an offset that is no multiple of
    15 minutes: none today, some historical ones).
    """
    q_lo = -(-lo // QUARTER_MS) * QUARTER_MS
    q_hi = hi // QUARTER_MS * QUARTER_MS
    raw: list[tuple[int, int]] = []
    if q_lo >= q_hi:
        return [], [(lo, hi)]
    if lo < q_lo:
        raw.append((lo, q_lo))
    whole, cursor = [], q_lo
    for d in local_day_starts:
        if q_lo < d < q_hi and d % QUARTER_MS:
            cut = d // QUARTER_MS * QUARTER_MS
            if cut > cursor:
                whole.append((cursor, cut))
            raw.append((cut, cut + QUARTER_MS))
            cursor = cut + QUARTER_MS
    if cursor < q_hi:
        whole.append((cursor, q_hi))
    if q_hi < hi:
        raw.append((q_hi, hi))
    return whole, raw


def drop_cut_quarters(frame: "pl.DataFrame", sel: Selection) -> "pl.DataFrame":
    """Reduced rows less the quarters a local midnight cuts (read raw instead, see ``usable_quarters``)."""
    import polars as pl

    from gpm.report.period import day_starts

    cut = [d // QUARTER_MS * QUARTER_MINUTES for d in day_starts(sel.since_ms, sel.until_ms) if d % QUARTER_MS]
    if not cut or frame.is_empty():
        return frame
    return frame.filter(~quarter_of(pl.col("minute")).is_in(cut))


# --------------------------------------------------------------------------- stored days


def day_sources(files: list[Path]) -> list[list]:
    return sorted([f.name, f.stat().st_size] for f in files)


def reduce_files(files: list[Path], day_ms: int, busy_threshold: float) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """(reduced partials, histogram) of one host's part files of one UTC day."""
    from gpm.store.history import scan_files
    from gpm.store.timeseries import DAY_MS

    minutes, hist = lazy_partials(scan_files("gpu_metrics", [str(f) for f in files]),
                                  Selection(day_ms, day_ms + DAY_MS), busy_threshold)
    return reduce_minutes(minutes), hist


def read_sources(folder: Path) -> dict | None:
    """A stored reduction's record, None unless it and both its files are there."""
    try:
        meta = json.loads((folder / "sources.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if all((folder / name).is_file() for name in FILES.values()) else None


def matches(meta: dict | None, sources: list[list], busy_threshold: float) -> bool:
    return bool(meta) and meta.get("version") == FORMAT_VERSION and meta.get("files") == sources \
        and meta.get("busy_threshold_percent") == busy_threshold


def write_day(folder: Path, partials: "pl.DataFrame", hist: "pl.DataFrame", sources: list[list],
              busy_threshold: float, *, root: Path, durable: bool) -> None:
    """Store a reduced day; ``sources.json`` last (its presence, naming the files, marks a whole entry)."""
    from gpm.store.archive import fsync_dir, write_durably

    meta = json.dumps({"version": FORMAT_VERSION, "busy_threshold_percent": busy_threshold, "files": sources})
    if durable:
        (folder / "sources.json").unlink(missing_ok=True)
        write_durably(partials, folder / FILES["partials"], root=root)
        write_durably(hist, folder / FILES["hist"], root=root)
        tmp = folder / ".sources.json.tmp"
        with open(tmp, "w") as fh:
            fh.write(meta)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, folder / "sources.json")
        fsync_dir(folder)
        return
    from gpm.paths import ensure_private_dir

    ensure_private_dir(folder)
    (folder / "sources.json").unlink(missing_ok=True)
    for name, frame in (("partials", partials), ("hist", hist)):
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        frame.write_parquet(tmp)
        os.replace(tmp, folder / FILES[name])
    tmp = folder / f".sources.{os.getpid()}.tmp"
    tmp.write_text(meta)
    os.replace(tmp, folder / "sources.json")


def read_days(folders: list[Path]) -> tuple["pl.DataFrame", "pl.DataFrame"]:
    """The stored reductions of many days, each kind of file read in one scan."""
    import polars as pl

    if not folders:
        from gpm.report.partials import empty_histogram, empty_partials

        return empty_partials(), empty_histogram()
    partials, hist = pl.collect_all([
        pl.scan_parquet([str(f / FILES["partials"]) for f in folders]),
        pl.scan_parquet([str(f / FILES["hist"]) for f in folders]),
    ])
    return partials, hist


def reduction_folder(archive_dir: Path, host_folder: str, day_folder: str) -> Path:
    return Path(archive_dir) / REDUCTIONS_DIR / host_folder / day_folder


BACKFILL_DAYS = 31  # days archived earlier (or by a killed run) reduced per `gpm archive` run


def reduce_archived_days(conn, archive_dir: Path, busy_threshold: float, *, created_since_ms: int,
                         backfill_days: int = BACKFILL_DAYS) -> int:
    """Store the reduction of every (host, UTC day) of ``gpu_metrics`` that got
    a part file since ``created_since_ms`` (`gpm archive` calls it after moving
    rows), and of up to ``backfill_days`` more archived days without a current
    one (newest first: archives from before reductions, a run killed while
    writing one); return how many days were reduced. A reduction names the
    day's part files in the manifest, so it is used only while they are
    exactly those."""
    from gpm.store.archive import host_dir

    root = Path(archive_dir)
    days: dict[tuple[str, str], list[Path]] = {}
    fresh: set[tuple[str, str]] = set()
    for host, day, path, created in conn.execute(
            "SELECT host, day, path, created_ms FROM archive_files WHERE table_name = 'gpu_metrics'"):
        days.setdefault((host, day), []).append(root / path)
        if created >= created_since_ms:
            fresh.add((host, day))
    for host in {h for h, _ in days}:
        for tmp in (root / REDUCTIONS_DIR / host_dir(host)).glob("date=*/.*.tmp"):
            tmp.unlink(missing_ok=True)  # left by a run killed while writing
    done = backfilled = 0
    for (host, day), files in sorted(days.items(), key=lambda kv: kv[0][1], reverse=True):
        if (host, day) not in fresh and backfilled >= backfill_days:
            continue
        folder = reduction_folder(root, host_dir(host), f"date={day}")
        try:
            sources = day_sources(files)
        except OSError:
            continue  # a listed file that is gone: `gpm archive` reports it
        if matches(read_sources(folder), sources, busy_threshold):
            continue
        start = int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp() * 1000)
        partials, hist = reduce_files(files, start, busy_threshold)
        write_day(folder, partials, hist, sources, busy_threshold, root=root, durable=True)
        done += 1
        backfilled += (host, day) not in fresh
    return done
