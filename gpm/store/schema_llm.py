"""Tables of ``gpm ollama-watch``: loaded-model sessions, server events, requests.

``llm_sessions``: one row per stay of a model in Ollama's memory, seen
through ``/api/ps``. A session is open while ``unloaded_at_ms`` is NULL; at
most one session per (server, model) is open (a partial unique index), which
makes repeated cron polls idempotent.

``llm_events``: Ollama going down, coming back and changing version, as seen
by the watcher (only transitions are recorded).

``llm_requests``: one row per generation or embedding request that passed
through the recording proxy. Durations are seconds (Ollama's nanoseconds
converted); a value Ollama did not report is NULL, never 0.

``llm_request_gpu_samples``: the GPU samples of the request's host taken
while the request ran (the link gpm.llm.energy builds on).
"""

SET_NAME = "gpm.llm"


def m0001_sessions_events_requests(db) -> None:
    db.execute(
        """
        CREATE TABLE llm_sessions (
            id INTEGER PRIMARY KEY,
            host TEXT NOT NULL,
            server TEXT NOT NULL,
            model TEXT NOT NULL,
            digest TEXT,
            size_bytes INTEGER,
            size_vram_bytes INTEGER,
            context_length INTEGER,
            quantization TEXT,
            parameter_size TEXT,
            family TEXT,
            loaded_at_ms INTEGER NOT NULL,
            last_seen_ms INTEGER NOT NULL,
            expires_at_ms INTEGER,
            unloaded_at_ms INTEGER
        )
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX llm_sessions_open ON llm_sessions (server, model) "
        "WHERE unloaded_at_ms IS NULL"
    )
    db.execute("CREATE INDEX llm_sessions_loaded ON llm_sessions (loaded_at_ms)")
    db.execute(
        """
        CREATE TABLE llm_events (
            id INTEGER PRIMARY KEY,
            ts_ms INTEGER NOT NULL,
            host TEXT NOT NULL,
            server TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('up', 'down', 'version')),
            version TEXT,
            detail TEXT
        )
        """
    )
    db.execute("CREATE INDEX llm_events_server_ts ON llm_events (server, ts_ms)")
    db.execute(
        """
        CREATE TABLE llm_requests (
            id INTEGER PRIMARY KEY,
            ts_ms INTEGER NOT NULL,
            end_ms INTEGER NOT NULL,
            host TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            model TEXT,
            stream INTEGER NOT NULL,
            status INTEGER,
            error TEXT,
            done_reason TEXT,
            prompt_tokens INTEGER,
            cached_prompt_tokens INTEGER,
            completion_tokens INTEGER,
            ttft_seconds REAL,
            tpot_seconds REAL,
            tokens_per_second REAL,
            prompt_tokens_per_second REAL,
            duration_seconds REAL NOT NULL,
            load_seconds REAL,
            prompt_eval_seconds REAL,
            eval_seconds REAL,
            ollama_total_seconds REAL,
            prompt TEXT,
            response TEXT
        )
        """
    )
    db.execute("CREATE INDEX llm_requests_ts ON llm_requests (ts_ms)")
    db.execute("CREATE INDEX llm_requests_model_ts ON llm_requests (model, ts_ms)")
    db.execute(
        """
        CREATE VIEW llm_request_gpu_samples AS
        SELECT
            r.id AS request_id,
            r.model,
            g.id AS gpu_id,
            g.gpu_index,
            m.ts_ms,
            m.utilization_gpu_percent,
            m.power_milliwatts,
            m.energy_millijoules
        FROM llm_requests r
        JOIN gpus g ON g.host = r.host
        JOIN gpu_metrics m ON m.gpu_id = g.id AND m.ts_ms BETWEEN r.ts_ms AND r.end_ms
        """
    )


MIGRATIONS = [
    ("0001_sessions_events_requests", m0001_sessions_events_requests),
]
