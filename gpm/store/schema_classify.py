"""``process_events``: one row per process run on a GPU, extended while it runs.

A row is keyed by (gpu, pid, process start time): the start time tells a
reused pid from the process that had it before. While the process keeps
showing up, each sample moves ``last_seen_ms`` and adds to the accumulators,
so a week of a game at one sample per 2 s is one row, not 300,000.

Accumulators, for the weekly report (hours, memory peaks, energy per
category, game and model):

- ``gpu_seconds``: time the process held the GPU, counted per sampling
  interval (the interval before a sample is credited to the processes in
  that sample; intervals longer than 10 minutes, when gpm was not sampling,
  are not counted, and a process is not credited before it started);
- ``max_used_memory_bytes`` and ``used_memory_byte_seconds`` (peak, and the
  integral for a mean);
- ``energy_joules``: the process's share of the GPU's energy over each
  interval. The GPU's energy counter delta (or power x time when the GPU has
  no counter) is split among the processes in the sample by their SM
  utilization when NVML reports it for any of them, else by their GPU
  memory, else equally, each weighted by the part of the interval it ran.
  Idle draw is therefore charged to whoever held the GPU.

``category``, ``label`` and ``reason`` are the latest classification of the
run (a Python process classified before it loaded PyTorch is corrected on
the next sample). ``cmdline`` is JSON of the redacted arguments, or NULL
when ``[classify] store_cmdline = false``.
"""

SET_NAME = "gpm.classify"


def m0001_process_events(db) -> None:
    db.execute(
        """
        CREATE TABLE process_events (
            id INTEGER PRIMARY KEY,
            gpu_id INTEGER NOT NULL REFERENCES gpus(id),
            pid INTEGER NOT NULL,
            start_time_ms INTEGER,
            name TEXT,
            exe TEXT,
            cmdline TEXT,
            user TEXT,
            category TEXT NOT NULL,
            label TEXT,
            reason TEXT,
            first_seen_ms INTEGER NOT NULL,
            last_seen_ms INTEGER NOT NULL,
            samples INTEGER NOT NULL DEFAULT 1,
            gpu_seconds REAL NOT NULL DEFAULT 0,
            max_used_memory_bytes INTEGER,
            used_memory_byte_seconds REAL NOT NULL DEFAULT 0,
            energy_joules REAL NOT NULL DEFAULT 0
        )
        """
    )
    db.execute("CREATE INDEX process_events_run ON process_events (gpu_id, pid, last_seen_ms)")
    db.execute("CREATE INDEX process_events_last_seen ON process_events (last_seen_ms)")
    db.execute(
        """
        CREATE VIEW process_runs AS
        SELECT
            e.id, g.host, g.gpu_index, g.uuid AS gpu_uuid, e.pid, e.user, e.name, e.exe,
            e.category, e.label, e.reason, e.cmdline,
            strftime('%Y-%m-%dT%H:%M:%fZ', e.first_seen_ms / 1000.0, 'unixepoch') AS first_seen,
            strftime('%Y-%m-%dT%H:%M:%fZ', e.last_seen_ms / 1000.0, 'unixepoch') AS last_seen,
            e.first_seen_ms, e.last_seen_ms, e.start_time_ms, e.samples,
            e.gpu_seconds, e.gpu_seconds / 3600.0 AS gpu_hours,
            e.max_used_memory_bytes,
            CASE WHEN e.gpu_seconds > 0 THEN e.used_memory_byte_seconds / e.gpu_seconds END
                AS mean_used_memory_bytes,
            e.energy_joules, e.energy_joules / 3.6e6 AS energy_kwh
        FROM process_events e JOIN gpus g ON g.id = e.gpu_id
        """
    )


MIGRATIONS = [
    ("0001_process_events", m0001_process_events),
]
