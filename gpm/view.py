"""What `gpm sample` shows on a terminal: the table, and the live view of --follow.

Both are pure functions of samples (and a width), so they are tested on data
and the command only decides when to draw. The live view (issue #13.5) is
one frame per sample, drawn in place like ``watch``: the time of the sample,
the table, and a sparkline per GPU of its utilization (0-100 %) and power
(0 to its power limit) over the last minute.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from gpm.gpu.sample import GpuSample
from gpm.humanize import Column, cut, display_width, fmt_bytes, fmt_opt, pad, short_gpu_name, table, visible

SPARKS = "▁▂▃▄▅▆▇█"
HISTORY_MS = 60_000

# `gpm sample`'s table: the name gives way before any reading does.
_COLUMNS = [Column("GPU", right=True), Column("Name", min_width=8), Column("Util", right=True),
            Column("Memory", right=True), Column("Temp", right=True), Column("Power", right=True),
            Column("Procs", right=True)]


def sample_table(samples: list[GpuSample], width: int) -> str:
    """One row per GPU: name, utilization, memory, temperature, power, processes.

    A GPU that failed shows ``FAILED`` (its reason is on stderr and in --json).
    """
    rows = []
    for s in samples:
        if not s.ok:
            rows.append([s.index, short_gpu_name(s.name), "FAILED", None, None, None, None])
            continue
        mem = f"{fmt_bytes(s.memory_used_bytes)} / {fmt_bytes(s.memory_total_bytes)}"
        power = fmt_opt(s.power_watts, "{:.0f} W")
        if s.power_limit_watts is not None and s.power_watts is not None:
            power += f" / {s.power_limit_watts:.0f} W"
        rows.append([s.index, short_gpu_name(s.name), fmt_opt(s.utilization_gpu_percent, "{}%"), mem,
                     fmt_opt(s.temperature_celsius, "{}°C"), power, len(s.processes)])
    return table(_COLUMNS, rows, width, give_way=(1,))


def sparkline(values: list[float | None], top: float | None) -> str:
    """One block per value, ``▁`` for 0 up to ``█`` for ``top`` (clamped);
    a space where the value (or the scale) is unknown."""
    out = []
    for v in values:
        if v is None or not top or top <= 0:
            out.append(" ")
            continue
        level = round(max(0.0, min(1.0, v / top)) * (len(SPARKS) - 1))
        out.append(SPARKS[level])
    return "".join(out)


@dataclass
class History:
    """The readings of the last minute, per GPU index: what the sparklines draw."""

    window_ms: int = HISTORY_MS
    points: dict[int, deque] = field(default_factory=dict)

    def add(self, samples: list[GpuSample]) -> None:
        for s in samples:
            q = self.points.setdefault(s.index, deque())
            q.append((s.ts_ms, s.utilization_gpu_percent if s.ok else None,
                      s.power_watts if s.ok else None, s.power_limit_watts))
            while q and q[0][0] <= s.ts_ms - self.window_ms:
                q.popleft()


def _history_line(head: str, points, width: int) -> str:
    """``GPU 0 RTX 4090  util ▁▃█ 37%  power ▁▂▂ 123 W``, the sparklines as long as fits."""
    utils = [p[1] for p in points]
    powers = [p[2] for p in points]
    limits = [p[3] for p in points if p[3]]
    top = limits[-1] if limits else max((p for p in powers if p is not None), default=None)
    now_util = fmt_opt(utils[-1] if utils else None, "{:.0f}%")
    now_power = fmt_opt(powers[-1] if powers else None, "{:.0f} W")
    fixed = display_width(f"{head}  util  {now_util:>4}  power  {now_power:>5}")
    room = max(0, (width - fixed) // 2)
    n = min(len(points), room)
    if n == 0:
        return cut(f"{head}  util {now_util}  power {now_power}", width)
    util_line = sparkline(utils[-n:], 100).ljust(n)
    power_line = sparkline(powers[-n:], top).ljust(n)
    return cut(f"{head}  util {util_line} {now_util:>4}  power {power_line} {now_power:>5}", width)


def frame(samples: list[GpuSample], history: History, width: int, height: int, interval: float,
          host: str = "") -> str:
    """The live view's text for one sample: at most ``width`` columns and
    ``height - 1`` lines (the cursor keeps the last line), the history cut
    first when the terminal is short."""
    ts_ms = max((s.ts_ms for s in samples), default=None)
    when = "-" if ts_ms is None else datetime.fromtimestamp(ts_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    where = f" on {visible(host)}" if host else ""
    lines = [cut(f"{when}{where}, every {interval:g}s (Ctrl-C to stop)", width)]
    lines += sample_table(samples, width).split("\n") if samples else ["no GPUs found"]
    if samples:
        lines += ["", cut("last minute: utilization 0-100%, power 0-limit", width)]
        heads = {s.index: f"GPU {s.index} {short_gpu_name(s.name, 16)}" for s in samples}
        head_width = max(display_width(h) for h in heads.values())
        lines += [_history_line(pad(heads[i], head_width), history.points[i], width)
                  for i in sorted(history.points) if i in heads]
    room = max(1, height - 1)
    if len(lines) > room:
        hidden = len(lines) - room + 1
        lines = lines[:room - 1] + [cut(f"… {hidden} more lines: make the terminal taller", width)]
    return "\n".join(lines)
