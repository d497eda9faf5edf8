"""LLM request totals read back from the real ``llm_requests`` table (standalone serve-metrics)."""

from __future__ import annotations

from gpm.telemetry.llm import DbRequestFeed, LlmAggregator, LlmRequest
from tests.fakes.telemetry_data import requests, save_requests


def _direct(reqs) -> dict:
    aggregator = LlmAggregator()
    aggregator.observe_many(reqs)
    return aggregator.snapshot()


def test_feed_reads_the_real_table_and_counts_each_row_once(tmp_path):
    db = tmp_path / "gpm.db"
    save_requests(db, requests())
    feed = DbRequestFeed(db, LlmAggregator())
    assert feed.poll() == 5
    assert feed.poll() == 0
    assert feed.aggregator.snapshot() == _direct(requests())  # every column the totals need survives the table

    late = LlmRequest(model="llama3.2", endpoint="/api/chat", status=200, duration_seconds=0.5,
                      ttft_seconds=0.2, prompt_tokens=5, completion_tokens=3, stream=True)
    save_requests(db, [late])
    assert feed.poll() == 1
    assert feed.aggregator.snapshot() == _direct(requests() + [late])


def test_feed_waits_for_the_database_and_follows_a_replaced_one(tmp_path):
    db = tmp_path / "later" / "gpm.db"
    feed = DbRequestFeed(db, LlmAggregator())
    assert feed.poll() == 0 and not db.exists()  # read-only: never creates it
    save_requests(db, [])
    assert feed.poll() == 0
    save_requests(db, requests()[:2])
    assert feed.poll() == 2

    for leftover in (db, db.with_name("gpm.db-wal"), db.with_name("gpm.db-shm")):
        leftover.unlink(missing_ok=True)  # started over: ids begin at 1 again
    save_requests(db, [requests()[2]])
    assert feed.poll() == 1
    assert feed.aggregator.snapshot() == _direct(requests()[:3])


def test_a_long_history_is_read_in_batches(tmp_path):
    db = tmp_path / "gpm.db"
    reqs = requests() * 3
    save_requests(db, reqs)

    class SmallBatches(DbRequestFeed):
        BATCH_ROWS = 4

    feed = SmallBatches(db, LlmAggregator())
    assert feed.poll() == 15
    assert feed.aggregator.snapshot() == _direct(reqs)
