"""``gpm ps``: the processes on each GPU now, classified."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import click

from gpm.classify.live import Classifier
from gpm.classify.rules import classify
from gpm.cli.context import AppContext, pass_app
from gpm.errors import EXIT_FAILURE, GpmError
from gpm.gpu.reader import open_reader
from gpm.humanize import Column, fmt_bytes, fmt_duration, table, terminal_size, visible
from gpm.store.samples import recall_identities


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


def _rows(samples, results) -> list[dict]:
    rows = []
    for s in samples:
        for p in s.processes:
            facts, decision = results[p.pid]
            d = p.details
            rows.append({
                "gpu_index": s.index, "gpu_uuid": s.uuid, "pid": p.pid, "user": facts.user,
                "name": p.name, "exe": facts.exe,
                "cmdline": d.cmdline if d else None,
                "start_time": _iso(facts.start_time_ms),
                "category": p.category, "label": p.label, "reason": p.reason,
                "used_memory_bytes": p.used_memory_bytes, "type": p.type,
                "sm_utilization_percent": p.sm_utilization_percent,
            })
    return rows


def _explain(pid: int, samples, results, clf) -> str:
    where = [(s, p) for s in samples for p in s.processes if p.pid == pid]
    if where:
        facts, decision = results[pid]
        head = f"PID {pid} on " + ", ".join(
            f"GPU {s.index} ({visible(s.name or s.uuid or '?')}, {fmt_bytes(p.used_memory_bytes)}, {p.type})"
            for s, p in where)
    else:
        facts = clf.facts(pid)
        if facts.gone:
            raise GpmError(f"pid {pid}: no such process (and not on any GPU)")
        decision = classify(facts, clf.context({facts.user}))
        head = f"PID {pid} (not on any GPU now: classified as if it were)"
    lines = [head]

    def put(key: str, value) -> None:
        if value not in (None, "", [], {}):
            lines.append(f"  {key + ':':<13}{visible(str(value))}")

    put("name", facts.name)
    put("exe", facts.exe)
    put("cmdline", " ".join(facts.cmdline))
    put("user", facts.user)
    if facts.start_time_ms is not None:
        put("started", f"{_iso(facts.start_time_ms)} ({fmt_duration(facts.age_seconds)} ago)")
    put("cwd", facts.cwd)
    put("parents", " < ".join(f"{p.name or '?'} ({p.pid})" for p in facts.parents))
    put("environment", " ".join(f"{k}={v}" for k, v in sorted(facts.environ.items())))
    put("unreadable", ", ".join(facts.unreadable))
    lines.append("signals:")
    lines += [f"  - {visible(s)}" for s in decision.signals]
    lines.append(f"decision: {decision.category} / {visible(decision.label)} (rule {decision.rule})")
    lines.append(f"  reason: {visible(decision.reason)}")
    return "\n".join(lines)


@click.command(short_help='Show the processes on each GPU with category, label and reason.')
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON Lines: one object per process per GPU (command line redacted).")
@click.option("--explain", "explain_pid", type=click.IntRange(min=1), metavar="PID",
              help="Print every signal seen for PID and which rule decided its category.")
@pass_app
def ps(app: AppContext, as_json: bool, explain_pid: int | None) -> None:
    """Show the processes on each GPU now: GPU, PID, user, name, category, label, memory, reason.

    Categories: gaming, llm_inference, ml_training, desktop, general_compute.
    Facts come from /proc (processes of other users may be partly unreadable;
    the reason says so). Nothing is stored.

    \b
    Exit codes: 0 ok; 1 a GPU failed to read (said on stderr; the others'
    processes are listed), --explain PID names no process, or another error;
    2 usage or config error; 69 no GPU backend could be opened.
    """
    cfg = app.config()
    reader = open_reader(cfg)
    try:
        samples = reader.read()
    finally:
        reader.close()
    recall_identities(cfg.db_file, cfg.hostname, samples)
    failed = [s for s in samples if not s.ok]
    for s in failed:  # a lost GPU's processes are unknown, not absent (#13.2)
        click.echo(f"gpm: {s.failure()}", err=True)
    _show(app, cfg, samples, as_json, explain_pid)
    if failed:
        sys.exit(EXIT_FAILURE)


def _show(app: AppContext, cfg, samples, as_json: bool, explain_pid: int | None) -> None:
    clf = Classifier(cfg)
    results = clf.enrich(samples)
    if explain_pid is not None:
        click.echo(_explain(explain_pid, samples, results, clf))
        return
    rows = _rows(samples, results)
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    if not rows:
        app.say("no processes on any GPU" if samples else "no GPUs found")
        return
    click.echo(_table(rows, terminal_size()[0]))


# Reason gives way first, then the label, the name and the user: the GPU,
# PID, category and memory always show (#13.1).
_COLUMNS = [Column("GPU", right=True), Column("PID", right=True), Column("User", min_width=4),
            Column("Name", min_width=6), Column("Category"), Column("Label", min_width=6),
            Column("Memory", right=True), Column("Reason", min_width=6)]


def _table(rows: list[dict], width: int) -> str:
    cells = [[r["gpu_index"], r["pid"], r["user"] or "?", r["name"] or "?", r["category"], r["label"],
              fmt_bytes(r["used_memory_bytes"]), r["reason"]] for r in rows]
    return table(_COLUMNS, cells, width, give_way=(7, 5, 3, 2))
