"""Cheap process names from /proc, for the sample hot path (no psutil import)."""

from __future__ import annotations


def process_name(pid: int, proc: str = "/proc") -> str | None:
    """The kernel's short name (``comm``) of ``pid``; None if gone or hidden.

    A process in another PID namespace (a container) or one that exited since
    the driver listed it is normal, not an error.
    """
    try:
        with open(f"{proc}/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode(errors="replace") or None
    except OSError:
        return None
