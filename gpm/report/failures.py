"""GPU failures: each span of a GPU's consecutive failed samples (#13.2).

A lost GPU is recorded as rows with a ``status`` and no readings; the
figures skip them, so without this the report never said a GPU was gone.
A span starts at a failed sample and ends at the GPU's next ok sample
(``until_ms``), or runs to the end of the range (``until_ms`` None).
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_left
from itertools import groupby

from gpm.report.rollup import Selection
from gpm.store.samples import failed_samples, next_ok_sample


def failure_spans(conn: sqlite3.Connection | None, sel: Selection) -> list[dict]:
    """The spans in the range, by host, GPU index and time. One query finds the failed
    rows (a partial index), then one indexed lookup per span finds where it ended."""
    if conn is None or not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'gpu_metrics'").fetchone():
        return []
    out = []
    rows = failed_samples(conn, sel.since_ms, sel.until_ms, sel.hosts)
    for gpu_id, group in groupby(rows, key=lambda r: r[0]):
        group = list(group)
        _, host, index, uuid, name, _, _ = group[0]
        named = not uuid.startswith("index:")
        if not sel.gpu_matches(uuid if named else None, index):
            continue
        times = [r[5] for r in group]
        i = 0
        while i < len(times):
            back = next_ok_sample(conn, gpu_id, times[i], sel.until_ms)
            end = len(times) if back is None else bisect_left(times, back, i)
            out.append({"host": host, "gpu_index": index, "gpu_uuid": uuid if named else None,
                        "gpu_name": name if named else None, "status": group[i][6],
                        "since_ms": times[i], "until_ms": back, "samples": end - i})
            i = end
    return sorted(out, key=lambda f: (f["host"], f["gpu_index"], f["since_ms"]))
