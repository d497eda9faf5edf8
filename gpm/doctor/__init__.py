"""``gpm doctor``: look for what a user cannot see at a glance, and say what to do.

Each check is a plain function ``check_x(setup) -> list[Finding]``; ``CHECKS``
lists them in the order they are shown. Checks only read: they open the
database read-only and probe locks through ``/proc/locks`` (taking a lock,
even for a moment, could make a concurrent ``gpm report`` give up). A
finding may carry a ``repair``: a safe repair that ``apply_fixes`` runs only
when asked (``gpm doctor --fix``), and only on files gpm wrote itself.

The checks live by area: ``database``, ``disk`` (free space, permissions),
``archive``, ``locks``, ``sources`` (GPUs, Ollama); ``findings`` holds the
``Finding`` and ``Setup`` they share.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Iterable, Iterator

from gpm.doctor.archive import check_archive
from gpm.doctor.database import check_database
from gpm.doctor.disk import check_free_space, check_permissions
from gpm.doctor.findings import FIXED, OK, PROBLEM, Finding, Setup, one_line
from gpm.doctor.locks import check_locks
from gpm.doctor.sources import check_gpu, check_ollama
from gpm.errors import GpmError
from gpm.humanize import visible

CHECKS: list[Callable[[Setup], list[Finding]]] = [
    check_database, check_free_space, check_permissions, check_archive, check_locks, check_gpu, check_ollama,
]


def run_checks(setup: Setup, checks: Iterable[Callable[[Setup], list[Finding]]] = CHECKS) -> Iterator[Finding]:
    """Every finding of every check, in order (a check that cannot run is a finding too)."""
    for check in checks:
        try:
            yield from check(setup)
        except (OSError, sqlite3.Error, GpmError) as err:
            name = check.__name__.removeprefix("check_").replace("_", "-")
            yield Finding(name, PROBLEM, f"check could not run: {one_line(err)}", "see the message")


def apply_fixes(findings: list[Finding]) -> Iterator[Finding]:
    """Run each finding's safe repair; yield the finding as each is done (status fixed, or still a problem)."""
    for finding in findings:
        if finding.repair is None:
            continue
        try:
            finding.message = finding.repair()
            finding.status, finding.advice = FIXED, ""
        except (OSError, sqlite3.Error, GpmError) as err:
            finding.message = f"{finding.fix} failed: {one_line(err)}"
            finding.status = PROBLEM
        finding.repair = None
        yield finding


def has_problems(findings: Iterable[Finding]) -> bool:
    return any(f.status == PROBLEM for f in findings)


def render_line(finding: Finding) -> str:
    """One terminal line: status, check, message and, for a problem, what to do."""
    text = f"{finding.status:<8}{finding.check}: {finding.message}"
    if finding.advice and finding.status != OK:
        text += f"; {finding.advice}"
    return visible(text)


def summary(findings: list[Finding]) -> str:
    problems = sum(f.status == PROBLEM for f in findings)
    fixable = sum(f.repair is not None and f.status == PROBLEM for f in findings)
    if not problems:
        return "gpm doctor: all well"
    more = f"; `gpm doctor --fix` repairs {fixable}" if fixable else ""
    return f"gpm doctor: {problems} problem{'s' if problems > 1 else ''}{more}"


__all__ = ["CHECKS", "Finding", "Setup", "apply_fixes", "has_problems", "render_line", "run_checks",
           "summary"]
