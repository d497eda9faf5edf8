"""Core tables: ``gpus`` and ``gpu_metrics``.

``gpu_metrics`` gets a row per GPU every 1-2 s for years, so it is kept small:
a ``WITHOUT ROWID`` table whose primary key (ts_ms, gpu_id) is the only index,
integers in base units that SQLite packs into 1-6 bytes (milliwatts,
millijoules, bytes), a small integer for the source and NULL for "ok".
Identity (uuid, name, host, memory total) lives once in ``gpus`` (0002
moved ``memory_total_bytes`` there: 8 bytes a row that never change). The
``gpu_samples`` view decodes everything for humans and ad-hoc queries.
"""

SET_NAME = "gpm.core"

SOURCE_CODES = {"nvml": 0, "nvidia-smi": 1}
SOURCE_NAMES = {v: k for k, v in SOURCE_CODES.items()}


# gpu_metrics columns after (ts_ms, gpu_id) and the gpu_samples expression of each;
# 0001 had memory_total_bytes after memory_used_bytes, 0002 takes it from gpus. Both
# migrations build from this list: change the table by a new migration, not here.
_METRICS = (
    ("source", "INTEGER NOT NULL", "CASE m.source WHEN 0 THEN 'nvml' ELSE 'nvidia-smi' END AS source"),
    ("status", "TEXT", "COALESCE(m.status, 'ok') AS status"),
    ("utilization_gpu_percent", "INTEGER", "m.utilization_gpu_percent"),
    ("utilization_memory_percent", "INTEGER", "m.utilization_memory_percent"),
    ("memory_used_bytes", "INTEGER", "m.memory_used_bytes"),
    ("memory_total_bytes", "INTEGER", "m.memory_total_bytes"),
    ("temperature_celsius", "INTEGER", "m.temperature_celsius"),
    ("power_milliwatts", "INTEGER", "m.power_milliwatts / 1000.0 AS power_watts"),
    ("power_limit_milliwatts", "INTEGER", "m.power_limit_milliwatts / 1000.0 AS power_limit_watts"),
    ("energy_millijoules", "INTEGER", "m.energy_millijoules / 1000.0 AS energy_joules"),
    ("sm_clock_mhz", "INTEGER", "m.sm_clock_mhz"),
    ("memory_clock_mhz", "INTEGER", "m.memory_clock_mhz"),
    ("fan_percent", "INTEGER", "m.fan_percent"),
    ("pstate", "INTEGER", "m.pstate"),
    ("throttle_reasons", "INTEGER", "m.throttle_reasons"),
)


def _metric_columns(per_row_memory_total: bool) -> list[tuple[str, str, str]]:
    return [c for c in _METRICS if per_row_memory_total or c[0] != "memory_total_bytes"]


def _create_metrics(db, name: str, per_row_memory_total: bool) -> None:
    columns = "".join(f"{col} {decl},\n" for col, decl, _ in _metric_columns(per_row_memory_total))
    db.execute(
        f"CREATE TABLE {name} (\nts_ms INTEGER NOT NULL,\ngpu_id INTEGER NOT NULL REFERENCES gpus(id),\n"
        f"{columns}PRIMARY KEY (ts_ms, gpu_id)\n) WITHOUT ROWID"
    )


def _create_gpu_samples(db, per_row_memory_total: bool) -> None:
    exprs = [expr if per_row_memory_total or col != "memory_total_bytes" else "g.memory_total_bytes"
             for col, _, expr in _METRICS]
    db.execute(
        "CREATE VIEW gpu_samples AS\nSELECT\n"
        "strftime('%Y-%m-%dT%H:%M:%fZ', m.ts_ms / 1000.0, 'unixepoch') AS ts,\n"
        "m.ts_ms, g.host, g.gpu_index, g.uuid AS gpu_uuid, g.name AS gpu_name,\n"
        + ",\n".join(exprs) + "\nFROM gpu_metrics m JOIN gpus g ON g.id = m.gpu_id"
    )


def m0001_gpus_and_metrics(db) -> None:
    db.execute(
        """
        CREATE TABLE gpus (
            id INTEGER PRIMARY KEY,
            host TEXT NOT NULL,
            uuid TEXT NOT NULL,
            gpu_index INTEGER NOT NULL,
            name TEXT,
            pci_bus_id TEXT,
            serial TEXT,
            memory_total_bytes INTEGER,
            power_limit_watts REAL,
            driver_version TEXT,
            cuda_version TEXT,
            first_seen_ms INTEGER NOT NULL,
            last_seen_ms INTEGER NOT NULL,
            UNIQUE (host, uuid)
        )
        """
    )
    _create_metrics(db, "gpu_metrics", per_row_memory_total=True)
    _create_gpu_samples(db, per_row_memory_total=True)


def m0002_memory_total_in_gpus(db) -> None:
    """Drop ``gpu_metrics.memory_total_bytes`` (issue 5: at most 64 bytes a sample).

    A GPU's memory size does not change, and ``gpus`` already holds it, so
    each row saves its 5-8 bytes. SQLite cannot drop a column of a primary
    key table in place cheaply, so the table is rebuilt (new table, copy in
    key order, drop, rename). Views that read ``gpu_metrics`` (other
    migration sets add some) are dropped first and recreated as they were,
    because renaming a table checks every view; ``gpu_samples`` now takes
    the memory size from ``gpus``.
    """
    # Keep the size a GPU last reported where gpus has none.
    db.execute(
        """UPDATE gpus SET memory_total_bytes = (
               SELECT m.memory_total_bytes FROM gpu_metrics m
               WHERE m.gpu_id = gpus.id AND m.memory_total_bytes IS NOT NULL
               ORDER BY m.ts_ms DESC LIMIT 1)
           WHERE memory_total_bytes IS NULL"""
    )
    views = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'view' AND sql LIKE '%gpu_metrics%' ORDER BY rowid"
    ).fetchall()
    for name, _sql in views:
        db.execute(f"DROP VIEW {name}")
    _create_metrics(db, "gpu_metrics_0002", per_row_memory_total=False)
    columns = ", ".join(["ts_ms", "gpu_id", *(col for col, _, _ in _metric_columns(False))])
    db.execute(f"INSERT INTO gpu_metrics_0002 ({columns}) SELECT {columns} FROM gpu_metrics ORDER BY ts_ms, gpu_id")
    db.execute("DROP TABLE gpu_metrics")
    db.execute("ALTER TABLE gpu_metrics_0002 RENAME TO gpu_metrics")
    for name, sql in views:
        if name == "gpu_samples":
            _create_gpu_samples(db, per_row_memory_total=False)
        else:
            db.execute(sql)


def m0003_failed_samples_index(db) -> None:
    """Index only the failed samples (``status`` not NULL), per GPU (#13.2).

    The report names every span a GPU failed; reading all of a week's rows
    to find the few failed ones would cost seconds. Ok rows are NULL and left
    out, so the index stays as small as the failures.
    """
    db.execute("CREATE INDEX gpu_metrics_failed ON gpu_metrics (gpu_id, ts_ms) WHERE status IS NOT NULL")


MIGRATIONS = [
    ("0001_gpus_and_metrics", m0001_gpus_and_metrics),
    ("0002_memory_total_in_gpus", m0002_memory_total_in_gpus),
    ("0003_failed_samples_index", m0003_failed_samples_index),
]
