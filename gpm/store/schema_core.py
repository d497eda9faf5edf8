"""Core tables: ``gpus`` and ``gpu_metrics``.

``gpu_metrics`` gets a row per GPU every 1-2 s for years, so it is kept small:
a ``WITHOUT ROWID`` table whose primary key (ts_ms, gpu_id) is the only index,
integers in base units that SQLite packs into 1-6 bytes (milliwatts,
millijoules, bytes), a small integer for the source and NULL for "ok".
Identity (uuid, name, host, memory total) lives once in ``gpus``. The
``gpu_samples`` view decodes everything for humans and ad-hoc queries.
"""

SET_NAME = "gpm.core"

SOURCE_CODES = {"nvml": 0, "nvidia-smi": 1}
SOURCE_NAMES = {v: k for k, v in SOURCE_CODES.items()}


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
    db.execute(
        """
        CREATE TABLE gpu_metrics (
            ts_ms INTEGER NOT NULL,
            gpu_id INTEGER NOT NULL REFERENCES gpus(id),
            source INTEGER NOT NULL,
            status TEXT,
            utilization_gpu_percent INTEGER,
            utilization_memory_percent INTEGER,
            memory_used_bytes INTEGER,
            memory_total_bytes INTEGER,
            temperature_celsius INTEGER,
            power_milliwatts INTEGER,
            power_limit_milliwatts INTEGER,
            energy_millijoules INTEGER,
            sm_clock_mhz INTEGER,
            memory_clock_mhz INTEGER,
            fan_percent INTEGER,
            pstate INTEGER,
            throttle_reasons INTEGER,
            PRIMARY KEY (ts_ms, gpu_id)
        ) WITHOUT ROWID
        """
    )
    db.execute(
        """
        CREATE VIEW gpu_samples AS
        SELECT
            strftime('%Y-%m-%dT%H:%M:%fZ', m.ts_ms / 1000.0, 'unixepoch') AS ts,
            m.ts_ms,
            g.host,
            g.gpu_index,
            g.uuid AS gpu_uuid,
            g.name AS gpu_name,
            CASE m.source WHEN 0 THEN 'nvml' ELSE 'nvidia-smi' END AS source,
            COALESCE(m.status, 'ok') AS status,
            m.utilization_gpu_percent,
            m.utilization_memory_percent,
            m.memory_used_bytes,
            m.memory_total_bytes,
            m.temperature_celsius,
            m.power_milliwatts / 1000.0 AS power_watts,
            m.power_limit_milliwatts / 1000.0 AS power_limit_watts,
            m.energy_millijoules / 1000.0 AS energy_joules,
            m.sm_clock_mhz,
            m.memory_clock_mhz,
            m.fan_percent,
            m.pstate,
            m.throttle_reasons
        FROM gpu_metrics m JOIN gpus g ON g.id = m.gpu_id
        """
    )


MIGRATIONS = [
    ("0001_gpus_and_metrics", m0001_gpus_and_metrics),
]
