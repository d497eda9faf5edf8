"""The alert state machine: one per (rule, host, key), kept in ``alert_state``.

    (nothing) --condition true--> pending --held for_secs--> firing --past threshold -/+ margin--> (nothing)
        ^                            |
        +------condition false-------+

``key`` is the GPU (its UUID, or ``index:N``) for per-GPU rules, the folder
for ``disk_free``, "" for host rules. The state lives in the database, not
in memory, so a one-shot ``gpm sample`` every minute from cron continues
what the previous run saw: it fires once and resolves once. A rule fires
above its threshold (``disk_free``: below) and resolves only once the value
is back below ``threshold - margin`` (above ``threshold + margin``), so a
value hovering at the threshold makes one alert. A yes/no rule (threshold
None) is true for a value above 0. With a margin of 0 a value at the
threshold is neither: it keeps the state it finds.

Time is the observations' (``now_ms``, from the samples): no clock here.
``evaluate`` runs inside the caller's transaction and returns the events it
stored (firing or resolved); the caller hands them to its sinks after the
commit, so nothing is announced that a rollback took back.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Iterable

from gpm.alerts.event import AlertEvent
from gpm.alerts.messages import clear_level, message
from gpm.alerts.rules import Rule, rules_from_config
from gpm.alerts.sinks import Sink, tell
from gpm.store.alerts import (
    AlertState, delete_state, get_event, insert_event, load_states, save_state, update_event,
)
from gpm.store.db import write

# Rules about a moment, not a level: they fire at once, for_secs is how long they stay.
INSTANT_RULES = frozenset({"xid"})


@dataclass(slots=True)
class Observation:
    """One rule's value for one key at the moment evaluated.

    ``value`` None means nothing is known now (a failed GPU has no
    temperature): the state is left as it is. ``what`` names the subject for
    the message ("GPU 0 (NVIDIA ...)"), ``detail`` adds to it (throttle
    reasons, a failure, an error). ``since_ms`` is when the condition became
    true, when known better than "now" (a stall began before it is seen).
    """

    rule: str
    key: str
    value: float | None
    what: str
    gpu_index: int | None = None
    gpu_uuid: str | None = None
    subject: str = ""
    detail: str = ""
    since_ms: int | None = None


def breached(rule: Rule, value: float) -> bool:
    if rule.threshold is None:
        return value > 0
    return value < rule.threshold if rule.name == "disk_free" else value > rule.threshold


def cleared(rule: Rule, value: float) -> bool:
    """Strictly past threshold -/+ margin, as the Prometheus rules say it (docs/telemetry.md);
    a rule without a margin resolves as soon as its condition is false."""
    if rule.margin is None:  # a yes/no rule, or a count (ecc, sampler_stalled): back when no longer true
        return not breached(rule, value)
    level = clear_level(rule)
    return value > level if rule.name == "disk_free" else value < level


def worse(rule: Rule, a: float | None, b: float) -> float:
    if a is None:
        return b
    return min(a, b) if rule.name == "disk_free" else max(a, b)


class AlertEngine:
    """Evaluates observations against the configured rules; see the module docstring."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = {r.name: r for r in rules}

    @classmethod
    def from_config(cls, cfg) -> "AlertEngine":
        return cls(rules_from_config(cfg))

    def enabled(self, name: str) -> bool:
        rule = self.rules.get(name)
        return rule is not None and rule.enabled

    @property
    def any_enabled(self) -> bool:
        return any(r.enabled for r in self.rules.values())

    def evaluate(self, conn: sqlite3.Connection, host: str, observations: Iterable[Observation],
                 now_ms: int) -> list[AlertEvent]:
        """Step every observed state; inside the caller's transaction. Keys not observed are left alone."""
        wanted = [o for o in observations if o.value is not None and self.enabled(o.rule)]
        if not wanted:
            return []
        states = load_states(conn, host, {o.rule for o in wanted})
        events = []
        for o in wanted:
            event = self._step(conn, host, self.rules[o.rule], o, states.get((o.rule, o.key)), now_ms)
            if event is not None:
                events.append(event)
        return events

    def run(self, conn: sqlite3.Connection, host: str, observations: Iterable[Observation], now_ms: int,
            sinks: Iterable[Sink]) -> list[AlertEvent]:
        """``evaluate`` in a transaction of its own, then tell the sinks (for callers outside a sample)."""
        with write(conn):
            events = self.evaluate(conn, host, observations, now_ms)
        tell(sinks, events)
        return events

    def _step(self, conn: sqlite3.Connection, host: str, rule: Rule, o: Observation,
              st: AlertState | None, now_ms: int) -> AlertEvent | None:
        value = float(o.value)
        if st is None:
            if not breached(rule, value):
                return None
            st = AlertState(rule.name, o.key, o.since_ms if o.since_ms is not None else now_ms, now_ms,
                            value, value)
        elif st.alert_id is None:
            if not breached(rule, value):
                delete_state(conn, host, st)
                return None
            st.last_ms, st.value, st.peak = now_ms, value, worse(rule, st.peak, value)
        else:
            st.last_ms, st.value, st.peak = now_ms, value, worse(rule, st.peak, value)
            event = get_event(conn, st.alert_id)
            if event is None:  # the row was deleted by hand: start over
                delete_state(conn, host, st)
                return None
            event.value, event.peak = value, st.peak
            if cleared(rule, value):
                event.resolved_ms = now_ms
                event.message = self._message(rule, o, st, now_ms, resolved=True)
                update_event(conn, event)
                delete_state(conn, host, st)
                return event
            update_event(conn, event)
            save_state(conn, host, st)
            return None
        event = None
        for_ms = 0 if rule.name in INSTANT_RULES else round(rule.for_secs * 1000)
        if now_ms - st.since_ms >= for_ms:
            event = AlertEvent(rule=rule.name, host=host, severity=rule.severity, started_ms=st.since_ms,
                               message=self._message(rule, o, st, now_ms, resolved=False),
                               gpu_index=o.gpu_index, gpu_uuid=o.gpu_uuid, subject=o.subject,
                               value=value, peak=st.peak)
            st.alert_id = insert_event(conn, event)
        save_state(conn, host, st)
        return event

    @staticmethod
    def _message(rule: Rule, o: Observation, st: AlertState, now_ms: int, *, resolved: bool) -> str:
        return message(rule, resolved=resolved, what=o.what, value=st.value, peak=st.peak, detail=o.detail,
                       started_ms=st.since_ms, now_ms=now_ms, held_ms=now_ms - st.since_ms)
