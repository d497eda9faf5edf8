"""Man pages and shell completions: generated from the Click app, never stale."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from gpm.cli import cli
from gpm.devtools import clitree, completions
from gpm.devtools.manpages import escape
from tests.conftest import REPO
from tools import generate

REGENERATE = f"regenerate with `{generate.COMMAND}`"


def test_generated_files_match_the_click_app():
    problems = generate.stale()
    assert not problems, f"{REGENERATE}: " + ", ".join(problems)


def test_every_command_and_option_has_help_text_and_a_man_page():
    root = clitree.load(cli)
    assert sorted(c.path[0] for c in root.subcommands) == sorted(cli.commands)
    for cmd in root.walk():
        assert cmd.short_help.strip(), f"{cmd.name}: no short help"
        if cmd.path:
            assert cmd.help.strip(), f"{cmd.name}: no help text"
        for p in cmd.options:
            assert p.help.strip(), f"{cmd.name} {'/'.join(p.opts)}: no help text"
        page = REPO / "man" / f"gpm{'-' + cmd.path[0] if cmd.path else ''}.1"
        assert page.is_file(), f"{page.name} missing: {REGENERATE}"
        text = page.read_text()
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "ENVIRONMENT",
                        "FILES", "EXAMPLES"):
            assert f".SH {section}" in text, f"{page.name}: no {section}"
        for p in cmd.options:
            assert escape(p.opts[-1]) in text, f"{page.name}: {p.opts[-1]} undocumented"


@pytest.mark.skipif(not shutil.which("mandoc"), reason="mandoc not installed")
def test_man_pages_are_mandoc_lint_clean():
    pages = sorted((REPO / "man").glob("*.1"))
    assert [p.name for p in pages] == sorted(["gpm.1", *(f"gpm-{name}.1" for name in cli.commands)])
    result = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", *map(str, pages)],
                            capture_output=True, text=True)
    assert result.stdout + result.stderr == ""
    assert result.returncode == 0


def test_readme_command_lines_become_examples():
    page = (REPO / "man" / "gpm-sample.1").read_text()
    assert ".B gpm sample \\-\\-json\nJSON Lines: one object per GPU per sample" in page


@click.command(short_help="Say hello.")
@click.option("--gpu", type=int, help="Only this GPU.")
@click.option("--model", help="Only this Ollama model.")
@click.option("--colour", type=click.Choice(["red", "green"]), help="A colour.")
def hello(gpu, model, colour):
    """Say hello, a command a colleague adds later."""


def test_a_newly_registered_command_gets_a_man_page_and_completions(monkeypatch):
    monkeypatch.setitem(cli.commands, "hello", hello)
    files = generate.build()
    page = files[Path("man/gpm-hello.1")]
    assert ".SH NAME\ngpm-hello \\- Say hello" in page and escape("--colour") in page
    assert ".BR gpm-hello (1)" in files[Path("man/gpm.1")]
    bash = files[Path("completions/gpm.bash")]
    assert '"hello|--gpu") COMPREPLY=($(compgen -W "$(_gpm_gpus)"' in bash
    assert '"hello|--model") COMPREPLY=($(compgen -W "$(_gpm_models)"' in bash
    assert "hello:Say hello." in files[Path("completions/_gpm")]
    assert "-l gpu -x -a '(__gpm_gpus)'" in files[Path("completions/gpm.fish")]


def bash_complete(*words: str, env: dict | None = None) -> list[str]:
    script = (
        f"source {REPO / 'completions/gpm.bash'}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _gpm\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(["bash", "-c", script, "bash", *words], capture_output=True, text=True,
                         env=env, check=True).stdout
    return sorted(filter(None, out.splitlines()))


def test_bash_completes_commands_options_and_choices():
    assert bash_complete("gpm", "") == sorted(cli.commands)
    assert bash_complete("gpm", "--db", "x.db", "da") == ["daemon"]
    assert bash_complete("gpm", "config", "") == ["check", "init", "show"]
    assert bash_complete("gpm", "daemon", "--log-format", "") == ["json", "text"]
    assert "--timers" in bash_complete("gpm", "install", "systemd", "--")
    assert bash_complete("gpm", "sample", "--co") == ["--count"]


def test_bash_completes_gpu_indexes_from_nvidia_smi(tmp_path, monkeypatch):
    root = clitree.load(cli)
    root.subcommands.append(clitree._command(hello, ["hello"], None, "Say hello."))
    script = tmp_path / "gpm.bash"
    script.write_text(completions.bash(root))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n'\n")
    (fake / "nvidia-smi").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    src = f"source {script}\n" 'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _gpm\n' \
          'printf "%s\\n" "${COMPREPLY[@]}"\n'
    out = subprocess.run(["bash", "-c", src, "bash", "gpm", "hello", "--gpu", ""], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    expected = ["0", "1", "2"]
    if os.path.isdir("/proc/driver/nvidia/gpus"):  # a real GPU machine counts its own
        expected = [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    assert out == expected


@pytest.mark.skipif(not shutil.which("fish"), reason="fish not installed")
def test_fish_completes_subcommands_and_choices():
    def complete(line: str) -> list[str]:
        out = subprocess.run(["fish", "--no-config", "-c", f"source {REPO / 'completions/gpm.fish'}; "
                              f"complete -C{line!r}"], capture_output=True, text=True, check=True).stdout
        return sorted(x.split("\t")[0] for x in out.splitlines())

    assert complete("gpm ") == sorted(cli.commands)
    assert complete("gpm --db x.db config ") == ["check", "init", "show"]
    assert complete("gpm daemon --log-level ") == ["debug", "error", "info", "warning"]


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh not installed")
def test_zsh_script_parses():
    result = subprocess.run(["zsh", "-n", str(REPO / "completions/_gpm")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
