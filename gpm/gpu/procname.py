"""Cheap process names from /proc, for the sample hot path (no psutil import)."""

from __future__ import annotations

from gpm.humanize import os_text


def process_name(pid: int, proc: str = "/proc") -> str | None:
    """The kernel's short name (``comm``) of ``pid``; None if gone or hidden.

    A process in another PID namespace (a container) or one that exited since
    the driver listed it is normal, not an error.
    """
    try:
        with open(f"{proc}/{pid}/comm", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # One newline ends the file; a name may itself end with one (prctl).
    return os_text(data[:-1] if data.endswith(b"\n") else data) or None
