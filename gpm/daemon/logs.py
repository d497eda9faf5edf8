"""Daemon logging: one line per event on stderr, readable by people and journald.

Under systemd (``$JOURNAL_STREAM`` names our stderr) the journal stamps every
line itself, so lines carry no timestamp but a ``<N>`` syslog priority prefix,
which journald turns into the entry's priority and strips. A traceback is
folded into the same line: one event, one line, one journal entry.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from datetime import datetime, timezone

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
FORMATS = ("text", "json")

# logging level -> syslog priority (sd-daemon(3) prefixes)
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

JOB_LOGGER_PREFIX = "gpm.job."


def job_logger(name: str) -> logging.Logger:
    """The logger of one daemon job; its lines are tagged with the job's name."""
    return logging.getLogger(JOB_LOGGER_PREFIX + name)


def journald_stream(env=None, fd: int = 2) -> bool:
    """True when ``fd`` is the journal stream systemd gave us.

    ``$JOURNAL_STREAM`` is ``DEVICE:INODE`` of that stream; a child whose
    stderr was redirected inherits the variable, so the pair must match.
    """
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _one_line(text: str) -> str:
    return text.replace("\r", "").replace("\n", " | ")


class LineFormatter(logging.Formatter):
    """``text``: ``2025-01-31T12:00:00.123Z INFO sample: message``;
    ``json``: ``{"ts": ..., "level": ..., "logger": ..., "message": ...}``."""

    def __init__(self, fmt: str = "text", journald: bool = False) -> None:
        super().__init__()
        if fmt not in FORMATS:
            raise ValueError(fmt)
        self.fmt = fmt
        self.journald = journald

    @staticmethod
    def source(record: logging.LogRecord) -> str:
        name = record.name
        if name.startswith(JOB_LOGGER_PREFIX):
            return name[len(JOB_LOGGER_PREFIX):]
        return name[4:] if name.startswith("gpm.") else name

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += " | " + "".join(traceback.format_exception(*record.exc_info)).strip()
        ts = datetime.fromtimestamp(record.created, tz=timezone.utc)
        stamp = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>" if self.journald else ""
        if self.fmt == "json":
            obj = {} if self.journald else {"ts": stamp}
            obj.update(level=record.levelname.lower(), logger=self.source(record), message=message)
            return prefix + json.dumps(obj, ensure_ascii=False)
        line = f"{self.source(record)}: {_one_line(message)}"
        if self.journald:
            return prefix + line
        return f"{stamp} {record.levelname} {line}"


def setup_logging(level: str, fmt: str, stream=None) -> logging.Handler:
    """Route every gpm log record to one stderr handler in the chosen format."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter(fmt, journald_stream(fd=stream.fileno())))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    return handler


def apply_logging(handler: logging.Handler, level: str, fmt: str) -> None:
    """Change level and format in place (SIGHUP)."""
    formatter = handler.formatter
    journald = formatter.journald if isinstance(formatter, LineFormatter) else False
    handler.setFormatter(LineFormatter(fmt, journald))
    logging.getLogger().setLevel(LEVELS[level])
