"""The live view of `gpm sample --follow` (#13.5), on data: samples in, frame text out.

The terminal side (drawing in place, Ctrl-C, piped output) runs in a real
pseudo-terminal in tests/test_width.py.
"""

from __future__ import annotations

import time

from gpm.gpu.sample import GpuSample
from gpm.humanize import display_width
from gpm.view import SPARKS, History, frame, sample_table, sparkline
from tests.test_report import utc  # noqa: F401  (autouse: TZ=UTC)

T0 = 1_764_000_000_000  # 2025-11-24 16:00:00 UTC


def gpu(index: int, ts_ms: int, util: int | None, power: float | None, *, name: str = "NVIDIA GeForce RTX 4090",
        limit: float | None = 450.0, status: str = "ok") -> GpuSample:
    return GpuSample(ts_ms, index, "nvml", status=status, name=name, utilization_gpu_percent=util,
                     power_watts=power, power_limit_watts=limit, memory_used_bytes=1 << 30,
                     memory_total_bytes=24 << 30, temperature_celsius=50)


def fed(seconds: int, every_ms: int = 1000, gpus: int = 1, **kw) -> tuple[History, list[GpuSample]]:
    """A history fed one sample of ``gpus`` GPUs every ``every_ms`` for ``seconds``;
    utilization climbs 0, 10, ... 100, 0, ...; power is twice that."""
    history, last = History(), []
    for k in range(seconds * 1000 // every_ms):
        util = (k * 10) % 110
        last = [gpu(i, T0 + k * every_ms, util, 2.0 * util, **kw) for i in range(gpus)]
        history.add(last)
    return history, last


def test_sparkline_scales_from_zero_to_the_top():
    assert sparkline([0, 50, 100, 150, None], 100) == "▁▅██ "
    assert sparkline([0, 225, 450], 450) == "▁▅█"
    assert sparkline([10, 20], None) == "  ", "no scale: nothing drawn rather than a guess"
    assert [sparkline([v], 100) for v in range(0, 101, 100 // 7)][:8] == list(SPARKS)


def test_history_keeps_the_last_minute():
    history, last = fed(120)
    points = history.points[0]
    assert len(points) == 60
    assert points[0][0] == last[0].ts_ms - 59_000


def test_frame_shows_the_time_the_table_and_a_sparkline_per_gpu():
    history, last = fed(20, gpus=2)
    text = frame(last, history, 80, 24, 1.0, "lab")
    lines = text.split("\n")
    assert lines[0] == "2025-11-24 16:00:19 on lab, every 1s (Ctrl-C to stop)"
    assert lines[1].split() == ["GPU", "Name", "Util", "Memory", "Temp", "Power", "Procs"]
    assert lines[3].split()[:3] == ["0", "RTX", "4090"]
    spark_lines = [line for line in lines if line.startswith("GPU 0") or line.startswith("GPU 1")]
    assert len(spark_lines) == 2
    # utilization 0..100 % climbs by 10 each sample, 20 samples: the last 20 seen
    expected = sparkline([(k * 10) % 110 for k in range(20)], 100)
    assert f"util {expected}  80%" in spark_lines[0]
    assert f"power {sparkline([2.0 * ((k * 10) % 110) for k in range(20)], 450)} 160 W" in spark_lines[0]
    assert all(display_width(line) <= 80 for line in lines)


def test_a_narrow_terminal_gets_shorter_sparklines_a_wide_one_a_whole_minute():
    history, last = fed(60, every_ms=500)  # 120 samples, more than fit
    for width in (40, 80, 120, 300):
        lines = frame(last, history, width, 24, 0.5).split("\n")
        assert all(display_width(line) <= width for line in lines), width
        spark = next(line for line in lines if line.startswith("GPU 0"))
        n = max(len(run) for run in spark.replace("util", " ").replace("power", " ").split())
        assert n <= 120
        if width == 300:
            assert f"util {sparkline([(k * 10) % 110 for k in range(120)], 100)}" in spark


def test_a_short_terminal_cuts_the_history_first_and_says_so():
    history, last = fed(5, gpus=8)
    lines = frame(last, history, 80, 14, 1.0).split("\n")
    assert len(lines) == 13, "the cursor keeps the last line"
    assert sum(1 for line in lines if line[:5].strip().isdigit()) == 8, "every GPU row of the table"
    assert lines[-1] == "… 9 more lines: make the terminal taller"


def test_power_without_a_limit_scales_to_the_highest_seen_and_a_failed_gpu_has_no_reading():
    history = History()
    history.add([gpu(0, T0, 50, 100.0, limit=None), gpu(1, T0, 10, 10.0)])
    history.add([gpu(0, T0 + 1000, 50, 200.0, limit=None),
                 gpu(1, T0 + 1000, None, None, status="gpu_is_lost")])
    last = [gpu(0, T0 + 1000, 50, 200.0, limit=None), gpu(1, T0 + 1000, None, None, status="gpu_is_lost")]
    text = frame(last, history, 80, 24, 1.0)
    gpu0 = next(line for line in text.split("\n") if line.startswith("GPU 0"))
    gpu1 = next(line for line in text.split("\n") if line.startswith("GPU 1"))
    assert "power ▅█ 200 W" in gpu0
    assert "util ▂  " in gpu1 and gpu1.rstrip().endswith("-")
    assert "FAILED" in sample_table(last, 80).split("\n")[3]


def test_no_gpus_is_said_in_the_frame():
    assert frame([], History(), 80, 24, 2.0).split("\n") == ["-, every 2s (Ctrl-C to stop)", "no GPUs found"]


def test_the_time_is_local(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    history, last = fed(1)
    assert frame(last, history, 80, 24, 1.0).startswith("2025-11-25 01:00:00")
