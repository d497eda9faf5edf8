"""What each rule looks at: observations made from a sample, the disks, the gaps.

Pure functions over samples (``gpu_observations``) and small readers of
the machine (``disk_observations``: one statvfs per folder), plus
``stall_observations`` and ``missing_gpus``, which look at what this
host stored before. ``gpm.alerts.sampled`` puts them together after each
stored sample.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from gpm.alerts.engine import Observation
from gpm.alerts.event import iso
from gpm.gpu.sample import GpuSample, throttle_mask, throttle_names
from gpm.humanize import fmt_bytes, fmt_duration, visible
from gpm.store.alerts import known_gpus, load_states, sample_times
from gpm.store.samples import gpu_key

# At least this many gaps between earlier samples say what a cron run's interval is.
MIN_GAPS_FOR_TYPICAL = 3
TYPICAL_GAPS = 10
# A host silent for longer was switched off (a machine put away, a cron line
# removed, a database copied elsewhere), not stalled: at its next sample no
# stall is reported after the fact and no GPU is inferred missing, and a GPU
# missing that long counts as removed.
DORMANT_SECS = 86400.0


def gpu_label(index: int, name: str | None, uuid: str | None) -> str:
    """``GPU 0 (NVIDIA GeForce RTX 4090)``: the name (or UUID) made visible."""
    ident = name or uuid
    return f"GPU {index} ({visible(ident)})" if ident else f"GPU {index}"


def _percent(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return 100.0 * part / whole


def gpu_observations(samples: list[GpuSample], throttle_reasons: list[str]) -> list[Observation]:
    """temperature, memory, power, throttle, gpu_lost and ecc of every GPU in a sample.

    A reading the GPU did not give is None: its rule keeps its state (a
    failed GPU's temperature alert neither fires nor resolves).
    """
    mask = throttle_mask(throttle_reasons)
    out = []
    for s in samples:
        what = gpu_label(s.index, s.name, s.uuid)
        key = gpu_key(s)

        def obs(rule: str, value: float | None, detail: str = "") -> Observation:
            return Observation(rule, key, value, what, gpu_index=s.index, gpu_uuid=s.uuid, detail=detail)

        out.append(obs("gpu_lost", 0.0 if s.ok else 1.0, "reads again" if s.ok else visible(s.status)))
        if not s.ok:
            continue
        out.append(obs("temperature", s.temperature_celsius))
        out.append(obs("memory", _percent(s.memory_used_bytes, s.memory_total_bytes)))
        out.append(obs("power", _percent(s.power_watts, s.power_limit_watts)))
        held = None if s.throttle_reasons is None else s.throttle_reasons & mask
        out.append(obs("throttle", held, ", ".join(throttle_names(held) or [])))
        out.append(obs("ecc", s.ecc_uncorrected_errors))
    return out


def missing_gpus(conn: sqlite3.Connection, host: str, samples: list[GpuSample],
                 previous_ms: int | None, now_ms: int) -> list[Observation]:
    """``gpu_lost`` for GPUs gone from the driver's list altogether: seen in this
    host's previous sample (or already lost) and absent from this one. One not
    seen for ``DORMANT_SECS`` was removed: its alert resolves."""
    present = {gpu_key(s) for s in samples}
    lost = [key for (_rule, key) in load_states(conn, host, ["gpu_lost"]) if key not in present]
    if previous_ms is not None and now_ms - previous_ms > DORMANT_SECS * 1000:
        previous_ms = None  # switched off meanwhile: a GPU missing now was taken out then
    if previous_ms is None and not lost:
        return []
    out = []
    for key, index, name, last_seen_ms in known_gpus(conn, host, seen_since_ms=previous_ms, keys=lost):
        if key not in present:
            uuid = None if key.startswith("index:") else key
            removed = now_ms - last_seen_ms > DORMANT_SECS * 1000
            out.append(Observation("gpu_lost", key, 0.0 if removed else 1.0, gpu_label(index, name, uuid),
                                   gpu_index=index, gpu_uuid=uuid,
                                   detail="taken as removed" if removed else "missing from the driver's list"))
    return out


def disk_observations(folders: list[tuple[str, Path]]) -> list[Observation]:
    """``disk_free`` of each folder's file system (one per file system, the first
    folder naming it); a folder not made yet is measured where it would live."""
    out = []
    seen: set[int] = set()
    for what, folder in folders:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            st = os.statvfs(probe)
            device = os.stat(probe).st_dev
        except OSError:
            continue
        if device in seen or not st.f_blocks:
            continue
        seen.add(device)
        free = st.f_bavail * st.f_frsize
        out.append(Observation("disk_free", str(folder), 100.0 * st.f_bavail / st.f_blocks,
                               f"the {what} {visible(str(folder))}", subject=str(folder),
                               detail=f"{fmt_bytes(free)}"))
    return out


def typical_gap_secs(conn: sqlite3.Connection, host: str, previous_ms: int) -> float | None:
    """The median gap between this host's last samples up to ``previous_ms``:
    a cron job's interval, learnt from what it stored. None until there are
    ``MIN_GAPS_FOR_TYPICAL`` gaps."""
    times = sample_times(conn, host, previous_ms, TYPICAL_GAPS + 1)
    gaps = [a - b for a, b in zip(times, times[1:])]
    if len(gaps) < MIN_GAPS_FOR_TYPICAL:
        return None
    gaps.sort()
    middle = len(gaps) // 2
    return (gaps[middle] if len(gaps) % 2 else (gaps[middle - 1] + gaps[middle]) / 2) / 1000


def stall_observations(previous_ms: int, now_ms: int, interval_secs: float, stalled_intervals: int, *,
                       stored: bool) -> list[Observation]:
    """``sampler_stalled`` for the gap since this host's previous sample.

    ``stored``: a sample was just stored at ``now_ms``, so a stall is over:
    a gap longer than the limit (and not ``DORMANT_SECS``) is reported as a
    stall that began once the limit passed (fired, when it held for_secs, and
    resolved at once); an alert already firing resolves. Not stored (the daemon's check between
    samples): the gap so far, pending and firing while it grows.
    """
    interval_ms = interval_secs * 1000
    gap_ms = now_ms - previous_ms
    since = previous_ms + round(stalled_intervals * interval_ms)
    over = (f"no sample stored for {fmt_duration(gap_ms / 1000)} (the last at {iso(previous_ms)}), "
            f"over {stalled_intervals} × {fmt_duration(interval_secs) if interval_secs >= 1 else f'{interval_secs:g}s'}")
    stalled = Observation("sampler_stalled", "", gap_ms / interval_ms, "the sampler", detail=over, since_ms=since)
    if not stored:
        return [stalled]
    again = Observation("sampler_stalled", "", 0.0, "the sampler",
                        detail=f"a sample stored again at {iso(now_ms)} after {fmt_duration(gap_ms / 1000)}")
    seen_now = stalled_intervals * interval_ms < gap_ms <= DORMANT_SECS * 1000
    return ([stalled] if seen_now else []) + [again]


def ollama_observation(up: bool, api_url: str, error: str | None) -> Observation:
    return Observation("ollama_down", "", 0.0 if up else 1.0, f"Ollama at {visible(api_url)}",
                       detail=visible(error or "no answer"))


def xid_observations(samples: list[GpuSample], last: dict[str, tuple[int, int]], now_ms: int,
                     hold_secs: float) -> list[Observation]:
    """``xid`` per GPU: true while its last critical Xid is less than ``hold_secs``
    old. ``last`` (key -> (time, Xid)) is the caller's memory across samples."""
    out = []
    for s in samples:
        key = gpu_key(s)
        if s.xid_errors:
            last[key] = (now_ms, s.xid_errors[-1])
        if key not in last:
            continue
        at, xid = last[key]
        active = now_ms - at <= hold_secs * 1000
        if not active:
            del last[key]
        out.append(Observation("xid", key, float(xid) if active else 0.0, gpu_label(s.index, s.name, s.uuid),
                               gpu_index=s.index, gpu_uuid=s.uuid, detail=str(xid)))
    return out
