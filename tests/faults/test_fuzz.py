"""A bounded fuzz run over the parsers of outside input (#12, "What to build" 3).

Each parser takes text that gpm does not control: nvidia-smi's XML, Ollama's
answer streams, Steam's VDF/ACF files, the user's config file. Whatever it
is given, it either parses or raises its module's documented error, never
anything else, and what it returns is fit to store: counts and readings are
None or finite, non-negative numbers that SQLite can hold.

Derandomized (the same examples on every run, so CI is reproducible) and
bounded (a few seconds each). Inputs start from real captures where they
exist (``tests.conftest.FIXTURES``) and from the shapes gpm itself writes.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpm.classify.steam import library_paths, parse_manifest, parse_vdf
from gpm.config import Config, load_config, example_toml
from gpm.errors import ConfigError
from gpm.gpu.smi_xml import SmiParseError, parse_smi_xml
from gpm.llm.record import ExchangeRecorder
from tests.conftest import FIXTURES

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
INT64 = 2 ** 63 - 1
TS = 1_790_000_000_000

# Values nvidia-smi and garbage put where a number belongs.
_ODD_TEXTS = ["N/A", "[N/A]", "Unknown Error", "[GPU is lost]", "-5 W", "-1 MiB", "1" * 400 + " MiB",
              "9" * 25 + " C", "NaN W", "inf W", "1e400 W", "²", "١٢ MiB", "3.5.1 %", "P-1", "P99",
              "Active", "\x00", "", " ", "0x10", "12 KiB", "7 J", "2 kJ", "1.5 mW", "+3 %"]


# --- nvidia-smi XML -------------------------------------------------------------

def _captures() -> list[str]:
    folder = FIXTURES / "nvidia-smi"
    found = sorted(folder.glob("*.xml")) if folder.is_dir() else []
    return [p.read_text(encoding="utf-8", errors="replace") for p in found] or [_SMALL_SMI]


_SMALL_SMI = """<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">
<nvidia_smi_log><driver_version>550.54</driver_version><cuda_version>12.4</cuda_version>
<gpu id="00000000:01:00.0"><product_name>NVIDIA GeForce RTX 4090</product_name>
<uuid>GPU-1</uuid><fb_memory_usage><total>24564 MiB</total><reserved>300 MiB</reserved>
<used>1000 MiB</used></fb_memory_usage><utilization><gpu_util>37 %</gpu_util>
<memory_util>12 %</memory_util></utilization><temperature><gpu_temp>54 C</gpu_temp></temperature>
<gpu_power_readings><power_draw>123.45 W</power_draw><enforced_power_limit>450.00 W</enforced_power_limit>
</gpu_power_readings><total_energy_consumption>987654 mJ</total_energy_consumption>
<clocks><sm_clock>2520 MHz</sm_clock><mem_clock>10501 MHz</mem_clock></clocks>
<fan_speed>41 %</fan_speed><performance_state>P2</performance_state>
<processes><process_info><pid>4242</pid><type>C</type><process_name>python</process_name>
<used_memory>512 MiB</used_memory></process_info></processes></gpu></nvidia_smi_log>
"""

_TEXT_NODE = re.compile(r">([^<]*)<")


@st.composite
def _mutated_xml(draw) -> str:
    text = draw(st.sampled_from(_captures()))
    spots = [m.span(1) for m in _TEXT_NODE.finditer(text)]
    # element texts replaced by what a broken driver or a garbled pipe could give
    for _ in range(draw(st.integers(0, 8))):
        start, end = draw(st.sampled_from(spots))
        new = draw(st.sampled_from(_ODD_TEXTS) | st.text(max_size=12).map(lambda s: s.replace("<", "")))
        text = text[:start] + new.replace("&", "&amp;") + text[end:]
        spots = [m.span(1) for m in _TEXT_NODE.finditer(text)]
    # raw cuts, repeats and garbage anywhere (a truncated or interleaved read)
    for _ in range(draw(st.integers(0, 3))):
        a = draw(st.integers(0, len(text)))
        b = draw(st.integers(a, min(len(text), a + 200)))
        op = draw(st.sampled_from(["cut", "repeat", "insert", "truncate"]))
        if op == "cut":
            text = text[:a] + text[b:]
        elif op == "repeat":
            text = text[:b] + text[a:b] + text[b:]
        elif op == "insert":
            text = text[:a] + draw(st.text(max_size=20)) + text[a:]
        else:
            text = text[:a]
    return text


def _assert_storable(value, kind: type) -> None:
    if value is None:
        return
    assert isinstance(value, kind) and not isinstance(value, bool), value
    if kind is int:
        assert 0 <= value <= INT64, value
    else:
        assert math.isfinite(value) and value >= 0, value


_INT_READINGS = ("utilization_gpu_percent", "utilization_memory_percent", "memory_used_bytes",
                 "memory_total_bytes", "temperature_celsius", "sm_clock_mhz", "memory_clock_mhz",
                 "fan_percent", "pstate", "throttle_reasons")
_FLOAT_READINGS = ("power_watts", "power_limit_watts", "energy_joules")


@FUZZ
@given(text=_mutated_xml() | st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")))
def test_nvidia_smi_xml_parses_or_raises_smi_parse_error(text):
    """Anything nvidia-smi prints is parsed into storable readings or refused with SmiParseError."""
    try:
        samples = parse_smi_xml(text, TS)
    except SmiParseError as err:
        assert str(err) and "\n" not in str(err)
        return
    for index, s in enumerate(samples):
        assert s.index == index and s.ts_ms == TS and s.source == "nvidia-smi"
        for name in _INT_READINGS:
            _assert_storable(getattr(s, name), int)
        for name in _FLOAT_READINGS:
            _assert_storable(getattr(s, name), float)
        for p in s.processes:
            assert isinstance(p.pid, int) and 0 <= p.pid <= INT64, p.pid
            _assert_storable(p.used_memory_bytes, int)


@pytest.mark.parametrize("text, field", [
    ("<used>" + "1" * 400 + " MiB</used>", "memory_used_bytes"),  # float('1'*400) is inf: int(inf) raised
    ("<gpu_temp>-5 C</gpu_temp>", "temperature_celsius"),
    ("<gpu_temp>" + "9" * 25 + " C</gpu_temp>", "temperature_celsius"),  # no SQLite INTEGER holds it
    ("<power_draw>-5 W</power_draw>", "power_watts"),
    ("<used>١٢ MiB</used>", "memory_used_bytes"),  # Arabic-Indic digits: not what nvidia-smi writes
])
def test_an_impossible_reading_is_unknown(text, field):
    """A reading no GPU gives (negative, beyond any store, foreign digits) is None, as N/A is."""
    tag = re.match(r"<(\w+)>", text).group(1)
    xml = re.sub(rf"<{tag}>[^<]*</{tag}>", text, _SMALL_SMI, count=1)
    (sample,) = parse_smi_xml(xml, TS)
    assert getattr(sample, field) is None
    assert sample.memory_total_bytes == 24564 * 1024 * 1024  # the rest of the GPU is read


def test_a_pid_of_superscript_digits_is_skipped():
    """``'²'.isdigit()`` is True but ``int('²')`` raises ValueError: that process is not one."""
    xml = _SMALL_SMI.replace("<pid>4242</pid>", "<pid>²</pid>")
    (sample,) = parse_smi_xml(xml, TS)
    assert sample.processes == []


# --- the Ollama stream parser -----------------------------------------------------

_METRIC_VALUES = st.one_of(st.integers(-10, 10 ** 12), st.floats(allow_nan=True, allow_infinity=True),
                           st.booleans(), st.text(max_size=5), st.none(), st.sampled_from([10 ** 30, 10 ** 400]))


def _dumps(obj) -> str:
    return json.dumps(obj, allow_nan=True)


@st.composite
def _native_stream(draw) -> tuple[str, bytes]:
    endpoint = draw(st.sampled_from(["/api/generate", "/api/chat"]))
    lines = []
    for word in draw(st.lists(st.text(max_size=6), max_size=5)):
        if endpoint == "/api/chat":
            lines.append(_dumps({"model": "llama3.2", "message": {"role": "assistant", "content": word},
                                 "done": False}))
        else:
            lines.append(_dumps({"model": "llama3.2", "response": word, "done": False}))
    final = {"model": "llama3.2", "done": True, "done_reason": draw(st.sampled_from(["stop", "length", ""]))}
    for key in draw(st.lists(st.sampled_from(["total_duration", "load_duration", "prompt_eval_count",
                                              "prompt_eval_duration", "eval_count", "eval_duration",
                                              "prompt_eval_cached_count"]), unique=True)):
        final[key] = draw(_METRIC_VALUES)
    lines.append(_dumps(final))
    if draw(st.booleans()):
        lines.append(_dumps({"error": draw(st.text(max_size=8) | st.just({"message": "out of memory"}))}))
    return endpoint, _with_garbage(draw, lines, "\n")


@st.composite
def _sse_stream(draw) -> tuple[str, bytes]:
    events = []
    for word in draw(st.lists(st.text(max_size=6), max_size=5)):
        events.append("data: " + _dumps({"model": "llama3.2", "choices": [
            {"index": 0, "delta": {"content": word}, "finish_reason": None}]}))
    usage = {k: draw(_METRIC_VALUES) for k in draw(st.lists(st.sampled_from(
        ["prompt_tokens", "completion_tokens", "total_tokens"]), unique=True))}
    events.append("data: " + _dumps({"model": "llama3.2", "choices": [], "usage": usage}))
    events.append("data: [DONE]")
    return "/v1/chat/completions", _with_garbage(draw, events, "\n\n")


def _with_garbage(draw, lines: list[str], sep: str) -> bytes:
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.sampled_from(["{", "[1, 2]", "null", "data:", ": ping", "event: x",
                                               "\r", '{"done": true, "eval_count": -3}']) | st.text(max_size=10)))
    body = sep.join(lines).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        body += sep.encode()
    if draw(st.booleans()):
        body = draw(st.binary(max_size=20)) + body  # garbage before the first line
    return body


def _fixture_streams() -> list[tuple[str, bytes]]:
    folder = FIXTURES / "ollama"
    found = []
    for name, endpoint in (("docs-api-streaming.generate-stream.ndjson", "/api/generate"),
                           ("v1-chat-completions-stream-include_usage.DERIVED.sse", "/v1/chat/completions")):
        if (folder / name).is_file():
            found.append((endpoint, (folder / name).read_bytes()))
    return found


_STREAMS = _native_stream() | _sse_stream()
if _fixture_streams():
    _STREAMS = _STREAMS | st.sampled_from(_fixture_streams())


def _record(endpoint: str, body: bytes, cuts: list[int]) -> dict:
    """The row for ``body`` fed in the pieces ``cuts`` make, every piece at the same moment."""
    rec = ExchangeRecorder(endpoint, b'{"model": "llama3.2", "stream": true}', t0=10.0, ts_ms=TS, host="h")
    rec.started(200, "text/event-stream" if endpoint.startswith("/v1/") else "application/x-ndjson")
    edges = [0, *sorted(c % (len(body) + 1) for c in cuts), len(body)]
    for a, b in zip(edges, edges[1:]):
        rec.feed(body[a:b], 11.0)
    return rec.finish(12.5, TS + 2500)


_COUNTS = ("prompt_tokens", "cached_prompt_tokens", "completion_tokens")
_DURATIONS = ("ttft_seconds", "tpot_seconds", "tokens_per_second", "prompt_tokens_per_second",
              "duration_seconds", "load_seconds", "prompt_eval_seconds", "eval_seconds", "ollama_total_seconds")


@FUZZ
@given(stream=_STREAMS, cuts=st.lists(st.integers(0, 10 ** 6), max_size=12),
       other_cuts=st.lists(st.integers(0, 10 ** 6), max_size=12))
def test_ollama_stream_parser_counts_never_negative_and_chunking_changes_nothing(stream, cuts, other_cuts):
    """Any bytes, cut anywhere: one row; counts and durations None or finite and >= 0; the
    same bytes cut differently (as TCP may deliver them) give the same row."""
    endpoint, body = stream
    row = _record(endpoint, body, cuts)
    assert row == _record(endpoint, body, other_cuts)
    assert row == _record(endpoint, body, [])  # one piece
    for key in _COUNTS:
        assert row[key] is None or (isinstance(row[key], int) and 0 < row[key] <= INT64), (key, row[key])
    for key in _DURATIONS:
        assert row[key] is None or (math.isfinite(row[key]) and row[key] >= 0), (key, row[key])
    assert row["ts_ms"] == TS and row["end_ms"] == TS + 2500


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400])
def test_a_non_finite_ollama_duration_is_unknown(value):
    """Python's json reads NaN and Infinity; a duration of NaN seconds is no duration (it
    reached the report as NaN tokens/s)."""
    body = ('{"model": "m", "done": true, "eval_count": 10, "eval_duration": %s, '
            '"prompt_eval_count": 5, "prompt_eval_duration": %s, "total_duration": %s}\n' % (value, value, value))
    row = _record("/api/generate", body.encode(), [])
    assert (row["eval_seconds"], row["prompt_eval_seconds"], row["ollama_total_seconds"]) == (None, None, None)
    assert row["completion_tokens"] == 10
    assert row["tokens_per_second"] is None or math.isfinite(row["tokens_per_second"])


# --- Steam VDF / ACF --------------------------------------------------------------

_vdf_keys = st.text(max_size=8).filter(lambda s: not s.startswith("[$"))
_vdf_values = st.recursive(st.text(max_size=10), lambda inner: st.dictionaries(_vdf_keys, inner, max_size=4),
                           max_leaves=12)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _vdf(tree: dict, depth: int = 0) -> str:
    pad = "\t" * depth
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out.append(f"{pad}{_quote(key)}\n{pad}{{\n{_vdf(value, depth + 1)}{pad}}}\n")
        else:
            out.append(f"{pad}{_quote(key)}\t\t{_quote(value)}\n")
    return "".join(out)


def _lowered(tree: dict) -> dict:
    out: dict = {}
    for key, value in tree.items():
        out[key.lower()] = _lowered(value) if isinstance(value, dict) else value
    return out


@FUZZ
@given(tree=st.dictionaries(_vdf_keys, _vdf_values, max_size=4))
def test_vdf_written_as_steam_writes_it_reads_back(tree):
    """Steam's KeyValues text of any tree (escapes, any Unicode) reads back as that tree, keys lowered."""
    assert parse_vdf(_vdf(tree)) == _lowered(tree)


def _steam_files() -> list[str]:
    folder = FIXTURES / "steam"
    found = sorted(folder.iterdir()) if folder.is_dir() else []
    return [p.read_text(encoding="utf-8", errors="replace") for p in found] or [
        '"AppState"\n{\n\t"appid"\t\t"570"\n\t"name"\t\t"Dota 2"\n\t"installdir"\t\t"dota 2 beta"\n}\n',
        '"libraryfolders"\n{\n\t"0"\n\t{\n\t\t"path"\t\t"/home/u/.steam"\n\t}\n}\n']


@st.composite
def _mangled_steam_file(draw) -> str:
    text = draw(st.sampled_from(_steam_files()))
    for _ in range(draw(st.integers(0, 4))):
        a = draw(st.integers(0, len(text)))
        b = draw(st.integers(a, min(len(text), a + 40)))
        text = text[:a] + draw(st.sampled_from(['"', "{", "}", "\\", "//", "[$WIN32]", "\n", "\x00", ""])
                                | st.text(max_size=6)) + text[b:]
    return text


@FUZZ
@given(text=_mangled_steam_file() | st.text(max_size=200))
def test_steam_files_read_tolerantly_into_digits_only_app_ids(text):
    """A half-written or hostile VDF/ACF yields what can be read, never an exception; an app id
    is ASCII digits (it is matched against ``SteamAppId`` in process environments)."""
    tree = parse_vdf(text)
    assert isinstance(tree, dict)
    paths = library_paths(tree)
    assert all(isinstance(p, str) for p in paths)
    app = parse_manifest(text, "/lib/steamapps")
    if app is not None:
        assert re.fullmatch(r"[0-9]+", app.appid), app.appid
        assert isinstance(app.name, str) and app.name


@pytest.mark.parametrize("appid", ["²", "١٢", "５７０"])
def test_an_app_id_of_non_ascii_digits_is_no_app(appid):
    """``'²'.isdigit()`` is True: such a manifest named an app no process environment can match."""
    assert parse_manifest(f'"AppState" {{ "appid" "{appid}" "name" "x" }}', "/lib") is None
    assert parse_manifest('"AppState" { "appid" "570" "name" "Dota 2" }', "/lib").appid == "570"


# --- the config file ---------------------------------------------------------------

_EXAMPLE = example_toml()


@st.composite
def _edited_example(draw) -> bytes:
    """``gpm config init``'s file as a user edits it: lines uncommented, values retyped, bytes lost."""
    lines = _EXAMPLE.splitlines()
    settings_at = [i for i, line in enumerate(lines) if re.match(r"# \[?[a-z_\[]+.*( = |\])", line)]
    for i in draw(st.lists(st.sampled_from(settings_at), max_size=6)):
        line = lines[i][2:]
        if " = " in line and draw(st.booleans()):
            key = line.split(" = ")[0]
            line = f"{key} = " + draw(st.sampled_from(['"x"', "-1", "1e999", "nan", "[", '"""', "{a=1}", "0x10",
                                                        "1979-05-27", "true", '"\\q"', "'a\nb'"])
                                      | st.text(max_size=8))
        lines[i] = line
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 2))):
        a = draw(st.integers(0, len(data)))
        data = data[:a] + draw(st.binary(max_size=4)) + data[a + draw(st.integers(0, 4)):]
    return data


@FUZZ
@given(data=_edited_example() | st.binary(max_size=200)
       | st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_config_file_loads_or_one_config_error_line(data, tmp_path):
    """Any file at the config path (not UTF-8, half a TOML, BOM, NULs, CRs): a Config or
    one ConfigError line naming the file; never another exception."""
    path = tmp_path / "gpm.toml"
    path.write_bytes(data)
    try:
        cfg = load_config(path, env={})
    except ConfigError as err:
        message = str(err)
        assert message.startswith(str(path)) and "\n" not in message and "\r" not in message, message
        return
    assert isinstance(cfg, Config) and cfg.config_file_found
