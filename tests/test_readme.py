"""The README runs as written, fits a few screens, and its links lead somewhere.

Runnable blocks: a fenced block whose info string is ``console`` and whose
opening fence comes right after a line ``<!-- runnable -->``. In it, a line
``$ COMMAND`` is a command, run as written by ``bash -c`` with a ``gpm`` on
PATH that is this checkout (``python -m gpm``); the lines after it, up to the
next ``$`` line, are what it prints. Output is compared line by line, modulo
numbers (every run of digits is alike: PIDs, times, readings), spacing and
the length of ``----`` rules. A line that is only ``…`` stands for any number
of lines left out; a line ending in ``…`` was cut (at 80 columns) and matches
a line that starts with it. The user running the tests is shown as ``me``.
A command must exit 0, unless its line ends with ``# exit N``.

The world the commands see (``world()``), as on a newcomer's first day plus a
week of history: the fake NVML with two GPUs, an ``ollama`` process on GPU 0
and ``python3 train.py --epochs 3`` on GPU 1 (real processes, classified from
/proc), the test suite's known week 2025-W47 (``tests.test_report``) stored
for this host in the default database, an 80x24 pseudo-terminal, TZ=UTC,
NO_COLOR and PAGER=cat. ``python -m tests.test_readme`` prints what each
runnable command prints there, to refresh the README after an output change.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO
from tests.terminal import run_in_pty, user_env

README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_LINES = 250
SKIP = "…"
#: Pages other engineers are writing (issue #12): links to them are checked
#: once they exist.
PENDING_PAGES = {"docs/faults.md", "docs/doctor.md", "docs/privacy.md", "docs/servers.md"}


@dataclass
class Command:
    line: str  # as written after "$ "
    expected: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        m = re.search(r"#\s*exit\s+(\d+)\s*$", self.line)
        return int(m.group(1)) if m else 0


def runnable_commands(markdown: str) -> list[Command]:
    """The commands of the runnable blocks, in order, with their shown output."""
    commands: list[Command] = []
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != "```console" or i == 0 or lines[i - 1].strip() != "<!-- runnable -->":
            continue
        for body in lines[i + 1:]:
            if body.startswith("```"):
                break
            if body.startswith("$ "):
                commands.append(Command(body[2:]))
            elif commands:
                commands[-1].expected.append(body)
    return commands


def _tokens(line: str) -> list[str]:
    return re.sub(r"-{2,}", "-", re.sub(r"\d+", "0", line)).split()


def _line_matches(expected: str, actual: str) -> bool:
    if not expected.endswith(SKIP):
        return _tokens(expected) == _tokens(actual)
    want, got = _tokens(expected[:-1]), _tokens(actual)
    if not want:
        return True
    return (len(got) >= len(want) and got[:len(want) - 1] == want[:-1]
            and got[len(want) - 1].startswith(want[-1]))


def output_mismatch(expected: list[str], actual: list[str]) -> str | None:
    """None when ``actual`` is what ``expected`` shows; else where they part."""
    actual = list(actual)
    while actual and not actual[-1].strip():
        actual.pop()
    deepest = (-1, -1)  # the furthest (expected, actual) line pair that failed

    @functools.cache
    def match(e: int, a: int) -> bool:
        nonlocal deepest
        if e < len(expected) and expected[e].strip() == SKIP:
            return any(match(e + 1, k) for k in range(a, len(actual) + 1))
        if e == len(expected) and a == len(actual):
            return True
        if e < len(expected) and a < len(actual) and _line_matches(expected[e], actual[a]) \
                and match(e + 1, a + 1):
            return True
        deepest = max(deepest, (e, a))
        return False

    if match(0, 0):
        return None
    e, a = deepest
    if e == len(expected):
        return f"unexpected line {actual[a]!r}"
    if a == len(actual):
        return f"missing line {expected[e]!r}"
    return f"expected {expected[e]!r}, got {actual[a]!r}"


def run_in_terminal(command: str, env: dict, cwd: Path, timeout: float = 60) -> tuple[int, list[str]]:
    """Run ``command`` as a user would type it into an 80x24 terminal: its exit
    code and the lines it printed (stdout and stderr)."""
    code, out = run_in_pty(["bash", "-c", command], env, cwd=cwd, timeout=timeout)
    text = out.decode("utf-8", "replace").replace("\r\n", "\n")
    user = getpass.getuser()
    return code, [re.sub(rf"(?<!\S){re.escape(user)}(?!\S)", "me", line) for line in text.split("\n")]


@contextlib.contextmanager
def world(home: Path):
    """The machine the README's commands run on (see the module docstring);
    yields the environment for them."""
    from tests.fakes.nvml import FakeProcess, Scenario, make_gpu

    GiB = 1 << 30
    tools = home / "tools"
    tools.mkdir(parents=True)
    wrapper = tools / "gpm"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gpm "$@"\n')
    wrapper.chmod(0o755)
    # Programs named as they would be: the kernel names a process after the
    # file it executed, so `python3` is a link to this Python and `ollama`
    # a copy of sleep(1).
    (tools / "python3").symlink_to(sys.executable)
    shutil.copy(shutil.which("sleep"), tools / "ollama")
    work = home / "project"
    work.mkdir()
    (work / "train.py").write_text("import time\ntime.sleep(600)\n")
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([tools / "ollama", "infinity"]))
        procs.append(subprocess.Popen([tools / "python3", "train.py", "--epochs", "3"], cwd=work))
        scenario = home / "nvml-scenario.txt"
        Scenario(gpus=[
            make_gpu(0, processes=[FakeProcess(pid=procs[0].pid, used_memory=5 * GiB, sm_util=40)]),
            make_gpu(1, processes=[FakeProcess(pid=procs[1].pid, used_memory=21 * GiB, sm_util=90)]),
        ]).write(scenario)
        env = user_env(home, scenario, {
            "COLUMNS": "80", "LINES": "24", "PATH": os.pathsep.join([str(tools), os.environ.get("PATH", "")]),
        })
        yield env
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_readme_fits_a_few_screens():
    assert len(README.read_text().splitlines()) < MAX_LINES


def test_readme_shows_sample_ps_and_a_weekly_report_as_runnable_examples():
    lines = [c.line for c in runnable_commands(README.read_text())]
    for wanted in ("gpm sample", "gpm ps", "gpm report --week"):
        assert any(line.startswith(wanted) for line in lines), f"no runnable `{wanted}` in README.md"


def test_every_runnable_command_runs_as_written_and_prints_what_is_shown(tmp_path):
    commands = runnable_commands(README.read_text())
    assert commands
    problems = []
    with world(tmp_path / "newcomer") as env:
        for cmd in commands:
            code, lines = run_in_terminal(cmd.line, env, cwd=tmp_path)
            if code != cmd.exit_code:
                problems.append(f"$ {cmd.line}: exit {code}, expected {cmd.exit_code}:\n" + "\n".join(lines))
                continue
            if cmd.expected and (why := output_mismatch(cmd.expected, lines)):
                problems.append(f"$ {cmd.line}: {why}; it printed:\n" + "\n".join(lines))
    assert not problems, "\n\n".join(problems)


def test_the_output_comparison_sees_a_changed_line():
    shown = ["  GPU  Name      Util…", "    0  RTX 4090  17%…", SKIP]
    assert output_mismatch(shown, ["  GPU  Name      Util    Memory", "    0  RTX 4090  99%    2 GiB",
                                   "extra"]) is None
    assert output_mismatch(shown, ["  GPU  Name      Usage   Memory"]) == \
        f"expected {shown[0]!r}, got '  GPU  Name      Usage   Memory'"
    assert output_mismatch(["a 1"], ["a 2", "b"]) == "unexpected line 'b'"
    assert output_mismatch(["a", SKIP, "c"], ["a", "x", "y"]) == "missing line 'c'"


def relative_links(path: Path) -> list[str]:
    """Link targets in a markdown file that are files of this repository."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    targets = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)
    return [t.split("#")[0] for t in targets
            if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_every_relative_link_points_to_a_file():
    pages = [README, *sorted(DOCS.glob("*.md"))]
    assert len(pages) > 10, "the manual lives in docs/"
    broken = []
    for page in pages:
        for target in relative_links(page):
            resolved = (page.parent / target).resolve()
            name = resolved.relative_to(REPO).as_posix() if resolved.is_relative_to(REPO) else str(resolved)
            if name in PENDING_PAGES and not resolved.exists():
                continue
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, "links to missing files: " + ", ".join(broken)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, world(Path(tmp) / "newcomer") as env:
        for cmd in runnable_commands(README.read_text()):
            code, lines = run_in_terminal(cmd.line, env, cwd=Path(tmp))
            print(f"$ {cmd.line}  [exit {code}]", *lines, sep="\n")


def test_the_exit_code_table_lists_every_code_gpm_uses():
    """The README's table and `gpm --help` (gpm.errors) name the same codes (a trial found four missing)."""
    import re as _re

    from gpm.errors import EXIT_CODES

    text = README.read_text()
    table = text[text.index("| code | meaning |"):]
    table = table[:table.index("\n\n")]
    assert {int(c) for c in _re.findall(r"^\| (\d+) \|", table, _re.M)} == set(EXIT_CODES)
