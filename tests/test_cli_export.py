"""`gpm export`: a misspelt table name is a usage error that names the closest one (#13.10)."""

from __future__ import annotations

from tests.conftest import run_gpm
from tests.fakes.nvml import Scenario


def test_a_misspelt_table_suggests_the_right_one(fake_nvml, tmp_path):
    db = tmp_path / "gpm.db"
    run_gpm("--db", db, "sample", env=fake_nvml.env(), check=True)
    for name, meant in (("gpu_metric", "gpu_metrics"), ("gpu", "gpus")):
        result = run_gpm("--db", db, "export", "-t", name)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == (f"gpm: --table {name}: no such table (did you mean '{meant}'?) "
                                 "(see 'gpm export --help')\n")
    # and the right name works
    right = run_gpm("--db", db, "export", "-t", "gpu_metrics", "-f", "jsonl")
    assert right.returncode == 0 and len(right.stdout.splitlines()) == 1


def test_a_misspelt_time_series_table_is_caught_before_any_database_exists(tmp_path):
    result = run_gpm("--db", tmp_path / "none.db", "export", "-t", "gpu_metric")
    assert result.returncode == 2
    assert result.stderr == ("gpm: --table gpu_metric: no such table (did you mean 'gpu_metrics'?) "
                             "(see 'gpm export --help')\n")


def test_a_table_like_none_lists_the_known_ones(fake_nvml, tmp_path):
    db = tmp_path / "gpm.db"
    run_gpm("--db", db, "sample", env=fake_nvml.env(), check=True)
    result = run_gpm("--db", db, "export", "-t", "zzzz")
    assert result.returncode == 2
    assert result.stderr.startswith(f"gpm: --table zzzz: no such table or view in {db} (known: ")
    assert "gpu_metrics, " in result.stderr and "gpus" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_plain_table_or_view_is_filtered_by_the_columns_it_has(fake_nvml, tmp_path):
    """Tables and views other than the time series: their columns decide which filters apply (#14.5)."""
    db = tmp_path / "gpm.db"
    run_gpm("--db", db, "sample", env=fake_nvml.env(), check=True)
    fake_nvml.set(Scenario.many(3))
    run_gpm("--db", db, "sample", env=fake_nvml.env(), check=True)
    gpus = run_gpm("--db", db, "export", "-t", "gpus", "-f", "jsonl", check=True).stdout.splitlines()
    view = run_gpm("--db", db, "export", "-t", "gpu_samples", "-f", "jsonl", "--since", "2000-01-01", check=True)
    assert (len(gpus), len(view.stdout.splitlines())) == (3, 4)  # one GPU, then three
    future = run_gpm("--db", db, "export", "-t", "gpu_samples", "-f", "jsonl", "--since", "2999-01-01", check=True)
    assert future.stdout == ""
    no_time = run_gpm("--db", db, "export", "-t", "gpus", "--since", "2000-01-01")
    assert no_time.returncode == 2 and "gpus has no ts_ms column" in no_time.stderr
