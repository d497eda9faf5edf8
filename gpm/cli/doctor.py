"""``gpm doctor``: check the installation and data, say what to do (library: gpm.doctor)."""

from __future__ import annotations

import json
import sys

import click

from gpm.cli.context import AppContext, pass_app
from gpm.doctor import Finding, Setup, apply_fixes, has_problems, render_line, run_checks, summary
from gpm.errors import EXIT_FAILURE, ConfigError


@click.command(short_help='Check database, disk, archive, GPUs, Ollama and locks; say what to do.')
@click.option("--json", "as_json", is_flag=True, help="Print the findings as one JSON list of objects.")
@click.option("--fix", is_flag=True,
              help="Perform the safe repairs (WAL mode, free pages, temp files of a killed archive run, "
                   "lock files of a deleted database), each said as it is done.")
@pass_app
def doctor(app: AppContext, as_json: bool, fix: bool) -> None:
    """Check the database, disk space, archive, permissions, GPUs, Ollama and locks.

    Looks for what is not seen at a glance: a damaged database or one out of
    WAL mode, free pages worth reclaiming, a nearly full disk, archive files
    missing from or unknown to the manifest, files gpm cannot write, NVML
    or nvidia-smi failing (with the reason), Ollama not answering when it is
    watched, a lock held for hours. One line per check, `ok` or the problem
    and what to do. Read-only unless --fix; --fix never touches a file gpm
    did not write.

    \b
    Exit codes: 0 all well (after --fix: every problem repaired); 1 at least
    one problem; 2 usage error.
    """
    try:
        findings = list(run_checks(Setup.from_config(app.config())))
    except ConfigError as err:
        findings = [Finding("config", "problem", str(err), "fix the configuration, then run gpm doctor again")]
    if not as_json:
        for finding in findings:
            if not (app.quiet and finding.status != "problem"):
                click.echo(render_line(finding))
    if fix:
        for finding in apply_fixes(findings):
            if not as_json:
                click.echo(render_line(finding))
    if as_json:
        click.echo(json.dumps([f.to_json() for f in findings], indent=2))
    elif not app.quiet or has_problems(findings):
        click.echo(summary(findings))
    if has_problems(findings):
        sys.exit(EXIT_FAILURE)
