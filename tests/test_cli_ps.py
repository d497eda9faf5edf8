"""`gpm ps` on the fake NVML: what it says when a GPU cannot be read (#13.2)."""

from __future__ import annotations

import json
import os

from tests.conftest import run_gpm
from tests.fakes.nvml import FakeProcess, Scenario

MiB = 1024 * 1024


def _scenario(lost: bool) -> Scenario:
    """GPU 0 runs this test's own process; GPU 1 runs pid 1, or is lost."""
    scenario = Scenario.many(2)
    scenario.gpus[0].processes = [FakeProcess(pid=os.getpid(), used_memory=700 * MiB)]
    scenario.gpus[1].processes = [FakeProcess(pid=1, used_memory=300 * MiB)]
    if lost:
        scenario.gpus[1].lost_after = 0
    return scenario


def test_a_lost_gpu_is_said_and_exits_1_while_the_others_are_listed(fake_nvml):
    fake_nvml.set(_scenario(lost=True))
    as_json = run_gpm("ps", "--json", env=fake_nvml.env())
    table = run_gpm("ps", env=fake_nvml.env())

    for result in (as_json, table):
        assert result.returncode == 1
        assert result.stderr == "gpm: GPU 1 failed: gpu_is_lost\n"
    listed = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(p["gpu_index"], p["pid"], p["used_memory_bytes"]) for p in listed] == [(0, os.getpid(), 700 * MiB)]
    assert str(os.getpid()) in table.stdout


def test_every_gpu_read_exits_0_and_says_nothing_on_stderr(fake_nvml):
    fake_nvml.set(_scenario(lost=False))
    result = run_gpm("ps", "--json", env=fake_nvml.env())
    assert (result.returncode, result.stderr) == (0, "")
    assert [(p["gpu_index"], p["pid"]) for p in map(json.loads, result.stdout.splitlines())] == [
        (0, os.getpid()), (1, 1)]


def test_explain_also_says_the_lost_gpu(fake_nvml):
    fake_nvml.set(_scenario(lost=True))
    result = run_gpm("ps", "--explain", os.getpid(), env=fake_nvml.env())
    assert result.returncode == 1
    assert result.stderr == "gpm: GPU 1 failed: gpu_is_lost\n"
    assert result.stdout.startswith(f"PID {os.getpid()} on GPU 0 (")


def test_a_lost_gpu_is_named_from_the_database_when_there_is_one(fake_nvml, tmp_path):
    """`gpm ps` stores nothing, but names a lost GPU as `gpm sample` does, from what the database knows."""
    db = tmp_path / "gpm.db"
    good = fake_nvml.set(_scenario(lost=False))
    run_gpm("--db", db, "sample", env=fake_nvml.env(), check=True)
    before = db.read_bytes()
    fake_nvml.set(_scenario(lost=True))
    result = run_gpm("--db", db, "ps", "--json", env=fake_nvml.env())
    assert result.returncode == 1
    assert result.stderr == f"gpm: GPU 1 ({good.gpus[1].uuid}) failed: gpu_is_lost\n"
    assert db.read_bytes() == before  # only read

