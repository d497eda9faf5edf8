"""Old names of ``gpm.report.rollup`` (the quarter-hour layer is gone, #14.1): kept for callers not updated yet."""

from gpm.report.rollup import FILES, reduce_archived_days, reduction_folder  # noqa: F401
