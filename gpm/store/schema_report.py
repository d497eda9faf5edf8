"""Tables of ``gpm report``: ``weekly_summaries`` and ``report_hours``.

``weekly_summaries`` keeps each whole ISO week's figures per host, so that a
trend over months is read from a few rows even after the raw samples were
archived (re-running a week's report replaces its rows).

``report_hours`` caches the report's first stage (per-minute partials and the
utilization histogram, see ``gpm.report.partials``) for each closed hour of
``gpu_metrics``: reducing a week of 1 Hz samples takes seconds in SQLite,
reading the cached hours milliseconds. A cached hour is used only while the
first and last sample of that hour, and the busy threshold, are unchanged.
"""

SET_NAME = "gpm.report"


def m0001_weekly_summaries(db) -> None:
    db.execute(
        """
        CREATE TABLE weekly_summaries (
            iso_week TEXT NOT NULL,
            host TEXT NOT NULL,
            week_start_ms INTEGER NOT NULL,
            week_end_ms INTEGER NOT NULL,
            gpus INTEGER NOT NULL,
            sampled_seconds REAL NOT NULL,
            coverage_ratio REAL NOT NULL,
            gpu_sampled_seconds REAL NOT NULL,
            busy_seconds REAL NOT NULL,
            utilization_mean_percent REAL,
            energy_joules REAL,
            energy_methods TEXT NOT NULL,
            throttled_seconds REAL NOT NULL,
            gpus_json TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            PRIMARY KEY (iso_week, host)
        )
        """
    )


def m0002_report_hours(db) -> None:
    db.execute(
        """
        CREATE TABLE report_hours (
            hour_ms INTEGER PRIMARY KEY,
            first_ts_ms INTEGER NOT NULL,
            last_ts_ms INTEGER NOT NULL,
            busy_threshold_percent REAL NOT NULL,
            partials BLOB NOT NULL,
            histogram BLOB NOT NULL,
            computed_ms INTEGER NOT NULL
        )
        """
    )


MIGRATIONS = [
    ("0001_weekly_summaries", m0001_weekly_summaries),
    ("0002_report_hours", m0002_report_hours),
]
