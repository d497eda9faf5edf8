"""Exit codes and the errors that carry them.

Every failure a user can cause or meet ends as one line on stderr and one of
these exit codes; the CLI turns a ``GpmError`` into exactly that. The codes
follow BSD ``sysexits.h`` where one fits, so shell scripts and systemd can
tell "fix your config" from "no GPU here" from "try again later".
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # anything else (an unexpected error, a failed GPU read...)
EXIT_USAGE = 2  # bad command line or configuration
EXIT_DB_CORRUPT = 65  # EX_DATAERR: the database file is damaged or not a database
EXIT_NO_BACKEND = 69  # EX_UNAVAILABLE: no GPU backend could be opened
EXIT_CANTCREAT = 73  # EX_CANTCREAT: the database (or its folder) cannot be created
EXIT_IOERR = 74  # EX_IOERR: disk full or an I/O error while writing
EXIT_LOCKED = 75  # EX_TEMPFAIL: a lock (a job's, or the database's) is held by another process
EXIT_NOPERM = 77  # EX_NOPERM: the database or its folder is read-only for this user
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C before finishing

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILURE: "any other error (details on stderr)",
    EXIT_USAGE: "usage or configuration error",
    EXIT_DB_CORRUPT: "the database is corrupt or not a database (nothing was written; restore or move it aside)",
    EXIT_NO_BACKEND: "no GPU backend could be opened (NVML and nvidia-smi both failed; reason on stderr)",
    EXIT_CANTCREAT: "the database or its folder cannot be created (path on stderr)",
    EXIT_IOERR: "disk full or I/O error on the database (nothing of the failed write was kept)",
    EXIT_LOCKED: "another run of the same job is in progress, or the database stayed locked past the busy timeout",
    EXIT_NOPERM: "the database or its folder is read-only for this user",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C before the work was done",
}


class GpmError(Exception):
    """An error meant for the user: ``str(err)`` is the whole message."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    def lines(self) -> list[str]:
        """What the CLI prints, a line each (each after ``gpm: ``)."""
        return [str(self)]


class ConfigError(GpmError):
    """A configuration value is unknown, of the wrong type or out of range."""

    exit_code = EXIT_USAGE


class NoBackendError(GpmError):
    """Neither NVML nor nvidia-smi could be used; the message says why.

    ``str()`` is one line (for logs and doctor); with ``reasons`` (one per
    backend tried), the CLI prints them one a line, the last pointing to the
    page on running without a GPU (#13.10), on a line of its own when it
    would not fit 80 columns after ``gpm: ``.
    """

    exit_code = EXIT_NO_BACKEND
    HINT = "no GPU here? see docs/without-gpu.md"

    def __init__(self, message: str, reasons: list[str] | None = None):
        super().__init__(message)
        self.reasons = reasons or []

    def lines(self) -> list[str]:
        if not self.reasons:
            return [str(self)]
        *first, last = self.reasons
        hinted = f"{last} ({self.HINT})"
        return [*first, hinted] if len(hinted) <= 80 - len("gpm: ") else [*self.reasons, self.HINT]


class DatabaseError(GpmError):
    """The database cannot be used as it is (full disk, read-only, locked, corrupt).

    The message names the file and what to do; the exit code says which.
    """


class LockedError(GpmError):
    """Another process runs the same job kind right now."""

    exit_code = EXIT_LOCKED
