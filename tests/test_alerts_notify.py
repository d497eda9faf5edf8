"""Alert notifications (#15.3): a hook and a webhook get the documented JSON,
nothing they do holds up a sample, each alert is told once per interval,
and a webhook's token never reaches a log.

Real child processes (a hook script the test writes), real HTTP servers on
127.0.0.1 (a receiver, and a socket that accepts and never answers), an
injected clock for the rate limit.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from gpm.alerts.channels import Channel, HookChannel, WebhookChannel, payload, shown_url
from gpm.alerts.dispatch import Dispatcher
from gpm.alerts.event import AlertEvent
from gpm.config import load_config
from tests.fakes.webhook import receivers, refused, silent_server

STARTED_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def make_event(**changes) -> AlertEvent:
    fields = dict(rule="temperature", host="box", severity="warning", started_ms=STARTED_MS,
                  message="GPU 0 at 91 °C, above 85 °C", gpu_index=0, gpu_uuid="GPU-0a1b", value=91.0,
                  peak=93.0, id=7)
    fields.update(changes)
    return AlertEvent(**fields)


def toml_value(value) -> str:
    return json.dumps(value)  # strings, numbers, booleans and lists of strings read the same in TOML


def alerts_config(tmp_path: Path, **keys):
    """A Config whose [alerts] has ``keys`` (no desktop unless asked)."""
    keys.setdefault("notify_desktop", False)
    path = tmp_path / "config.toml"
    path.write_text("[alerts]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items()))
    return load_config(path)


def write_script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def recording_hook(tmp_path: Path) -> tuple[Path, Path]:
    """A hook that writes what it got (stdin, its GPM_ALERT_* variables, argv) to a file."""
    out = tmp_path / "hook-got.json"
    hook = write_script(tmp_path / "hook.py", f"""\
import json, os, sys
got = {{"stdin": sys.stdin.read(), "argv": sys.argv[1:],
        "env": {{k: v for k, v in os.environ.items() if k.startswith("GPM_ALERT_")}}}}
with open({str(out)!r}, "a") as f:
    f.write(json.dumps(got) + "\\n")
""")
    return hook, out


def hanging_hook(tmp_path: Path) -> tuple[Path, Path]:
    """A hook that writes its pid, then sleeps a minute."""
    pid_file = tmp_path / "hook.pid"
    hook = write_script(tmp_path / "hang.py", f"""\
import os, time
open({str(pid_file)!r}, "w").write(str(os.getpid()))
time.sleep(60)
""")
    return hook, pid_file


@pytest.fixture
def receiver():
    with receivers() as start:
        yield start


@pytest.fixture
def silent_url():
    with silent_server() as url:
        yield url


@pytest.fixture
def refused_url():
    return refused()


def no_bus_env() -> dict:
    env = dict(os.environ)
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env["XDG_RUNTIME_DIR"] = "/nonexistent"
    return env


def test_the_hook_reads_the_event_as_json_on_stdin_and_as_variables(tmp_path):
    hook, out = recording_hook(tmp_path)
    cfg = alerts_config(tmp_path, hook_command=[str(hook), "--from-gpm"])
    dispatcher = Dispatcher(cfg, env=no_bus_env())
    event = make_event()
    dispatcher.send(event)
    assert dispatcher.close(10)
    got = json.loads(out.read_text())
    assert json.loads(got["stdin"]) == {
        "version": 1, "id": 7, "rule": "temperature", "host": "box", "gpu_index": 0, "gpu_uuid": "GPU-0a1b",
        "subject": None, "severity": "warning", "state": "firing", "started": "2025-11-24T16:00:00Z",
        "resolved": None, "value": 91.0, "peak": 93.0, "message": "GPU 0 at 91 °C, above 85 °C",
    }
    assert got["argv"] == ["--from-gpm"]
    assert got["env"] == {
        "GPM_ALERT_ID": "7", "GPM_ALERT_RULE": "temperature", "GPM_ALERT_HOST": "box",
        "GPM_ALERT_GPU_INDEX": "0", "GPM_ALERT_GPU_UUID": "GPU-0a1b", "GPM_ALERT_SUBJECT": "",
        "GPM_ALERT_SEVERITY": "warning", "GPM_ALERT_STATE": "firing", "GPM_ALERT_STARTED": "2025-11-24T16:00:00Z",
        "GPM_ALERT_RESOLVED": "", "GPM_ALERT_VALUE": "91.0", "GPM_ALERT_PEAK": "93.0",
        "GPM_ALERT_MESSAGE": "GPU 0 at 91 °C, above 85 °C",
    }


def test_the_webhook_receives_the_event_as_a_json_post(tmp_path, receiver):
    server = receiver()
    cfg = alerts_config(tmp_path, webhook_url=server.url + "/alerts?token=s3cret")
    dispatcher = Dispatcher(cfg, env=no_bus_env())
    event = make_event(resolved_ms=STARTED_MS + 90_000, value=79.0)
    dispatcher.send(event)
    assert dispatcher.close(10)
    [req] = server.requests
    assert req["path"] == "/alerts?token=s3cret"
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["User-Agent"].startswith("gpm/")
    assert req["json"] == payload(event)
    assert req["json"]["state"] == "resolved" and req["json"]["resolved"] == "2025-11-24T16:01:30Z"


def test_a_hanging_hook_and_a_silent_webhook_never_delay_a_sample(tmp_path, silent_url, caplog):
    """Twenty samples stored while the hook sleeps a minute and the webhook
    never answers: each send returns at once, each sample takes what it takes
    without them; close() gives up at its timeout and kills the hook."""
    from gpm.gpu.sample import GpuSample
    from gpm.sampling import Sampler
    from gpm.store.db import open_db

    hook, pid_file = hanging_hook(tmp_path)
    cfg = alerts_config(tmp_path, hook_command=[str(hook)], hook_timeout_secs=60,
                        webhook_url=silent_url, webhook_timeout_secs=60, webhook_retries=5)
    dispatcher = Dispatcher(cfg, env=no_bus_env(), queue_size=4)
    conn = open_db(tmp_path / "gpm.db")
    sampler = Sampler(load_config(), conn=conn, enrichers=[], host="box")
    sends, samples = [], []
    for i in range(20):
        t0 = time.perf_counter()
        sampler.store([GpuSample(STARTED_MS + i * 1000, 0, "nvml", uuid="GPU-0a1b", name="RTX 4090",
                                 temperature_celsius=91, processes=[])])
        t1 = time.perf_counter()
        dispatcher.send(make_event(gpu_index=i, gpu_uuid=f"GPU-{i}", id=i))  # 20 alerts: none rate-limited
        t2 = time.perf_counter()
        sends.append(t2 - t1)
        samples.append(t2 - t0)
    assert max(sends) < 0.05, sends
    assert max(samples) < 1.0, samples
    assert conn.execute("SELECT count(*) FROM gpu_samples").fetchone()[0] == 20
    conn.close()
    for _ in range(100):  # the hook did start, on the worker thread
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, "gpm.alerts"):
        assert dispatcher.close(0.5) is False
    assert time.perf_counter() - t0 < 2.0
    assert "dropped for hook, webhook" in caplog.text  # a queue of 4 cannot hold 20
    assert "not delivered within 0.5 s, given up" in caplog.text
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the hanging hook {pid} was not killed")


def test_a_hook_that_times_out_or_fails_is_one_log_line_naming_it(tmp_path, caplog):
    failing = write_script(tmp_path / "notify-me.py", "import sys\nprint('no route to pager', file=sys.stderr)\n"
                                                    "sys.exit(3)\n")
    hang, _ = hanging_hook(tmp_path)
    with caplog.at_level(logging.WARNING, "gpm.alerts"):
        for argv, timeout in (([str(failing)], 10), ([str(hang)], 0.3), ([str(tmp_path / "missing")], 10)):
            dispatcher = Dispatcher(alerts_config(tmp_path, hook_command=argv, hook_timeout_secs=timeout),
                                    env=no_bus_env())
            dispatcher.send(make_event())
            assert dispatcher.close(10)
    failures = [r.getMessage() for r in caplog.records if "hook failed" in r.getMessage()]
    assert failures == [
        "alert temperature firing: hook failed: notify-me.py: exit status 3: no route to pager",
        "alert temperature firing: hook failed: hang.py: timed out after 0.3 s (killed)",
        "alert temperature firing: hook failed: missing: cannot run: No such file or directory",
    ]


class Recorder(Channel):
    """A channel that notes what it was given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[tuple[str, int | None, str]] = []

    def deliver(self, event: AlertEvent) -> None:
        self.got.append((event.rule, event.gpu_index, event.state))


def test_each_alert_is_told_once_per_interval_and_a_resolution_always_goes(tmp_path, caplog):
    now = [0.0]
    recorder = Recorder("pager")
    dispatcher = Dispatcher(alerts_config(tmp_path, notify_min_interval_secs=300), channels=[recorder],
                            clock=lambda: now[0])
    steps = [  # (clock, event): the same alert fires, resolves and fires again (a new event each time)
        (0, make_event(id=1)),
        (10, make_event(id=1, value=95.0)),  # an update of the same event
        (20, make_event(id=1, resolved_ms=STARTED_MS + 20_000)),
        (30, make_event(id=2)),  # fires again within 300 s of the last firing: held
        (40, make_event(id=3, gpu_index=1, gpu_uuid="GPU-other")),  # another GPU: its own alert
        (50, make_event(id=4, rule="power")),  # another rule: its own alert
        (60, make_event(id=2, resolved_ms=STARTED_MS + 60_000)),
        (330, make_event(id=5)),  # 300 s after the last notification of this alert
    ]
    with caplog.at_level(logging.INFO, "gpm.alerts"):
        for at, event in steps:
            now[0] = at
            dispatcher.send(event)
        assert dispatcher.close(5)
    assert recorder.got == [("temperature", 0, "firing"), ("temperature", 0, "resolved"),
                            ("temperature", 1, "firing"), ("power", 0, "firing"),
                            ("temperature", 0, "resolved"), ("temperature", 0, "firing")]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == len(steps)  # the log line always goes
    assert logged[1] == ("warning alert temperature: GPU 0 at 91 °C, above 85 °C "
                         "[not sent to pager: sent less than 300 s ago]")
    assert logged[2] == "resolved alert temperature: GPU 0 at 91 °C, above 85 °C"
    assert [r.levelname for r in caplog.records[:3]] == ["WARNING", "WARNING", "INFO"]


def test_the_webhook_retries_with_backoff_and_a_client_error_is_not_retried(receiver):
    waits: list[float] = []

    def wait(secs: float) -> bool:
        waits.append(secs)
        return False

    flaky = receiver([503, 500, 204])
    WebhookChannel(flaky.url, 5, 3, wait).deliver(make_event())
    assert len(flaky.requests) == 3 and waits == [1.0, 2.0]
    waits.clear()
    broken = receiver([500])
    with pytest.raises(Exception, match=r"HTTP 500 \(3 attempts\)$"):
        WebhookChannel(broken.url + "/x", 5, 2, wait).deliver(make_event())
    assert len(broken.requests) == 3 and waits == [1.0, 2.0]
    gone = receiver([404])
    with pytest.raises(Exception, match=r"HTTP 404 \(1 attempt\)$"):
        WebhookChannel(gone.url, 5, 3, wait).deliver(make_event())
    assert len(gone.requests) == 1


def test_a_webhook_token_never_reaches_the_log(tmp_path, receiver, refused_url, silent_url, caplog):
    secret = "tok3n-SECRET"
    urls = [receiver([500]).url, receiver([401]).url, refused_url, silent_url]
    with caplog.at_level(logging.DEBUG):
        for base in urls:
            url = f"{base}/hooks/{secret}?key={secret}"
            cfg = alerts_config(tmp_path, webhook_url=url.replace("http://", f"http://user:{secret}@"),
                                webhook_retries=1, webhook_timeout_secs=0.3)
            dispatcher = Dispatcher(cfg, env=no_bus_env())
            dispatcher.send(make_event())
            assert dispatcher.close(10)
    text = caplog.text
    assert secret not in text
    port = refused_url.rsplit(":", 1)[1]
    assert f"webhook failed: http://127.0.0.1:{port}/…: cannot connect (2 attempts)" in text
    assert "HTTP 500 (2 attempts)" in text and "HTTP 401 (1 attempt)" in text
    assert "no answer within 0.3 s (2 attempts)" in text
    assert shown_url(f"https://user:{secret}@[::1]:8443/x?{secret}") == "https://[::1]:8443/…"


def test_the_desktop_notification_goes_through_notify_send_only_with_a_session_bus(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    got = tmp_path / "notify-send.json"
    write_script(bin_dir / "notify-send", f"import json, os, sys\nopen({str(got)!r}, 'w').write("
                                          "json.dumps([sys.argv[1:], os.environ.get('DBUS_SESSION_BUS_ADDRESS')]))\n")
    env = {**no_bus_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    cfg = alerts_config(tmp_path, notify_desktop=True)
    assert [o.line() for o in Dispatcher(cfg, env=env).test(make_event())][1] == "desktop: skipped: no session bus"
    assert not got.exists()
    env["DBUS_SESSION_BUS_ADDRESS"] = "unix:path=/run/user/1000/bus"
    event = make_event(severity="critical", message="<b>lost</b> & gone", rule="gpu_lost")
    assert [o.line() for o in Dispatcher(cfg, env=env).test(event)] == [
        "log: ok", "desktop: ok", "hook: not configured: [alerts] hook_command is empty",
        "webhook: not configured: [alerts] webhook_url is empty"]
    assert json.loads(got.read_text()) == [
        ["--app-name=gpm", "--urgency=critical", "gpm: gpu_lost firing on GPU 0", "&lt;b&gt;lost&lt;/b&gt; &amp; gone"],
        "unix:path=/run/user/1000/bus"]
    off = alerts_config(tmp_path, notify_desktop=False)
    assert Dispatcher(off, env=env).test(event)[1].line() == "desktop: not configured: [alerts] notify_desktop = false"


def test_a_hook_killed_at_close_takes_its_children_with_it(tmp_path):
    """A hook that is a shell script starting a sleep: killing the hook's process group ends the sleep too."""
    child_pid = tmp_path / "child.pid"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {child_pid}\nwait\n")
    hook.chmod(0o755)
    channel = HookChannel([str(hook)], 60, no_bus_env())
    dispatcher = Dispatcher(alerts_config(tmp_path), channels=[channel])
    dispatcher.send(make_event())
    for _ in range(100):
        if child_pid.exists() and child_pid.read_text().strip():
            break
        time.sleep(0.05)
    pid = int(child_pid.read_text())
    assert dispatcher.close(0.2) is False
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the hook's child outlived it")
