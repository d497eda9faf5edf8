"""Ordinary problems end as one line on stderr and a documented exit code (#12.11).

Each case runs the real ``gpm`` with hostile options, configuration, environment
or input and checks the exit code, that stderr is exactly one line naming the
problem, and that neither "internal error" nor a traceback appears.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpm.config import SCHEMA, Config, load_config
from gpm.errors import ConfigError
from tests.conftest import REPO, gpm_env

DEEP_TOML = "[service]\nhostname = " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_INLINE_TOML = "[service]\nhostname = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n"
DEEP_JSON = "[" * 5000 + "]" * 5000
MISSING = "/nonexistent-gpm-folder"

# id: (argv, env, stdin, files {name: bytes}, exit code, fragment of the line)
# "{tmp}" in argv, env and file contents is the test's folder.
CASES = {
    "url-bad-ipv6": (["--config", "{tmp}/c.toml", "config", "check"], {}, b"",
                     {"c.toml": b'[ollama]\napi_url = "http://[::1"\n'}, 2, "c.toml:2: [ollama] api_url"),
    "url-port-out-of-range": (["--config", "{tmp}/c.toml", "config", "check"], {}, b"",
                              {"c.toml": b'[ollama]\napi_url = "http://host:99999"\n'}, 2, "Port out of range"),
    "url-bracket-not-ipv6": (["--config", "{tmp}/c.toml", "config", "check"], {}, b"",
                             {"c.toml": b'[telemetry]\notlp_endpoint = "http://[zz]:4317"\n'}, 2,
                             "[telemetry] otlp_endpoint = 'http://[zz]:4317'"),
    "url-env-at-use": (["ollama-watch"], {"GPM_OLLAMA_API_URL": "http://[::1"}, b"", {}, 2,
                       "environment GPM_OLLAMA_API_URL: [ollama] api_url"),
    "url-flag-at-use": (["ollama-watch", "--api-url", "http://a:99999"], {}, b"", {}, 2, "option --api-url"),
    "nul-in-db-path": (["--config", "{tmp}/c.toml", "config", "check"], {}, b"",
                       {"c.toml": b'[storage]\ndb_path = "a\\u0000b"\n'}, 2, "db_path = 'a\\x00b'"),
    "nul-in-db-path-at-use": (["--config", "{tmp}/c.toml", "report"], {}, b"",
                              {"c.toml": b'[storage]\ndb_path = "a\\u0000b"\n'}, 2, "NUL character"),
    "nul-in-steam-paths": (["--config", "{tmp}/c.toml", "config", "check"], {}, b"",
                           {"c.toml": b'[classify]\nsteam_paths = ["a\\u0000b"]\n'}, 2, '["a\\u0000b"]'),
    "listen-bad-ipv4": (["--config", "{tmp}/c.toml", "config", "check"], {}, b"",
                        {"c.toml": b'[ollama]\nproxy_listen = "999.1.1.1:80"\n'}, 2, "is not an IPv4 address"),
    "listen-bracket-not-ipv6": (["serve-metrics", "--listen", "[zz]:80"], {}, b"", {}, 2,
                                "'zz' in brackets is not an IPv6 address"),
    "toml-deep-array": (["--config", "{tmp}/c.toml", "config", "check"], {}, b"", {"c.toml": DEEP_TOML.encode()},
                        2, "c.toml: invalid TOML: arrays or tables nested too deeply"),
    "toml-deep-inline-table": (["--config", "{tmp}/c.toml", "config", "check"], {}, b"",
                               {"c.toml": DEEP_INLINE_TOML.encode()}, 2, "nested too deeply"),
    "toml-int-too-big-for-float": (["--config", "{tmp}/c.toml", "config", "check"], {}, b"",
                                   {"c.toml": b"[service]\npoll_interval_secs = " + b"9" * 400 + b"\n"}, 2,
                                   "expected a number from 0.1 to 3600"),
    "toml-int-5000-digits": (["--config", "{tmp}/c.toml", "config", "check"], {}, b"",
                             {"c.toml": b"[storage]\nretention_days = " + b"9" * 5000 + b"\n"}, 2,
                             "invalid TOML: Exceeds the limit (4300 digits)"),
    "rule-regex-repeat-overflow": (["--config", "{tmp}/c.toml", "config", "check"], {}, b"",
                                   {"c.toml": b'[[classify.rules]]\ncmdline = "a{4294967296}"\n'
                                              b'category = "ml_training"\n'}, 2,
                                   "is not a valid regular expression: the repetition number is too large"),
    "rule-regex-too-deep": (["--config", "{tmp}/c.toml", "config", "check"], {}, b"",
                            {"c.toml": b'[[classify.rules]]\ncmdline = "' + b"(" * 5000 + b")" * 5000
                                       + b'"\ncategory = "ml_training"\n'}, 2, "nested too deeply"),
    "usage-error-one-line": (["--config", "{tmp}", "config", "check"], {}, b"", {}, 2,
                             "is a directory. (see 'gpm --help')"),
    "classify-deep-json": (["classify"], {}, b'{"name": "ok"}\n' + DEEP_JSON.encode() + b"\n", {}, 1,
                           "stdin:2: not valid JSON: arrays or objects nested too deeply"),
    "classify-bad-utf8-stdin": (["classify"], {}, b'{"name": "ok"}\n\n{"name": "b\xff"}\n', {}, 1,
                                "stdin:3: not UTF-8 text"),
    "classify-bad-utf8-file": (["classify", "-i", "{tmp}/in.jsonl"], {}, b"",
                               {"in.jsonl": b'{"name": "\xfe"}\n'}, 1, "in.jsonl:1: not UTF-8 text"),
    "classify-unreadable-input": (["classify", "-i", "/proc/self/mem"], {}, b"", {}, 1,
                                  "/proc/self/mem:1: cannot read: Input/output error"),
    "report-since-too-long-ago": (["report", "--since", "9999999d"], {}, b"", {}, 2,
                                  "--since '9999999d' is out of range: times from 1970-01-01 to 9999-01-01"),
    "report-since-overflow": (["report", "--since", "99999999999999999999999999w"], {}, b"", {}, 2,
                              "is out of range"),
    "report-until-past-9999": (["report", "--until", "9999-12-31T23:59-23:59"], {}, b"", {}, 2,
                               "--until '9999-12-31T23:59-23:59' is out of range"),
    "report-week-9999": (["report", "--week", "9999-W52"], {}, b"", {}, 2,
                         "--week '9999-W52' is out of range: weeks of the years 1970 to 9998"),
    "report-output-no-folder": (["report", "-o", MISSING + "/r.txt"], {}, b"", {}, 2,
                                f"{MISSING} does not exist"),
    "report-tz-offset-too-big": (["report"], {"TZ": "XXX-25:59"}, b"", {}, 2,
                                 "TZ='XXX-25:59': a UTC offset of +24:59 is out of range"),
    "report-tz-minus-24": (["report", "--week", "2026-W47"], {"TZ": "UTC+24"}, b"", {}, 2,
                           "TZ='UTC+24': a UTC offset of -24:00"),
    "export-since-overflow": (["export", "-t", "gpu_metrics", "--since", "99999999999999999999999999w"], {}, b"",
                              {}, 2, "too long ago"),
    "export-output-no-folder": (["export", "-t", "gpu_metrics", "-o", MISSING + "/x.csv"], {}, b"", {}, 2,
                                f"--output {MISSING}/x.csv: {MISSING} does not exist"),
    "export-parquet-no-folder": (["export", "-t", "gpu_metrics", "-o", MISSING + "/x.parquet"], {}, b"", {}, 2,
                                 "does not exist"),
    "export-output-folder-is-file": (["export", "-t", "gpu_metrics", "-o", "{tmp}/f/x.csv"], {}, b"",
                                     {"f": b""}, 2, "f is not a folder"),
    "config-init-unwritable": (["config", "init", "--path", "/proc/version", "--force"], {}, b"", {}, 1,
                               "/proc/version: cannot write"),
}


def _fill(value: str, tmp: Path) -> str:
    return value.replace("{tmp}", str(tmp))


def _assert_one_clean_line(stderr: str, fragment: str) -> None:
    assert "internal error" not in stderr and "Traceback" not in stderr, stderr
    assert stderr.startswith("gpm: ") and stderr.count("\n") == 1 and stderr.endswith("\n"), stderr
    assert fragment in stderr, stderr


@pytest.mark.parametrize("case", list(CASES))
def test_problem_is_one_line(case, tmp_path):
    argv, env, stdin, files, code, fragment = CASES[case]
    assert not Path(MISSING).exists()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    env = {"GPM_DB": str(tmp_path / "gpm.db"), **{k: _fill(v, tmp_path) for k, v in env.items()}}
    proc = subprocess.run([sys.executable, "-m", "gpm", *(_fill(a, tmp_path) for a in argv)],
                          env=gpm_env(env), input=stdin, capture_output=True, timeout=60, cwd=tmp_path)
    stderr = proc.stderr.decode("utf-8", "backslashreplace")
    assert proc.returncode == code, stderr
    _assert_one_clean_line(stderr, fragment)


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write into: a read-only tmpfs (root), else mode 0555."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("argv, name", [(["export", "-t", "gpu_metrics"], "out.csv"),
                                        (["export", "-t", "gpu_metrics"], "out.parquet"),
                                        (["report"], "out.txt")], ids=["csv", "parquet", "report"])
def test_output_unwritable(argv, name, read_only_folder, tmp_path):
    target = read_only_folder / name
    proc = subprocess.run([sys.executable, "-m", "gpm", *argv, "-o", str(target)],
                          env=gpm_env({"GPM_DB": str(tmp_path / "gpm.db")}), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1, proc.stderr
    _assert_one_clean_line(proc.stderr, f"{target}: cannot write: ")
    assert not target.exists() and list(read_only_folder.iterdir()) == []


def test_deep_json_from_ollama_is_not_json(tmp_path):
    """5,000 nested arrays from Ollama's /api/version: "answer is not JSON", not an internal error."""
    body = DEEP_JSON.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        proc = subprocess.run([sys.executable, "-m", "gpm", "ollama-watch", "--api-url", url],
                              env=gpm_env({"GPM_DB": str(tmp_path / "gpm.db")}), capture_output=True, text=True,
                              timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"gpm: warning: Ollama is down: {url}/api/version: answer is not JSON\n"


# --- a closed pipe -----------------------------------------------------------

@pytest.fixture
def sampled_db(tmp_path, fake_nvml):
    """A database with a few samples of the fake GPU."""
    db = tmp_path / "gpm.db"
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-m", "gpm", "--db", str(db), "sample"],
                              env=gpm_env(fake_nvml.env()), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    return db


@pytest.mark.parametrize("argv", [
    ["export", "-t", "gpu_metrics"], ["export", "-t", "gpu_metrics", "-f", "jsonl"], ["export", "-t", "gpus"],
    ["report"], ["sample", "--json", "--no-store"], ["--help"], ["report", "--help"],
], ids=" ".join)
def test_reader_gone_exits_quietly(argv, sampled_db, fake_nvml):
    """``gpm ... | head``, with the reader gone before gpm writes: exit 0 and nothing on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before gpm writes its first byte
    try:
        proc = subprocess.run([sys.executable, "-m", "gpm", "--db", str(sampled_db), *argv],
                              env=gpm_env(fake_nvml.env()), stdout=write_end, stderr=subprocess.PIPE,
                              timeout=60)
    finally:
        os.close(write_end)
    stderr = proc.stderr.decode()
    assert (proc.returncode, stderr) == (0, ""), stderr  # also no "Exception ignored ... BrokenPipeError"


# --- Ctrl-C ------------------------------------------------------------------

SIGINT_DELAYS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.6, 1.0)


@pytest.mark.parametrize("argv", [["sample", "--follow", "-i", "0.2"], ["report"]], ids=" ".join)
def test_ctrl_c_at_any_moment(argv, tmp_path, fake_nvml):
    """SIGINT at several moments of a run, imports included: never a traceback of gpm's.

    Each run ends in a documented way: 130 and "gpm: interrupted"; ended by
    the signal (the shell shows 130), silently, before gpm's main() or after
    its work, while the interpreter exits; or 0 when the run was done, or
    stopped as `--follow` documents. Python runs
    with -S (its site-packages on PYTHONPATH instead): ``site`` imports the
    editable install's path finder before any gpm code, and a Ctrl-C there
    is the interpreter's to report, as is one while it imports runpy: those
    tracebacks hold no frame of gpm, which had not started.
    """
    env = gpm_env(fake_nvml.env())
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])
    command = [sys.executable, "-S", "-m", "gpm", "--db", str(tmp_path / "gpm.db"), *argv]
    for delay in SIGINT_DELAYS:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        stderr = err.decode()
        assert "internal error" not in stderr, (delay, stderr)
        if "Traceback" in stderr:  # the interpreter's start-up, before any gpm code ran: no frame of gpm's
            # (the package's path may still show, as importlib's "KeyError: '.../gpm'" while it finds it)
            assert f'File "{REPO / "gpm"}{os.sep}' not in stderr and proc.returncode in (1, -signal.SIGINT), (
                delay, stderr)
        elif proc.returncode == 130:
            assert stderr.strip() == "gpm: interrupted", (delay, stderr)
        else:
            assert proc.returncode in (0, -signal.SIGINT) and stderr == "", (delay, proc.returncode, stderr)
    # Once gpm's main() has taken over, however long the start-up took on a
    # busy machine: 130 and the one line, or 0 where --follow stops as documented.
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_gpm_main(proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    ended = (proc.returncode, err.decode().strip())
    assert ended in [(130, "gpm: interrupted"), (0, "")] if argv[0] == "sample" else [(130, "gpm: interrupted")], ended


def test_ctrl_c_in_code_run_from_a_string_exits_130_not_by_the_signal(tmp_path):
    """A Ctrl-C that lands while Python runs code from a string (a dataclass
    being defined by a lazy import) is caught like any other: 130 after the
    message. CPython marked it unhandled and, under ``-m``, ended the process
    by SIGINT after ``sys.exit(130)`` (the test above saw -2 now and then)."""
    (tmp_path / "interrupted_in_exec.py").write_text(
        "import gpm.cli\n"
        "def _invoke(argv):\n"
        "    exec('import os, signal, time; os.kill(os.getpid(), signal.SIGINT); time.sleep(5)')\n"
        "gpm.cli._invoke = _invoke\n"
        "gpm.cli.main()\n")
    assert _run_module(tmp_path, "interrupted_in_exec") == (130, "gpm: interrupted")


def test_an_error_that_a_ctrl_c_caused_is_the_interrupt_not_an_internal_error(tmp_path):
    """Python can turn a KeyboardInterrupt into another exception (an import
    it cut short once ended in "TypeError: expected a message argument"):
    after a Ctrl-C reached gpm, that is 130 and "gpm: interrupted"."""
    (tmp_path / "interrupt_then_error.py").write_text(
        "import os, signal, click, gpm.cli\n"
        "@click.command()\n"
        "def boom():\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        signal.pause()\n"
        "    except KeyboardInterrupt:\n"
        "        raise TypeError('expected a message argument') from None\n"
        "gpm.cli.cli.add_command(boom)\n"
        "gpm.cli.main(['boom'])\n")
    assert _run_module(tmp_path, "interrupt_then_error") == (130, "gpm: interrupted")


def _run_module(folder: Path, name: str) -> tuple[int, str]:
    """``python -m NAME`` (the module in ``folder``), as ``python -m gpm`` runs: exit code and stderr."""
    proc = subprocess.run([sys.executable, "-m", name], capture_output=True, text=True, timeout=60,
                          env=gpm_env({"PYTHONPATH": os.pathsep.join([str(REPO), str(folder)])}))
    return proc.returncode, proc.stderr.strip()


def _wait_for_gpm_main(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until main() handles SIGINT: the signal is caught again (``__main__``
    leaves it at its default while importing) after gpm.cli's imports
    (``_sqlite3`` is mapped: Python's start-up, which catches it too, has not
    loaded it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        except OSError:
            continue
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if caught & (1 << (signal.SIGINT - 1)) and "_sqlite3" in maps:
            return
        time.sleep(0.005)
    raise AssertionError("gpm's main() never took over SIGINT")


# --- the config loader, fuzzed ------------------------------------------------

_KEYS = [(k.section, k.name) for k in SCHEMA]
_scalars = st.one_of(
    st.booleans(), st.integers(), st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["http://[::1", "http://h:99999", "http://[zz]:1", "999.1.1.1:80", "[x]:1", ":0", "a\0b",
                     "http://127.0.0.1:11434", "127.0.0.1:9", "1e400", "nan", "~", "", "(", "a{4294967296}"]),
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value == float("inf") else
                                             "-inf" if value == float("-inf") else repr(value))
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                             if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"


@st.composite
def _documents(draw) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=200))  # anything at all, valid TOML or not
    lines = []
    for section, name in draw(st.lists(st.sampled_from(_KEYS) | st.tuples(st.text(max_size=6),
                                                                            st.text(max_size=6)), max_size=6)):
        value = draw(_values)
        lines += [f"[{_toml(section)}]", f"{_toml(name)} = {_toml(value)}"]
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=_documents(), env=st.dictionaries(st.sampled_from([k.env_var for k in SCHEMA]),
                                                   st.text(max_size=20).filter(lambda s: "\0" not in s),
                                                   max_size=3))
def test_config_loader_fuzzed(document, env, tmp_path):
    """Random TOML documents and GPM_* values: a valid Config or a one-line ConfigError, nothing else."""
    path = tmp_path / "fuzz.toml"
    path.write_text(document, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load_config(path, env=env)
    except ConfigError as err:
        assert "\n" not in str(err) and str(err)
        return
    assert isinstance(cfg, Config)
    for key in SCHEMA:
        value = cfg[key.dotted]
        if key.type in ("str", "path", "url", "listen"):
            assert isinstance(value, str) and "\0" not in value
        if key.type == "url" and cfg.source(key.dotted) != "default":
            assert value.startswith(("http://", "https://"))
