"""What ``gpm alerts`` shows: the alerts firing now and those resolved lately, as tables.

A library function, so that a script gets the same text without Click.
"""

from __future__ import annotations

from datetime import datetime

from gpm.alerts.channels import subject
from gpm.alerts.event import AlertEvent
from gpm.alerts.rules import RULES
from gpm.humanize import Column, cut, fmt_duration, table, visible

SEVERITY = {"info": "info", "warning": "warn", "critical": "crit"}
UNITS = {"celsius": "°C", "percent": "%", "errors": "", "intervals": "", "xid": ""}
HOST_IN_CELL = 12


def fmt_value(event: AlertEvent) -> str:
    """The worst value seen while firing (the last one without a peak), in the rule's unit;
    ``-`` for a yes/no rule."""
    value = event.peak if event.peak is not None else event.value
    unit = RULES[event.rule][1] if event.rule in RULES else ""
    if value is None or unit == "bool":
        return "-"
    if unit == "xid":
        return f"Xid {value:.0f}"
    return f"{value:.0f}{UNITS.get(unit, '')}" if float(value).is_integer() or abs(value) >= 10 \
        else f"{value:.1f}{UNITS.get(unit, '')}"


def _local(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%m-%d %H:%M")


def _rows(events: list[AlertEvent], now_ms: int, several_hosts: bool) -> list[list]:
    rows = []
    for e in events:
        on = subject(e)
        if several_hosts and e.gpu_index is not None:
            on = f"{cut(visible(e.host), HOST_IN_CELL)}:{on}"
        end = e.resolved_ms if e.resolved_ms is not None else now_ms
        rows.append([visible(e.rule), on, SEVERITY.get(e.severity, visible(e.severity)), _local(e.started_ms),
                     fmt_duration(max(0, end - e.started_ms) / 1000), fmt_value(e), visible(e.message)])
    return rows


def render_table(events: list[AlertEvent], *, since_ms: int, now_ms: int, width: int) -> str:
    """Two tables in ``width`` columns: the alerts firing now (oldest first)
    and those resolved since ``since_ms`` (latest first); a line each when
    there are none. Times are local; the message gives way first, then
    the subject (a folder's name can be long). Severity shows as
    info/warn/crit, to leave the message room in 80 columns."""
    firing = [e for e in events if e.resolved_ms is None]
    resolved = sorted((e for e in events if e.resolved_ms is not None), key=lambda e: -e.started_ms)
    several_hosts = len({e.host for e in events}) > 1
    columns = [Column("Rule"), Column("On"), Column("Sev"), Column("Started"),
               Column("For", right=True), Column("Peak", right=True), Column("Message", min_width=7)]
    out: list[str] = []
    since = datetime.fromtimestamp(since_ms / 1000).strftime("%Y-%m-%d %H:%M")
    for title, chosen in (("Firing now", firing), (f"Resolved since {since}", resolved)):
        if out:
            out.append("")
        if not chosen:
            out.append(f"{title}: none.")
            continue
        out += [f"{title} ({len(chosen)})", ""]
        out.append(table(columns, _rows(chosen, now_ms, several_hosts), width, give_way=(6, (1, 8), 0)))
    return "\n".join(out) + "\n"
