"""An alert event: one rule firing for one GPU (or host, or folder) until it resolves.

The same shape is a row of the ``alerts`` table, an object of
``gpm alerts --json``, the JSON a hook reads on stdin and a webhook
receives, and the ``GPM_ALERT_*`` variables a hook sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(slots=True)
class AlertEvent:
    """``subject`` tells apart alerts of one rule that are not about a GPU
    (the folder of ``disk_free``); it is "" otherwise. ``value`` is the last
    value seen, ``peak`` the worst while firing, in the rule's unit."""

    rule: str
    host: str
    severity: str
    started_ms: int
    message: str
    gpu_index: int | None = None
    gpu_uuid: str | None = None
    subject: str = ""
    resolved_ms: int | None = None
    value: float | None = None
    peak: float | None = None
    id: int | None = None

    @property
    def state(self) -> str:
        return "firing" if self.resolved_ms is None else "resolved"

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "rule": self.rule,
            "host": self.host,
            "gpu_index": self.gpu_index,
            "gpu_uuid": self.gpu_uuid,
            "subject": self.subject or None,
            "severity": self.severity,
            "state": self.state,
            "started": iso(self.started_ms),
            "resolved": iso(self.resolved_ms),
            "value": self.value,
            "peak": self.peak,
            "message": self.message,
        }

    def environment(self) -> dict[str, str]:
        """``GPM_ALERT_RULE`` ... for a hook: every JSON field, "" for null."""
        return {f"GPM_ALERT_{k.upper()}": "" if v is None else str(v) for k, v in self.to_json().items()}
