"""Regenerate ``completions/`` and ``man/`` from the Click app (a developer's tool, not installed).

    python tools/generate.py           # write the files
    python tools/generate.py --check   # list what is stale, exit 1 if any

The renderers live in the package (gpm.devtools), where ``gpm install
completions|man`` uses them too; this script writes their output into the
checkout.

A man page keeps its date while its text is unchanged, so regenerating is
idempotent and the date says when the page last changed.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's gpm, not an installed one

from gpm.cli import cli  # noqa: E402
from gpm.devtools import clitree, completions, manpages  # noqa: E402

COMMAND = "python tools/generate.py"

_TH = re.compile(r"^(\.TH \S+ 1 )(\S+)( .*)$", re.M)


def _without_date(page: str) -> str:
    return _TH.sub(r"\1-\3", page)


def _dated(page: str, old: str | None, today: str) -> str:
    """Keep the old page's date when nothing else changed."""
    date = today
    if old is not None and _without_date(old) == _without_date(page):
        m = _TH.search(old)
        date = m.group(2) if m else today
    return _TH.sub(lambda m: m.group(1) + date + m.group(3), page)


def build(repo: Path = REPO) -> dict[Path, str]:
    """Every generated file (path relative to the repo) and its content."""
    root = clitree.load(cli)
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    files: dict[Path, str] = {}
    for name, text in completions.scripts(root).items():
        files[Path("completions") / name] = text
    for name, page in manpages.man_pages(root, "-").items():
        path = Path("man") / name
        old = (repo / path).read_text(encoding="utf-8") if (repo / path).is_file() else None
        files[path] = _dated(page, old, today)
    return files


def _orphans(repo: Path, files: dict[Path, str]) -> list[Path]:
    """Files in the generated folders that the generator no longer makes."""
    return [
        target.relative_to(repo)
        for folder in ("completions", "man") if (repo / folder).is_dir()
        for target in sorted((repo / folder).glob("*"))
        if target.relative_to(repo) not in files
    ]


def stale(repo: Path = REPO) -> list[str]:
    """Generated files that are missing, different or no longer generated."""
    files = build(repo)
    out = []
    for path, text in files.items():
        target = repo / path
        if not target.is_file():
            out.append(f"{path} (missing)")
        elif _without_date(target.read_text(encoding="utf-8")) != _without_date(text):
            out.append(f"{path} (differs)")
    out += [f"{path} (no longer generated)" for path in _orphans(repo, files)]
    return out


def write(repo: Path = REPO) -> list[Path]:
    files = build(repo)
    changed = []
    for path, text in files.items():
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            changed.append(path)
    for path in _orphans(repo, files):
        (repo / path).unlink()
        changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list stale files; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for line in problems:
            print(line)
        if problems:
            print(f"regenerate with `{COMMAND}`", file=sys.stderr)
        return 1 if problems else 0
    for path in write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
