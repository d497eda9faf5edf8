"""Every human-readable output fits the terminal (issue #13.1, #13.5).

Each command of ``COMMANDS`` runs in a real pseudo-terminal of 80x24 (and
120x24), against the fake NVML with long GPU names and real processes with
long names and command lines, and no line it prints may be wider than the
terminal: a wider line is a row the terminal wraps. A command is added by
adding a line to ``COMMANDS``.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from gpm.humanize import display_width
from tests.conftest import FIXTURES
from tests.terminal import run_in_pty, user_env

GiB = 1 << 30
LONG_GPU = "NVIDIA RTX 4000 SFF Ada Generation with an Unusually Long Board Name"
WIDE_GPU = "NVIDIA 演算加速装置 超長名前モデル"
LONG_PROGRAM = "inference-server-with-a-long-program-name"
WIDE_PROGRAM = "推論サーバー長い名前"
LONG_MODEL = "hf.co/bartowski/Meta-Llama-3.1-70B-Instruct-GGUF:Q4_K_M-with-a-long-tag"
LONG_GAME = "The Elder Scrolls V: Skyrim Special Edition Anniversary Upgrade"
#: The sequences the live view draws with; any other escape is a finding.
CSI = re.compile(r"\x1b\[(\?25[lh]|H|K|J)")


#: (id, argv after `gpm`, frames to wait for before SIGINT (None: runs to its end), marks)
COMMANDS = [
    pytest.param(["ps"], None, id="ps"),
    pytest.param(["sample"], None, id="sample"),
    pytest.param(["sample", "--follow", "-i", "0.1"], 20, id="sample-follow"),
    pytest.param(["config", "show"], None, id="config-show"),
    pytest.param(["ollama-watch"], None, id="ollama-watch"),
    pytest.param(["report", "--week", "2025-W47"], None, id="report"),
    pytest.param(["report", "--week", "2025-W47", "--format", "markdown"], None, id="report-markdown"),
]


def run_gpm_in_pty(argv: list[str], env: dict, columns: int, frames: int | None = None) -> tuple[int, str]:
    """``gpm ARGV`` on a ``columns`` x 24 terminal; with ``frames``, Ctrl-C once
    that many live frames were drawn."""
    code, out = run_in_pty([sys.executable, "-m", "gpm", *argv], env, columns=columns,
                           interrupt_when=None if frames is None else lambda out: out.count(b"\x1b[H") >= frames)
    return code, out.decode("utf-8", "replace").replace("\r\n", "\n")


def screen_lines(text: str) -> list[str]:
    """The lines a terminal shows, the live view's drawing sequences taken out."""
    return CSI.sub("", text.replace("\x1b[H", "\n")).split("\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three GPUs (a long name, a wide one, an H100) and real processes on
    them: a long program name, a wide one, and python with a long command
    line; a fake Ollama with a model of a long name loaded."""
    from tests.fakes.nvml import FakeProcess, Scenario, make_gpu

    from tests.fakes.ollama_server import PS_MODEL, FakeOllama

    home = tmp_path_factory.mktemp("width")
    ollama = FakeOllama(loaded=[{**PS_MODEL, "name": LONG_MODEL, "model": LONG_MODEL}])
    tools = home / "tools"
    tools.mkdir()
    for name in (LONG_PROGRAM, WIDE_PROGRAM):
        shutil.copy(shutil.which("sleep"), tools / name)
    (tools / "python3").symlink_to(sys.executable)
    script = home / "train_a_model_with_a_rather_long_script_name.py"
    script.write_text("import time\ntime.sleep(600)\n")
    procs = [subprocess.Popen([tools / LONG_PROGRAM, "600"]), subprocess.Popen([tools / WIDE_PROGRAM, "600"]),
             subprocess.Popen([tools / "python3", script, "--epochs", "300", "--learning-rate", "0.0003",
                               "--data", "/srv/datasets/a-very-long-dataset-directory-name/shard-0001"])]
    try:
        scenario = home / "nvml.txt"
        Scenario(gpus=[
            make_gpu(0, name=LONG_GPU, processes=[FakeProcess(pid=procs[0].pid, used_memory=5 * GiB)]),
            make_gpu(1, name=WIDE_GPU, processes=[FakeProcess(pid=procs[1].pid, used_memory=3 * GiB)]),
            make_gpu(2, processes=[FakeProcess(pid=procs[2].pid, used_memory=21 * GiB)]),
        ]).write(scenario)
        env = user_env(home, scenario)
        add_long_names(home / ".local/share/gpm/gpm.db", socket.gethostname())
        for var in ("COLUMNS", "LINES"):  # the size comes from the terminal
            env.pop(var, None)
        ollama.start()
        env["GPM_OLLAMA_API_URL"] = ollama.url
        yield env
    finally:
        ollama.stop()
        for p in procs:
            p.kill()
            p.wait()


def add_long_names(db, host: str) -> None:
    """Into the known week the report shows: two more GPUs (the long name, the
    wide one) running a long-named program and a game of a long name, and
    requests to a model of a long name that was loaded."""
    from gpm.config import load_config
    from gpm.gpu.sample import GpuSample
    from gpm.llm.sessions import PollResult
    from gpm.sampling import Sampler
    from gpm.store.db import open_db, write
    from gpm.store.llm import SessionLog, save_request
    from tests.test_report import HOUR, MON, loaded, request, run

    start = MON + 3 * 24 * HOUR  # Thursday, when nothing else was sampled
    programs = {2: run(700, LONG_PROGRAM, "llm_inference", LONG_MODEL, start, 20 * GiB, 80),
                3: run(800, "SkyrimSE.exe", "gaming", LONG_GAME, start, 6 * GiB, 90)}
    conn = open_db(db)
    Sampler(load_config(), conn=conn, enrichers=[], host=host).store([
        GpuSample(start + i * 10_000, index, "nvml", uuid=f"GPU-{index}bbbbbbb-0000", name=name,
                  memory_total_bytes=48 * GiB, memory_used_bytes=24 * GiB, utilization_gpu_percent=80,
                  power_watts=250.0, temperature_celsius=65, energy_joules=1e6 + i * 2500,
                  throttle_reasons=0, processes=[programs[index]])
        for i in range(360) for index, name in ((2, LONG_GPU), (3, WIDE_GPU))])
    with write(conn):
        save_request(conn, {**request(LONG_MODEL, start + HOUR // 2, start + HOUR // 2 + 9_000,
                                      prompt_tokens=12_345, completion_tokens=678_901, ttft_seconds=0.25,
                                      tpot_seconds=0.02, tokens_per_second=41.5), "host": host})
    save = SessionLog(conn, "http://127.0.0.1:11434", host)
    save(PollResult(start + 60_000, up=True, version="0.5.1", models=[loaded(LONG_MODEL, 40 * GiB)]))
    save(PollResult(start + HOUR, up=True, version="0.5.1"))
    conn.close()


def too_wide(lines: list[str], columns: int) -> list[str]:
    return [f"{display_width(line)} columns: {line!r}" for line in lines if display_width(line) > columns]


@pytest.mark.parametrize("argv, frames", COMMANDS)
def test_fits_80_columns(world, argv, frames):
    code, text = run_gpm_in_pty(argv, world, 80, frames)
    assert code == 0, text
    lines = screen_lines(text)
    assert "\x1b" not in "".join(lines), f"an escape sequence other than the live view's: {text!r}"
    assert not too_wide(lines, 80), "\n".join(too_wide(lines, 80))
    assert len([line for line in lines if line.strip()]) >= 3, text


def test_tables_keep_one_row_per_gpu_and_process_and_the_numbers(world):
    """Shrinking cut names and reasons, never a row into two or a reading off."""
    _, text = run_gpm_in_pty(["sample"], world, 80)
    rows = [line for line in screen_lines(text) if re.match(r"\s*\d\s", line)]
    assert [r.split()[0] for r in rows] == ["0", "1", "2"], text
    assert "RTX 4000 SFF Ada" in rows[0] and rows[0].rstrip().endswith("1") and "/ 24.0 GiB" in rows[0]
    assert "演算加速装置" in rows[1] and "W / 400 W" in rows[1]
    _, text = run_gpm_in_pty(["ps"], world, 80)
    rows = [line for line in screen_lines(text) if re.match(r"\s*\d\s", line)]
    assert [r.split()[0] for r in rows] == ["0", "1", "2"], text
    assert [r for r in rows if "5.0 GiB" in r and "inference-ser" in r], text
    assert [r for r in rows if "3.0 GiB" in r and "推論" in r], text
    assert [r for r in rows if "21.0 GiB" in r and "ml_training" in r and r.endswith("…")], text


def test_at_120_columns_the_extra_width_is_used(world):
    _, text = run_gpm_in_pty(["ps"], world, 120)
    widths = [display_width(line) for line in screen_lines(text)]
    assert 80 < max(widths) <= 120, text


def report_rows(text: str, title: str) -> list[str]:
    """The rows of a report section's table, from its title to the next blank line."""
    lines = screen_lines(text)
    at = lines.index(title) + 4
    return lines[at:lines.index("", at)]


def test_the_report_gives_names_way_never_numbers_and_uses_120_columns(world):
    """At 80 columns the long names are cut and every figure stays whole; at
    120 the names get the extra width, and no line wraps either way."""
    shown = {}
    for columns in (80, 120):
        code, text = run_gpm_in_pty(["report", "--week", "2025-W47"], world, columns)
        assert code == 0 and not too_wide(screen_lines(text), columns), text
        shown[columns] = text
    narrow = {t: report_rows(shown[80], t) for t in ("Per GPU", "LLM requests per model", "Top processes")}
    wide = {t: report_rows(shown[120], t) for t in narrow}
    # The GPU names are cut as everywhere else (short_gpu_name), the readings whole.
    gpus = {r.split()[0]: r for r in narrow["Per GPU"]}
    assert "RTX 4000 SFF" in gpus["2"] and "RTX 4000 SFF Ada Ge…" not in gpus["2"]
    readings = "1.0 h 100% 80/80% 65/65°C 24.0 GiB 250 W 0.25 kWh"
    assert " ".join(gpus["2"].split()).endswith(readings) and " ".join(gpus["3"].split()).endswith(readings)
    assert "演算加速装置" in gpus["3"]
    assert "RTX 4000 SFF Ada Ge…" in {r.split()[0]: r for r in wide["Per GPU"]}["2"]
    # A model of a long name: cut at 80, longer at 120; its numbers whole.
    model = [r for r in narrow["LLM requests per model"] if r.startswith("hf.co/")]
    assert model and model[0].endswith("1    0  12,345/678,901  42/42  0.25s/0.25s  0.020s       -      -"), model
    longer = [r for r in wide["LLM requests per model"] if r.startswith("hf.co/")]
    assert len(longer[0].split("  ")[0]) > len(model[0].split("  ")[0]) + 30, longer
    # The label gives way first, then the program; the runs, time and energy stay.
    top = [r for r in narrow["Top processes"] if f"  {LONG_PROGRAM[:12]}" in r]
    assert top and all(r.endswith("1     1.0 h  0.25 kWh") for r in top), top
    assert [r for r in wide["Top processes"] if LONG_PROGRAM in r and LONG_MODEL[:20] in r]
    assert max(display_width(line) for line in screen_lines(shown[120])) > 100


def test_the_cost_section_fits_and_keeps_every_amount(world):
    """With [report] prices (#16) the "Cost and CO2" table fits 80 columns: the
    long model and game names give way, the amounts stay whole."""
    prices = {"GPM_REPORT_ELECTRICITY_PRICE_PER_KWH": "1234.5", "GPM_REPORT_CURRENCY": "CHF",
              "GPM_REPORT_CARBON_INTENSITY_G_PER_KWH": "950"}
    argv = ["report", "--week", "2025-W47", "--section", "cost"]
    subprocess.run([sys.executable, "-m", "gpm", *argv], env=world, capture_output=True, check=True)  # rolled up
    code, text = run_gpm_in_pty(argv, {**world, **prices}, 80)
    assert code == 0 and not too_wide(screen_lines(text), 80), text
    rows = report_rows(text, "Cost and CO2")
    # The game's 359 intervals of 2.5 kJ: 0.2493 kWh, CHF 307.77 and 237 g; thousands get their comma.
    game = [r for r in rows if r.startswith("game      The Elder")]
    assert game and re.search(r"…  CHF +307\.77 +237 g$", game[0]), game
    assert [r for r in rows if re.search(r"CHF \d,\d{3}\.\d\d +\d\.\d{3} kg$", r)], rows
    model = [r for r in rows if r.startswith("model     hf.co/")]
    assert model and re.search(r"…  - +- +-$", model[0]), model  # its request has no GPU samples


def test_live_view_redraws_in_place_and_leaves_the_last_frame(world):
    """--follow on a terminal: frames drawn from the top left, the cursor hidden
    then shown again, the history as wide as the terminal allows, and Ctrl-C
    is its normal end (exit 0)."""
    code, text = run_gpm_in_pty(["sample", "--follow", "-i", "0.1"], world, 120, 20)
    assert code == 0, text
    assert text.count("\x1b[?25l") == 1 and text.rstrip().endswith("\x1b[?25h"), repr(text[-200:])
    last = text.rsplit("\x1b[H", 1)[1]
    lines = screen_lines(last)
    assert len([line for line in lines if line.strip()]) <= 23
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d on .*, every 0\.1s", lines[0]), lines[0]
    history = [line for line in lines if re.match(r"GPU \d", line)]
    assert len(history) == 3, last
    sparks = [max(re.findall(r"[▁▂▃▄▅▆▇█]+", line), key=len) for line in history]
    assert all(len(s) > 15 for s in sparks), sparks
    assert len({display_width(line[:line.index("util")]) for line in history}) == 1, "the sparklines line up"
    assert not too_wide(lines, 120)


def test_live_view_only_on_a_terminal(world):
    """Piped, --follow prints what it printed before: nothing but --json lines."""
    proc = subprocess.Popen([sys.executable, "-m", "gpm", "sample", "--follow", "--json", "-i", "0.1"],
                            env=world, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = [proc.stdout.readline() for _ in range(6)]  # two samples of three GPUs
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    out = b"".join(first) + rest
    assert b"\x1b" not in out
    assert len(out.splitlines()) >= 6 and all(line.startswith(b'{"ts"') for line in out.splitlines())


# ---- the helpers, on data --------------------------------------------------

def test_short_gpu_name_on_every_name_in_the_real_captures():
    """One rule for names never seen: the vendor and GeForce go, the model stays."""
    from gpm.humanize import short_gpu_name

    captures = FIXTURES / "nvidia-smi"
    if not captures.is_dir():
        pytest.skip(f"no nvidia-smi captures at {captures}")
    names = {m for f in captures.glob("*.xml") for m in re.findall(r"<product_name>([^<]*)</product_name>",
                                                                    f.read_text(errors="replace"))}
    assert len(names) >= 10
    shown = {n: short_gpu_name(n) for n in names}
    assert all(0 < display_width(s) <= 20 for s in shown.values()), shown
    assert not [s for s in shown.values() if s.startswith(("NVIDIA", "GeForce"))], shown
    assert shown.get("NVIDIA GeForce RTX 4090", "RTX 4090") == "RTX 4090"
    assert shown.get("Tesla T4", "Tesla T4") == "Tesla T4"
    assert shown.get("NVIDIA RTX 4000 SFF Ada Generation", "RTX 4000 SFF Ada") == "RTX 4000 SFF Ada"


def test_short_gpu_name_examples():
    from gpm.humanize import short_gpu_name

    assert short_gpu_name("NVIDIA GeForce RTX 4090") == "RTX 4090"
    assert short_gpu_name("NVIDIA A100-SXM4-80GB") == "A100-SXM4-80GB"
    assert short_gpu_name("NVIDIA GeForce RTX 3060 Laptop GPU") == "RTX 3060 Laptop"
    assert short_gpu_name("NVIDIA") == "NVIDIA"
    assert short_gpu_name(None) == "?"
    assert short_gpu_name(LONG_GPU) == "RTX 4000 SFF Ada Ge…"
    assert short_gpu_name(WIDE_GPU) == "演算加速装置 超長名…"  # 12 + 1 + 6 + 1 columns
    assert short_gpu_name("NVIDIA \x1b[2JEvil") == "\\x1b[2JEvil", "escapes are shown, and counted as shown"


def test_cut_and_table_count_columns_as_the_terminal_does():
    from gpm.humanize import Column, cut, table

    assert display_width("推論") == 4 and display_width("e\u0301") == 1
    assert cut("推論サーバー", 7) == "推論サ…" and display_width(cut("推論サーバー", 7)) == 7
    assert cut("abc", 3) == "abc" and cut("abcd", 3) == "ab…"
    columns = [Column("GPU", right=True), Column("Name", min_width=6), Column("Memory", right=True),
               Column("Reason")]
    rows = [[0, "推論サーバー長い名前", "5.0 GiB", "a reason far too long to be shown whole"]]
    # the reason gives way first, down to its header; then the name
    assert table(columns, rows, 50, give_way=(3, 1)).split("\n")[2] == \
        "  0  推論サーバー長い名前  5.0 GiB  a reason far…"
    # a wide character that does not fit leaves a column of padding
    assert table(columns, rows, 36, give_way=(3, 1)).split("\n")[2] == "  0  推論サーバー…   5.0 GiB  a rea…"
    assert all(display_width(line) <= 20 for line in table(columns, rows, 20, give_way=(3, 1)).split("\n"))


def test_a_proxied_request_line_fits_and_keeps_its_numbers():
    from gpm.cli.ollama_watch import _request_line

    row = {"endpoint": "/v1/chat/completions", "model": LONG_MODEL, "status": 200, "prompt_tokens": 26,
           "completion_tokens": 512, "ttft_seconds": 0.25, "tokens_per_second": 41.5, "duration_seconds": 12.5,
           "error": None, "done_reason": "stop"}
    line = _request_line(row, 80)
    assert display_width(line) <= 80
    assert line.startswith("/v1/chat/co… hf.co/bartow… "), "endpoint and model share what is left"
    assert line.endswith(" 200 26 in 512 out ttft 0.250s 41.5 tok/s 12.500s stop")
    assert _request_line(row, 200) == f"/v1/chat/completions {LONG_MODEL} " + line.split(" ", 2)[2]
