"""Tables of alerts (gpm.alerts): ``alerts`` and ``alert_state``.

``alerts`` holds one row per event, from firing to resolved. ``alert_state``
holds conditions that are pending (true, but not yet for ``for_secs``) or
firing, keyed by rule and subject, so a one-shot ``gpm sample`` from cron
remembers them between runs and fires once, not every minute.
"""

SET_NAME = "gpm.alerts"


def m0001_alerts(db) -> None:
    db.execute(
        """
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            rule TEXT NOT NULL,
            host TEXT NOT NULL,
            gpu_index INTEGER,
            gpu_uuid TEXT,
            subject TEXT NOT NULL DEFAULT '',
            severity TEXT NOT NULL,
            started_ms INTEGER NOT NULL,
            resolved_ms INTEGER,
            value REAL,
            peak REAL,
            message TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX alerts_started ON alerts (started_ms)")
    db.execute("CREATE INDEX alerts_firing ON alerts (resolved_ms) WHERE resolved_ms IS NULL")
    db.execute(
        """
        CREATE TABLE alert_state (
            rule TEXT NOT NULL,
            host TEXT NOT NULL,
            key TEXT NOT NULL,
            since_ms INTEGER NOT NULL,
            last_ms INTEGER NOT NULL,
            value REAL,
            peak REAL,
            alert_id INTEGER,
            PRIMARY KEY (rule, host, key)
        )
        """
    )


MIGRATIONS = [
    ("0001_alerts", m0001_alerts),
]
