"""Where an alert event is told: a log line, the desktop, a command hook, a webhook.

Each channel delivers one event and raises ``DeliveryError`` with a one-line
reason when it cannot; ``ready()`` says why a channel is not used at all
(not configured, or no session bus). The channels block (a hook may run for
``hook_timeout_secs``, a webhook retries): ``gpm.alerts.dispatch`` runs them
on a worker thread, so that sampling never waits for them.

A hook and a webhook receive the same JSON object: the event
(``AlertEvent.to_json``) with ``"version": 1`` added (docs/alerts.md, "Event
JSON"). A webhook URL may carry a token in its path or query, so logs and
messages show it only as ``scheme://host/…`` (``shown_url``).
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from gpm import __version__
from gpm.alerts.event import AlertEvent
from gpm.humanize import cut, visible

log = logging.getLogger("gpm.alerts")

PAYLOAD_VERSION = 1
DESKTOP_TIMEOUT_SECS = 5.0
BACKOFF_SECS = 1.0  # first wait before a webhook retry; doubled each time
BACKOFF_MAX_SECS = 30.0
URGENCY = {"info": "low", "warning": "normal", "critical": "critical"}
LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}
REASON_WIDTH = 120  # a hook's last stderr line, in a log line


class DeliveryError(Exception):
    """A channel could not deliver; ``str()`` is one line fit for a log (no secret in it)."""


def payload(event: AlertEvent) -> dict:
    """The JSON object a hook reads on stdin and a webhook receives."""
    return {"version": PAYLOAD_VERSION, **event.to_json()}


def shown_url(url: str) -> str:
    """``https://hooks.example.com/…``: a webhook URL as logs may show it (its
    path, query and any user:password may hold a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    host = f"[{host}]" if ":" in host else host
    return visible(f"{parts.scheme}://{host}{port}/…")


class HiddenUrls(logging.Filter):
    """Drops urllib3's debug lines that quote a webhook's path and query
    (``"POST /hooks/TOKEN HTTP/1.1" 200``): they may hold its token."""

    LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry")

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)

    def hide(self, url: str) -> None:
        try:
            parts = urlsplit(url)
        except ValueError:
            return
        rest = parts.path + (f"?{parts.query}" if parts.query else "")
        if rest.strip("/"):
            self.secrets.add(rest)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        text = record.getMessage()
        return not any(secret in text for secret in self.secrets)


_hidden: HiddenUrls | None = None


def hide_url(url: str) -> None:
    """Keep ``url``'s path and query out of urllib3's debug lines from now on."""
    global _hidden
    if _hidden is None:
        _hidden = HiddenUrls()
    _hidden.hide(url)


def subject(event: AlertEvent) -> str:
    """What the alert is about, for a person: ``GPU 0``, ``/data``, or the host."""
    if event.gpu_index is not None:
        return f"GPU {event.gpu_index}"
    if event.subject:
        return visible(event.subject)
    return visible(event.host)


class Channel:
    """One way of telling. ``name`` is what ``gpm alerts test`` and the logs call it."""

    name = "?"

    def ready(self) -> str | None:
        """None when the channel can be used; else why not, starting with
        ``not configured`` (the user did not ask for it) or ``skipped``."""
        return None

    def deliver(self, event: AlertEvent) -> None:
        """Tell ``event``; raise DeliveryError saying why it failed. Every channel defines it
        (log, desktop, hook, webhook): a Channel itself is never used."""
        raise NotImplementedError

    def abort(self) -> None:
        """Stop a delivery in progress (the dispatcher is closing); no-op by default."""


class LogChannel(Channel):
    """One line in gpm's log: a firing alert at its severity's level, a resolution at info."""

    name = "log"

    def deliver(self, event: AlertEvent, note: str = "") -> None:
        # The same words as gpm.alerts.sinks.log_event: one log line, whichever sink wrote it.
        if event.state == "firing":
            log.log(LEVEL.get(event.severity, logging.WARNING), "%s alert %s: %s%s",
                    visible(event.severity), visible(event.rule), visible(event.message), note)
        else:
            log.info("resolved alert %s: %s%s", visible(event.rule), visible(event.message), note)


@dataclass(eq=False)
class ProgramRunner:
    """Runs one program at a time, without a shell, in its own process group,
    so that a timeout or ``abort`` kills it and every child it started."""

    timeout_secs: float
    _proc: subprocess.Popen | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _aborted: bool = field(default=False, init=False)

    def run(self, argv: list[str], *, stdin: bytes = b"", env: Mapping[str, str] | None = None) -> None:
        name = visible(Path(argv[0]).name)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=None if env is None else dict(env),
                                    start_new_session=True)
        except OSError as err:
            raise DeliveryError(f"{name}: cannot run: {err.strerror or type(err).__name__}") from None
        with self._lock:
            self._proc = proc
        try:
            _, err = proc.communicate(stdin, timeout=self.timeout_secs)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            proc.communicate()
            raise DeliveryError(f"{name}: timed out after {self.timeout_secs:g} s (killed)") from None
        finally:
            with self._lock:
                self._proc = None
        if proc.returncode != 0:
            if self._aborted:
                raise DeliveryError(f"{name}: killed, gpm was exiting")
            how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
            last = next((line for line in reversed(err.decode(errors="replace").splitlines()) if line.strip()), "")
            raise DeliveryError(f"{name}: {how}" + (f": {cut(visible(last.strip()), REASON_WIDTH)}" if last else ""))

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            if self._proc is not None:
                self._kill(self._proc)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def session_bus(env: Mapping[str, str]) -> str | None:
    """The D-Bus session bus address: ``$DBUS_SESSION_BUS_ADDRESS``, or the
    user bus socket (``$XDG_RUNTIME_DIR/bus``, as systemd makes one) when
    the variable is not set (a cron job, a user service)."""
    if env.get("DBUS_SESSION_BUS_ADDRESS"):
        return env["DBUS_SESSION_BUS_ADDRESS"]
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    bus = Path(runtime) / "bus"
    return f"unix:path={bus}" if bus.is_socket() else None


class DesktopChannel(Channel):
    """``notify-send`` with the severity as urgency, when a session bus is there."""

    name = "desktop"

    def __init__(self, enabled: bool, env: Mapping[str, str]) -> None:
        self.enabled = enabled
        self.env = dict(env)
        self.bus = session_bus(env)
        self.program = shutil.which("notify-send", path=env.get("PATH", os.defpath))
        self.runner = ProgramRunner(DESKTOP_TIMEOUT_SECS)

    def ready(self) -> str | None:
        if not self.enabled:
            return "not configured: [alerts] notify_desktop = false"
        if self.bus is None:
            return "skipped: no session bus"
        if self.program is None:
            return "skipped: notify-send not found"
        return None

    def deliver(self, event: AlertEvent) -> None:
        assert self.program is not None and self.bus is not None
        title = f"gpm: {visible(event.rule)} {event.state} on {subject(event)}"
        # Notification servers read the body as markup.
        body = html.escape(visible(event.message), quote=False)
        self.runner.run([self.program, "--app-name=gpm", f"--urgency={URGENCY.get(event.severity, 'normal')}",
                         title, body], env={**self.env, "DBUS_SESSION_BUS_ADDRESS": self.bus})

    def abort(self) -> None:
        self.runner.abort()


class HookChannel(Channel):
    """``[alerts] hook_command``: the event as JSON on stdin and as ``GPM_ALERT_*`` variables."""

    name = "hook"

    def __init__(self, argv: list[str], timeout_secs: float, env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.runner = ProgramRunner(timeout_secs)

    def ready(self) -> str | None:
        return None if self.argv else "not configured: [alerts] hook_command is empty"

    def deliver(self, event: AlertEvent) -> None:
        data = json.dumps(payload(event), ensure_ascii=False).encode() + b"\n"
        self.runner.run(self.argv, stdin=data, env={**self.env, **event.environment()})

    def abort(self) -> None:
        self.runner.abort()


class WebhookChannel(Channel):
    """``[alerts] webhook_url``: a JSON POST, retried with a doubling backoff.

    A 2xx answer is success; a 4xx other than 408 and 429 is not retried (the
    request itself is wrong); anything else is retried ``retries`` times.
    ``wait(secs)`` sleeps between attempts and returns True to give up (the
    dispatcher is closing).
    """

    name = "webhook"

    def __init__(self, url: str, timeout_secs: float, retries: int,
                 wait: Callable[[float], bool] | None = None) -> None:
        self.url = url
        hide_url(url)
        self.timeout_secs = timeout_secs
        self.retries = retries
        self.wait = wait or _sleep

    def ready(self) -> str | None:
        return None if self.url else "not configured: [alerts] webhook_url is empty"

    def deliver(self, event: AlertEvent) -> None:
        import requests  # 60 ms of imports that a sample without a webhook skips

        body = payload(event)
        why, tries = "", 0
        for attempt in range(self.retries + 1):
            if attempt and self.wait(min(BACKOFF_MAX_SECS, BACKOFF_SECS * 2 ** (attempt - 1))):
                break
            tries += 1
            try:
                resp = requests.post(self.url, json=body, timeout=self.timeout_secs, allow_redirects=False,
                                     headers={"User-Agent": f"gpm/{__version__}"})
            except requests.Timeout:
                why = f"no answer within {self.timeout_secs:g} s"
                continue
            except requests.ConnectionError:
                why = "cannot connect"
                continue
            except requests.RequestException as err:  # its text may quote the URL: name only the kind
                why = type(err).__name__
                continue
            if 200 <= resp.status_code < 300:
                return
            why = f"HTTP {resp.status_code}"
            if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                break
        raise DeliveryError(f"{shown_url(self.url)}: {why} ({tries} attempt{'s' if tries != 1 else ''})")


def _sleep(secs: float) -> bool:
    threading.Event().wait(secs)
    return False


def channels_from_config(cfg: Any, env: Mapping[str, str] | None = None,
                         wait: Callable[[float], bool] | None = None) -> list[Channel]:
    """Every channel but the log, configured or not, in the order they are tried."""
    env = os.environ if env is None else env
    return [
        DesktopChannel(bool(cfg.get("alerts.notify_desktop")), env),
        HookChannel(list(cfg.get("alerts.hook_command")), float(cfg.get("alerts.hook_timeout_secs")), env),
        WebhookChannel(str(cfg.get("alerts.webhook_url")), float(cfg.get("alerts.webhook_timeout_secs")),
                       int(cfg.get("alerts.webhook_retries")), wait),
    ]
