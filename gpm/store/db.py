"""Open the one SQLite database, migrate it, and write to it safely.

Why plain ``sqlite3`` on the hot path: ``gpm sample`` runs from cron every
minute and must cost little more than reading the GPU. Importing sqlite-utils
takes ~100 ms, so it is imported only when a migration is pending (and by the
commands that want its conveniences, through ``utils_db``). The schema itself
is applied by ``sqlite_utils.Migrations``: numbered, append-only steps recorded
in ``_sqlite_migrations``.

Concurrency: WAL mode, a generous busy timeout, and writers that take the write
lock up front with ``BEGIN IMMEDIATE`` (a deferred ``BEGIN`` that later tries
to write fails at once with "database is locked" when another process
committed in between, and the busy timeout cannot help it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
from typing import Iterator

from gpm.errors import (
    EXIT_CANTCREAT, EXIT_DB_CORRUPT, EXIT_IOERR, EXIT_LOCKED, EXIT_NOPERM, DatabaseError, GpmError,
)
from gpm.paths import ensure_private_dir
from gpm.store import schema_alerts, schema_archive, schema_classify, schema_core, schema_llm, schema_report

BUSY_TIMEOUT_SECS = 30.0

# The WAL grows with the largest transaction since the last checkpoint and was
# never given back: after a bulk insert it stayed 284 MB beside a 282 MB
# database (#14.4). SQLite truncates it to this size when it restarts it.
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

# Each module holds one migration set: ``SET_NAME`` and ``MIGRATIONS``, a list
# of (name, function(sqlite_utils.Database)) applied in order. Keeping feature
# tables in their own sets lets them grow independently; the order of this
# list is the order sets are applied on a new database.
SCHEMA_MODULES = [schema_core, schema_classify, schema_llm, schema_report, schema_archive, schema_alerts]

# A database that has recorded exactly this many migrations is up to date:
# one COUNT tells it on every cron run; any other count gets the full check.
MIGRATION_COUNT = sum(len(module.MIGRATIONS) for module in SCHEMA_MODULES)


def _pending(conn: sqlite3.Connection) -> bool:
    """True when any known migration is not recorded (cheap, no sqlite-utils)."""
    try:
        if conn.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()[0] == MIGRATION_COUNT:
            return False
        applied = set(conn.execute("SELECT migration_set, name FROM _sqlite_migrations").fetchall())
    except sqlite3.OperationalError:
        return True
    return any((module.SET_NAME, name) not in applied for module in SCHEMA_MODULES for name, _fn in module.MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> None:
    """Apply every pending migration, under the write lock."""
    if not _pending(conn):
        return
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    # Two processes opening a new database at once must not both migrate:
    # take the write lock, then look again.
    conn.execute("BEGIN IMMEDIATE")
    try:
        still_pending = _pending(conn)
    finally:
        conn.execute("COMMIT")
    if not still_pending:
        return
    for module in SCHEMA_MODULES:
        migrations = sqlite_utils.Migrations(module.SET_NAME)
        for name, fn in module.MIGRATIONS:
            migrations(name=name)(fn)
        migrations.apply(db)


def connect(path: str | os.PathLike, *, readonly: bool = False,
            busy_timeout: float = BUSY_TIMEOUT_SECS) -> sqlite3.Connection:
    """A connection in autocommit mode; transactions are explicit (``write``).

    ``busy_timeout``: how long a statement waits for another process's lock
    (``[storage] busy_timeout_secs``) before failing as "database locked"."""
    path = os.fspath(path)
    if readonly:
        if not os.path.exists(path):
            raise GpmError(f"{path}: database not found (run `gpm sample` first)")
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=busy_timeout,
            isolation_level=None, check_same_thread=False,
        )
    else:
        ensure_private_dir(os.path.dirname(os.path.abspath(path)))
        new = not os.path.exists(path) and _create(path)
        old_umask = os.umask(0o077)  # the -wal and -shm files too
        try:
            conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False,
                factory=sqlite3.Connection if hasattr(sqlite3.Connection, "setconfig") else KeepWalConnection,
            )
            if new:
                # Must precede the first table: lets `gpm archive` give space back.
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        finally:
            os.umask(old_umask)
        if mode != "wal":  # pragma: no cover - e.g. some network file systems
            conn.execute("PRAGMA journal_mode = DELETE")
        else:
            _keep_wal_on_close(conn, path)
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    # WAL + NORMAL: a commit survives a crash of gpm; a power cut may lose the
    # last transactions but never corrupts the file.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _create(path: str) -> bool:
    """Create the database file, 0600 (process names and command lines are
    private); False when another process created it first.

    A -wal and -shm found with no database belong to a deleted one, and
    processes that still have it open (a daemon) share them: the new database
    must not take over their wal-index (#12.5). Unlinked, they stay with
    those processes and the new database gets its own. A lock on the folder
    keeps two creators from unlinking each other's.
    """
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        if os.path.exists(path):
            return False
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    finally:
        os.close(folder)  # and the lock with it


class KeepWalConnection(sqlite3.Connection):
    """A writer that closes before a read-only companion (Python < 3.12).

    See ``_keep_wal_on_close``: while the companion is open this connection is
    not the last one and does not checkpoint; the companion, closing last,
    cannot (checkpointing writes the database file).
    """

    companion: sqlite3.Connection | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.companion is not None:
                self.companion.close()

    def __del__(self) -> None:  # without an explicit close(), in the same order
        try:
            self.close()
        except sqlite3.Error:  # e.g. connect() itself failed: nothing is open
            pass


def _keep_wal_on_close(conn: sqlite3.Connection, path: str) -> None:
    """Leave the WAL in place when the last connection closes.

    SQLite's last connection to close checkpoints the WAL into the database
    and deletes it, and the next `gpm sample` creates it again: two to three
    fsyncs per cron run (~15 ms on the CI machine's disk, more than the rest of
    a sample together). Kept, the WAL (up to ~4 MB) is folded in by the commit
    that fills it (``wal_autocheckpoint``), by ``gpm archive``, or by any other
    program's last close. No data is less safe: WAL with synchronous=NORMAL.
    Python 3.12+ says so directly (``SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE``); before
    that, a read-only companion connection that holds the database's shared
    lock and closes last has the same effect. Kept for #14.4 after a try
    without it: a checkpoint at each close cost ~4-6 ms here, but a daemon
    could then not start on a full disk (no room for a new -wal and -shm), and
    opening a corrupt database wrote into it (tests/faults/test_store_faults.py).
    """
    if hasattr(conn, "setconfig"):  # Python 3.12+
        conn.setconfig(sqlite3.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, True)
        return
    companion = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_SECS,
                                isolation_level=None, check_same_thread=False)
    # One read takes the shared lock that a WAL-mode connection keeps until it closes.
    companion.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    conn.companion = companion


def open_db(path: str | os.PathLike, *, readonly: bool = False,
            busy_timeout: float = BUSY_TIMEOUT_SECS) -> sqlite3.Connection:
    """Connect and bring the schema up to date (read-only opens don't migrate)."""
    try:
        conn = connect(path, readonly=readonly, busy_timeout=busy_timeout)
        if not readonly:
            migrate(conn)
        return conn
    except (sqlite3.Error, OSError) as err:
        raise (database_error(path, err, busy_timeout=busy_timeout)
               or GpmError(f"{path}: cannot open database: {err}")) from None


def file_id(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class FollowedDb:
    """A write connection that follows its path (#12.5).

    A long-lived process (the daemon) keeps its database open; when someone
    deletes or replaces the file, SQLite goes on writing into the old inode
    and every row vanishes with it. ``check()`` compares the path's device and
    inode with those of the file opened (one ``stat``, each write cycle) and,
    when they differ, opens (creates and migrates) the database now at the path.
    """

    def __init__(self, path: str | os.PathLike, busy_timeout: float = BUSY_TIMEOUT_SECS) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self.conn = open_db(self.path, busy_timeout=busy_timeout)
        self._id = file_id(self.path)

    def check(self) -> str | None:
        """Reopen if the file at the path is no longer ours; say why (None: still ours)."""
        now = file_id(self.path)
        if now == self._id:
            return None
        why = "was deleted" if now is None else "was replaced by another file"
        self.conn.close()  # before a new file appears at the path: never two databases on one WAL
        self.conn = open_db(self.path, busy_timeout=self.busy_timeout)
        self._id = file_id(self.path)
        return f"{self.path} {why} while open; writing to a new database there from now on"

    def close(self) -> None:
        self.conn.close()


# What a failing SQLite call means for the user, by primary result code
# (sqlite3.h; Python >= 3.11 gives it as ``sqlite_errorcode``) or, before
# that, by the text SQLite uses for it.
_SQLITE_KINDS = {3: "readonly", 5: "busy", 6: "busy", 8: "readonly", 10: "ioerr", 11: "corrupt",
                 13: "full", 14: "cantopen", 26: "corrupt"}
_SQLITE_TEXTS = (("disk is full", "full"), ("readonly database", "readonly"), ("is locked", "busy"),
                 ("not a database", "corrupt"), ("malformed", "corrupt"), ("disk I/O error", "ioerr"),
                 ("unable to open database", "cantopen"))


def error_kind(err: BaseException) -> str | None:
    """full, readonly, busy, corrupt, ioerr, cantopen or None (not about the file)."""
    if isinstance(err, OSError):
        if err.errno == errno.ENOSPC:
            return "full"
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return "readonly"
        return "cantopen"
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return _SQLITE_KINDS.get(code & 0xFF)
    text = str(err)
    return next((kind for needle, kind in _SQLITE_TEXTS if needle in text), None)


def database_error(path: str | os.PathLike, err: BaseException, *,
                   busy_timeout: float = BUSY_TIMEOUT_SECS) -> DatabaseError | None:
    """One line that names the database, says what is wrong and what to do; None
    when ``err`` is not about the file (a bug: let it surface as one)."""
    kind = error_kind(err)
    if kind is None:
        return None
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    exists = os.path.exists(path)
    if kind == "full":
        return DatabaseError(f"{path}: disk full ({reason}); nothing of this write was kept: "
                             f"free space on the file system of {folder}", EXIT_IOERR)
    if kind == "ioerr":
        return DatabaseError(f"{path}: I/O error ({reason}); check the disk (dmesg) and "
                             f"`sqlite3 {path} 'PRAGMA integrity_check'`", EXIT_IOERR)
    if kind == "busy":
        return DatabaseError(f"{path}: database locked by another process for more than "
                             f"{busy_timeout:g} s ({reason}); try again later, or raise "
                             "[storage] busy_timeout_secs", EXIT_LOCKED)
    if kind == "corrupt":
        return DatabaseError(f"{path}: database is corrupt ({reason}); nothing was written: "
                             f"move it aside (`sqlite3 OLD .recover` saves what it can) and gpm "
                             "starts a new one", EXIT_DB_CORRUPT)
    if kind == "readonly" and exists:
        return DatabaseError(f"{path}: read-only for this user ({reason}); make the file, its -wal "
                             f"and -shm and {folder} writable, or choose another --db", EXIT_NOPERM)
    return DatabaseError(f"{path}: cannot create or open the database ({reason}); "
                         f"make sure {folder} is a writable folder, or choose another --db", EXIT_CANTCREAT)


def utils_db(conn: sqlite3.Connection):
    """A ``sqlite_utils.Database`` over an open connection, for convenience reads."""
    import sqlite_utils

    return sqlite_utils.Database(conn)


@contextlib.contextmanager
def write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction that takes the write lock up front.

    The COMMIT can fail too (a full disk shows there first, when the WAL
    grows): it is rolled back like a failed body. SQLite may have rolled back
    by itself already (SQLITE_FULL, SQLITE_IOERR), hence ``in_transaction``.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
