"""Firing alerts for the exporters, read from gpm's database at scrape time.

``gpm_alerts_firing`` shows in Prometheus and Grafana what gpm's own rules
([alerts]) fire on this machine. One indexed query per scrape (the
``alerts`` table's partial index on unresolved rows); the database is
opened read-only each time, so one created after the exporter started is
picked up, and none (or one without the alerts table yet) means nothing to
show rather than an error.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from gpm.alerts.event import AlertEvent
from gpm.store.alerts import firing_events


class DbAlertFeed:
    """``poll()``: this host's firing alerts, or None without a database."""

    def __init__(self, db_path: str | os.PathLike, host: str, *, timeout_secs: float = 1.0) -> None:
        self.db_path = Path(db_path)
        self.host = host
        self.timeout_secs = timeout_secs

    def poll(self) -> list[AlertEvent] | None:
        if not self.db_path.exists():
            return None
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=self.timeout_secs)
        try:
            return firing_events(conn, self.host)
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):
                return None
            raise
        finally:
            conn.close()
