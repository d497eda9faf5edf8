"""Energy per request and per model from the GPU energy counter."""

from __future__ import annotations

import pytest

from gpm.llm.energy import model_energy, request_energy
from gpm.llm.record import REQUEST_COLUMNS
from gpm.store.db import open_db, write
from gpm.store.llm import save_request


@pytest.fixture
def conn(tmp_path):
    c = open_db(tmp_path / "gpm.db")
    yield c
    c.close()


def add_gpu(conn, host="box", uuid="GPU-0", index=0) -> int:
    with write(conn):
        return conn.execute(
            "INSERT INTO gpus (host, uuid, gpu_index, first_seen_ms, last_seen_ms) VALUES (?, ?, ?, 0, 0)",
            (host, uuid, index),
        ).lastrowid


def add_samples(conn, gpu_id, watts, start=0, step=1000, n=11, energy_mj=0):
    """Samples every ``step`` ms at constant ``watts``: the counter grows by watts*step mJ."""
    with write(conn):
        for k in range(n):
            conn.execute("INSERT INTO gpu_metrics (ts_ms, gpu_id, source, energy_millijoules) VALUES (?, ?, 0, ?)",
                         (start + k * step, gpu_id, energy_mj + k * watts * step))


def add_request(conn, start, end, model="m", tokens=10, host="box") -> int:
    row = {key: None for key in REQUEST_COLUMNS}
    row.update(ts_ms=start, end_ms=end, host=host, endpoint="/api/generate", model=model, stream=True,
               status=200, completion_tokens=tokens, duration_seconds=(end - start) / 1000)
    with write(conn):
        return save_request(conn, row)


def test_one_request_pays_its_share_of_each_interval(conn):
    add_samples(conn, add_gpu(conn), watts=100)
    rid = add_request(conn, 1500, 4000)  # 2.5 s at 100 W
    assert request_energy(conn, 0, 10_000) == {rid: pytest.approx(250.0)}


def test_overlapping_requests_share_fairly(conn):
    add_samples(conn, add_gpu(conn), watts=200)
    a = add_request(conn, 0, 4000, model="a", tokens=40)  # alone 0-2 s, shared 2-4 s
    b = add_request(conn, 2000, 6000, model="b", tokens=0)  # shared 2-4 s, alone 4-6 s
    energy = request_energy(conn, 0, 10_000)
    assert energy[a] == pytest.approx(200 * 2 + 200 * 2 / 2)
    assert energy[b] == pytest.approx(600.0)
    assert energy[a] + energy[b] == pytest.approx(200 * 6)  # nothing counted twice
    by_model = {m.model: m for m in model_energy(conn, 0, 10_000)}
    assert by_model["a"].joules_per_token == pytest.approx(600 / 40)
    assert by_model["b"].joules_per_token is None and by_model["b"].energy_joules == pytest.approx(600)
    assert [m.model for m in model_energy(conn, 0, 10_000)] == ["a", "b"]  # equal energy: by name


def test_every_gpu_of_the_host_counts_and_other_hosts_do_not(conn):
    add_samples(conn, add_gpu(conn, uuid="GPU-0"), watts=100)
    add_samples(conn, add_gpu(conn, uuid="GPU-1", index=1), watts=50)
    add_samples(conn, add_gpu(conn, host="other", uuid="GPU-X"), watts=1000)
    rid = add_request(conn, 1000, 3000)
    assert request_energy(conn, 0, 10_000)[rid] == pytest.approx(2 * 150)


def test_uncovered_requests_are_unknown_not_zero(conn):
    gpu = add_gpu(conn)
    add_samples(conn, gpu, watts=100, n=5)  # samples 0..4 s only
    inside = add_request(conn, 1000, 2000)
    past_the_end = add_request(conn, 3000, 6000)
    no_gpu_host = add_request(conn, 1000, 2000, host="laptop")
    energy = request_energy(conn, 0, 10_000)
    assert energy[inside] == pytest.approx(100)
    assert energy[past_the_end] is None and energy[no_gpu_host] is None
    summary = {m.model: m for m in model_energy(conn, 0, 10_000)}["m"]
    assert (summary.requests, summary.measured_requests) == (3, 1)


def test_counter_reset_and_long_gaps_are_not_energy(conn):
    gpu = add_gpu(conn)
    add_samples(conn, gpu, watts=100, n=3)  # 0, 1, 2 s
    add_samples(conn, gpu, watts=100, start=3000, n=3, energy_mj=0)  # driver reloaded: counter back to 0
    add_samples(conn, gpu, watts=100, start=3_600_000, n=2, energy_mj=10**6)  # an hour without samples
    reset = add_request(conn, 2500, 3500)
    gap = add_request(conn, 5500, 3_600_500)
    ok = add_request(conn, 3500, 5000)
    energy = request_energy(conn, 0, 4_000_000)
    assert energy[reset] is None and energy[gap] is None
    assert energy[ok] == pytest.approx(150)


def test_window_selects_requests_by_start(conn):
    add_samples(conn, add_gpu(conn), watts=100)
    early = add_request(conn, 500, 1500)
    late = add_request(conn, 5000, 6000)
    assert set(request_energy(conn, 1000, 10_000)) == {late}
    assert set(request_energy(conn, 0, 1000)) == {early}
