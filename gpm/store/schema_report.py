"""Tables of ``gpm report``: ``weekly_summaries`` and ``report_hours``.

``weekly_summaries`` keeps each whole ISO week's figures per host, so that a
trend over months is read from a few rows even after the raw samples were
archived (re-running a week's report replaces its rows).

``report_hours``, ``report_minutes`` and ``report_hist`` keep the report's
first stage (per-GPU, per-minute partials and the utilization histogram) of
each closed hour of ``gpu_metrics`` as plain rows, written by sqlite3 alone
(``gpm.store.rollup``), so that `gpm sample` and the daemon keep them
current: reducing a week of 1 Hz samples takes seconds, reading the reduced
hours a fraction of one. A reduced hour is used only while the first and
last sample of that hour, and the busy threshold, are unchanged.
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


def m0003_weekly_usage(db) -> None:
    # Per host and week: GPU time and energy per process category, LLM
    # requests and tokens (JSON, see gpm.report.usage.host_usage).
    db.execute("ALTER TABLE weekly_summaries ADD COLUMN usage_json TEXT")


def m0004_report_minutes(db) -> None:
    # 0002 kept each hour as Polars IPC blobs, which `gpm sample` cannot write
    # (it must not import Polars): the same figures as plain rows. Old blobs
    # are dropped; the hours are reduced again.
    db.execute("DROP TABLE report_hours")
    db.execute(
        """
        CREATE TABLE report_hours (
            hour_ms INTEGER PRIMARY KEY,
            first_ts_ms INTEGER NOT NULL,
            last_ts_ms INTEGER NOT NULL,
            busy_threshold_percent REAL NOT NULL,
            computed_ms INTEGER NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE report_minutes (
            minute INTEGER NOT NULL,
            gpu_id INTEGER NOT NULL,
            n INTEGER NOT NULL,
            first_ts_ms INTEGER NOT NULL,
            last_ts_ms INTEGER NOT NULL,
            util_n INTEGER, util_sum INTEGER, busy_n INTEGER,
            temp_n INTEGER, temp_sum INTEGER, temp_max INTEGER,
            mem_max INTEGER,
            power_n INTEGER, power_sum_mw INTEGER,
            energy_n INTEGER, energy_within_mj INTEGER,
            thr_n INTEGER, thr_any_n INTEGER,
            thr_sw_power_cap_n INTEGER, thr_hw_slowdown_n INTEGER, thr_sw_thermal_slowdown_n INTEGER,
            thr_hw_thermal_slowdown_n INTEGER, thr_hw_power_brake_slowdown_n INTEGER,
            power_first_mw INTEGER, energy_first_mj INTEGER, energy_last_mj INTEGER,
            PRIMARY KEY (minute, gpu_id)
        ) WITHOUT ROWID
        """
    )
    db.execute(
        """
        CREATE TABLE report_hist (
            hour_ms INTEGER NOT NULL,
            gpu_id INTEGER NOT NULL,
            util INTEGER NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (hour_ms, gpu_id, util)
        ) WITHOUT ROWID
        """
    )


MIGRATIONS = [
    ("0001_weekly_summaries", m0001_weekly_summaries),
    ("0002_report_hours", m0002_report_hours),
    ("0003_weekly_usage", m0003_weekly_usage),
    ("0004_report_minutes", m0004_report_minutes),
]
