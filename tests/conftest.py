"""Shared fixtures: an isolated home for every test, and gpm as a subprocess.

No test touches the real home: XDG folders point into tmp_path, and every
``GPM_*`` variable of the outer environment is dropped.
"""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session) -> None:
    """Compile gpm once, before the suite starts its many `python -m gpm` children.

    Where PYTHONDONTWRITEBYTECODE is set (CI machines set it), no child
    writes the bytecode it compiles, so every child compiled all of gpm
    again: about 0.2 s each, minutes over the suite. Reading bytecode that
    exists is not affected by the variable.
    """
    compileall.compile_dir(str(REPO / "gpm"), quiet=1)
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    for var in list(os.environ):
        if var.startswith("GPM_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local/state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    return home


def gpm_env(extra: dict | None = None) -> dict:
    """The environment for a gpm subprocess: this checkout first on sys.path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def run_gpm(*args, env: dict | None = None, timeout: float = 60, input: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m gpm ARGS`` the way a user or cron would."""
    proc = subprocess.run(
        [sys.executable, "-m", "gpm", *map(str, args)],
        env=gpm_env(env), capture_output=True, text=True, timeout=timeout, input=input,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"gpm {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture
def gpm():
    return run_gpm


@pytest.fixture(scope="session")
def fake_nvml_lib():
    """The fake libnvidia-ml.so.1, compiled once per source version."""
    from tests.fakes.nvml import build_fake_nvml

    return build_fake_nvml()


@pytest.fixture
def fake_nvml(fake_nvml_lib, tmp_path):
    """A fake NVML serving one GPU; ``fake_nvml.set(Scenario...)`` changes the world.

    Pass ``env=fake_nvml.env()`` to ``run_gpm`` so gpm loads it.
    """
    from tests.fakes.nvml import FakeNvml, Scenario

    return FakeNvml(fake_nvml_lib, tmp_path / "nvml-scenario.txt", Scenario.many(1))
