"""``gpm classify``: classify described processes (JSON Lines), no machine needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

import click

from gpm import jsontext
from gpm.classify.process_facts import ProcessFacts
from gpm.classify.ollama_models import OllamaModels
from gpm.classify.rules import Context, classify as classify_one
from gpm.classify.steam import SteamLibrary
from gpm.cli.context import AppContext, pass_app
from gpm.errors import GpmError


@click.command(short_help='Classify processes described as JSON Lines (test rules).')
@click.option("-i", "--input", "input_file", type=click.File("rb"), default="-",
              show_default=True, help="JSON Lines file to read, or - for stdin.")
@click.option("--steam-path", "steam_paths", multiple=True, type=click.Path(file_okay=False),
              help="A Steam install or library folder to read game names from "
                   "(repeatable; added to [classify] steam_paths and the usual places).")
@click.option("--explain", is_flag=True,
              help="Also add 'rule' (what decided) and 'signals' (everything seen) to each object.")
@pass_app
def classify(app: AppContext, input_file, steam_paths: tuple[str, ...], explain: bool) -> None:
    """Classify processes described as JSON Lines, for testing rules.

    Each input line is an object with any of: pid, name, exe, cmdline (list),
    environ (object), libraries (list of paths), parents (list of objects
    with name, exe, cmdline; nearest first), used_memory_bytes,
    gpu_utilization_percent (and optionally user, cwd, age_seconds, type).
    Each is written back, unchanged, with category, label and reason added.
    Nothing on this machine is looked at except the Steam libraries (for game
    names), Ollama manifests next to a runner's --model blob (for model
    names) and the configuration (for [[classify.rules]]). Blank lines are
    skipped.

    \b
    Exit codes: 0 ok; 1 a line is not a JSON object of the right shape
    (the message names the line); 2 usage or config error.
    """
    cfg = app.config()
    library = SteamLibrary.for_homes([str(Path.home())], list(cfg["classify.steam_paths"]) + list(steam_paths))

    ctx = Context.from_config(cfg["classify.rules"], steam=library.index, ollama_model=OllamaModels())

    name = getattr(input_file, "name", "-")
    where = "stdin" if name in ("-", "<stdin>") else name
    if where == "stdin" and sys.stdin.isatty() and not app.quiet:
        # Waiting silently on a terminal looks like a hang (#13.10).
        click.echo("gpm classify: reading JSON Lines from stdin (Ctrl-D to end); see gpm classify --help", err=True)
    out = sys.stdout
    for number, line in _numbered_lines(input_file, where):
        if not line.strip():
            continue
        try:
            obj = jsontext.loads(line)
        except ValueError as err:  # JSONDecodeError or TooDeep
            raise GpmError(f"{where}:{number}: not valid JSON: {err.msg}") from None
        if not isinstance(obj, dict):
            raise GpmError(f"{where}:{number}: expected a JSON object, got {type(obj).__name__}")
        try:
            facts = ProcessFacts.from_json(obj)
        except ValueError as err:
            raise GpmError(f"{where}:{number}: {err}") from None
        decision = classify_one(facts, ctx)
        obj.update(decision.to_json())
        if explain:
            obj["rule"] = decision.rule
            obj["signals"] = decision.signals
        out.write(json.dumps(obj) + "\n")
    out.flush()


def _numbered_lines(stream, where: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a JSON Lines stream read as bytes, so bad UTF-8 names its line."""
    number = 0
    try:
        for number, raw in enumerate(stream, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise GpmError(f"{where}:{number}: not UTF-8 text ({err.reason} at byte {err.start + 1} "
                               f"of the line): JSON Lines must be UTF-8") from None
    except OSError as err:
        raise GpmError(f"{where}:{number + 1}: cannot read: {err.strerror or err}") from None
