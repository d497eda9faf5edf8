"""Day writers for `gpm archive`: processes that read a day through ADBC and write its Parquet files.

Why processes: reading through Python's ``sqlite3`` turns every value into
a Python object (~3 µs a row, most of the archive's time). The ADBC SQLite
driver (``adbc-driver-sqlite``) reads straight into Arrow, which Polars takes
without copying, in a fifth of that. But the driver carries its own SQLite
library, and two SQLite libraries in one process break each other's POSIX
locks (a close in one drops the other's locks), so it is only ever loaded
here, in a process that opens the database read-only and never writes it.

Started as ``python -c _BOOT GPM_ROOT PARENT_PID DB_PATH``. Protocol: one
JSON line per job on stdin (a table, a day, its WHERE clause),
one JSON line back on stdout with the part files written, each durable
(temp file, fsync, rename, fsync of the folder), or ``{"fallback": why}``
when this day must be done by gpm itself (a value the typed read does not
take, an error). The parent alone records files and deletes rows, so a crash
anywhere leaves at most part files the manifest does not list, which the next
run adopts (``gpm.store.archive.recover``).

A writer never outlives its parent in a harmful way: it dies with it (Linux
``PR_SET_PDEATHSIG``), checks that its parent is alive before each rename,
holds the parent's archive lock (inherited descriptor) until it exits, so the
next run waits for it, and exits when stdin closes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator
from urllib.parse import quote

if TYPE_CHECKING:
    import polars as pl

    from gpm.store.timeseries import Resolved

# Rows per Arrow batch: the driver takes each column's type from the first
# batch and refuses a different one later (the day then falls back).
BATCH_ROWS = 1 << 16
# A literal of each storage type, for the typed first row (the driver's types
# come from values: a column of NULLs would be read as integers).
_TYPED = {"Int64": "0", "Float64": "0.0", "String": "''", "Binary": "X''"}
_MARK = "_gpm_typed_row"


def available() -> bool:
    """Whether the ADBC SQLite driver is installed (looked up, not loaded: never in a writing process)."""
    return all(importlib.util.find_spec(name) is not None
               for name in ("adbc_driver_sqlite", "adbc_driver_manager"))


# --------------------------------------------------------------------------- parent side

# The writer runs this gpm (the parent's, found at argv[1]): in place of the
# working directory on sys.path, unless an installed gpm's folder is there already.
_BOOT = ("import sys; root = sys.argv[1]; sys.path[0:1] = [] if root in sys.path[1:] else [root]; "
         "from gpm.store.archive_worker import main; sys.exit(main(sys.argv[2:]))")


class DayWriters:
    """Day writer processes, fed round-robin, their replies taken back in the order jobs went out."""

    def __init__(self, db_path: str, count: int, *, lock_fd: int | None = None) -> None:
        import gpm

        root = str(Path(gpm.__file__).resolve().parent.parent)
        # The writers run side by side: Polars threads beyond a share of the cores only contend.
        env = dict(os.environ)
        env.setdefault("POLARS_MAX_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
        self._procs: list[subprocess.Popen] = []
        try:
            for _ in range(count):
                self._procs.append(subprocess.Popen(
                    [sys.executable, "-c", _BOOT, root, str(os.getpid()), db_path],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                    env=env, pass_fds=() if lock_fd is None else (lock_fd,)))
        except OSError:
            self.kill()
            raise
        self._alive = [True] * count
        self._next = 0

    def map(self, jobs: Iterable[tuple[Any, dict]]) -> Iterator[tuple[tuple[Any, dict], list | str]]:
        """((key, job), parts written) for each (key, job), in order; a string says why a job fell back.

        After a fallback nothing of that writer is running any more on it.

        Two jobs per writer are in flight, so none waits while its last
        reply is handled.
        """
        from gpm.store.archive import Part

        jobs = iter(jobs)
        pending: deque[tuple[tuple[Any, dict], int]] = deque()

        def send() -> None:
            job = next(jobs, None)
            if job is not None:
                pending.append((job, self._send(job[1])))

        for _ in range(2 * len(self._procs)):
            send()
        while pending:
            key, worker = pending.popleft()
            reply = self._receive(worker)
            send()
            if "parts" in reply:
                yield key, [Part(*p) for p in reply["parts"]]
            else:
                yield key, reply["fallback"]

    def _send(self, job: dict) -> int:
        worker = self._next
        self._next = (self._next + 1) % len(self._procs)
        if self._alive[worker]:
            try:
                self._procs[worker].stdin.write(json.dumps(job) + "\n")
                self._procs[worker].stdin.flush()
            except OSError:
                self._alive[worker] = False
        return worker

    def _receive(self, worker: int) -> dict:
        if self._alive[worker]:
            line = self._procs[worker].stdout.readline()
            if line:
                return json.loads(line)
            self._alive[worker] = False
            self._procs[worker].wait()  # gone for good before its day is redone
        return {"fallback": f"day writer stopped (exit {self._procs[worker].poll()})"}

    def finish(self) -> None:
        """Tell each writer that no more jobs come (end of stdin): they exit by themselves."""
        for proc in self._procs:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def close(self) -> None:
        """Let each writer finish and wait until it has exited."""
        self.finish()
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()

    def kill(self) -> None:
        """Stop now (an error in the parent): a file being written stays a temp file or an orphan."""
        for proc in self._procs:
            proc.kill()
        for proc in self._procs:
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass


# --------------------------------------------------------------------------- writer side


class _Fallback(Exception):
    """This day cannot be read through ADBC as gpm reads it; gpm itself does it."""


class AdbcReader:
    """Typed reads of a database through the ADBC SQLite driver, read-only."""

    def __init__(self, db_path: str) -> None:
        import adbc_driver_manager
        import adbc_driver_sqlite

        self._manager = adbc_driver_manager
        self._batch_option = {adbc_driver_sqlite.StatementOptions.BATCH_ROWS.value: str(BATCH_ROWS)}
        self._db = adbc_driver_sqlite.connect(f"file:{quote(db_path)}?mode=ro")
        self._conn = adbc_driver_manager.AdbcConnection(self._db)

    def read(self, select: str, storage: dict[str, str]) -> "pl.DataFrame":
        """``select``'s rows, each column of its storage type (``Int64``, ``Float64``, ``String``, ``Binary``).

        A typed first row fixes the types; a column that comes back as
        another type (a REAL among INTEGERs, text among numbers) raises
        ``_Fallback``.
        """
        import polars as pl

        typed = ", ".join(f"{_TYPED[dtype]} AS {name}" for name, dtype in storage.items())
        sql = f"SELECT 1 AS {_MARK}, {typed} UNION ALL SELECT 0, * FROM ({select})"
        stmt = self._manager.AdbcStatement(self._conn)
        try:
            stmt.set_options(**self._batch_option)
            stmt.set_sql_query(sql)
            stream, _ = stmt.execute_query()
            frame = pl.DataFrame(stream)
        except self._manager.Error as err:
            raise _Fallback(str(err).splitlines()[0]) from None
        except pl.exceptions.ComputeError as err:  # the driver's error, raised while Polars reads the stream
            raise _Fallback(str(err).splitlines()[0]) from None
        finally:
            stmt.close()
        marks = frame.get_column(_MARK)
        if marks.len() == 0 or marks[0] != 1 or marks.sum() != 1:
            raise _Fallback("the typed row did not come first")
        frame = frame.slice(1).drop(_MARK)
        wanted = {name: _polars_type(dtype) for name, dtype in storage.items()}
        if dict(frame.schema) != wanted:
            got = ", ".join(f"{n} as {t}" for n, t in frame.schema.items() if wanted.get(n) != t)
            raise _Fallback(f"read {got}")
        return frame

    def close(self) -> None:
        self._conn.close()
        self._db.close()


def _polars_type(name: str) -> "pl.DataType":
    import polars as pl

    return getattr(pl, name)()


def _inline(where: str, params: list) -> str:
    """``where`` with its ``?`` replaced by the integer ``params`` (the driver binds only Arrow data)."""
    pieces = where.split("?")
    if len(pieces) != len(params) + 1 or not all(type(p) is int for p in params):
        raise _Fallback("parameters other than integers")
    return "".join(piece + (str(p) if i < len(params) else "") for i, (piece, p) in
                   enumerate(zip(pieces, [*params, None])))


def write_job(reader: AdbcReader, job: dict, still_wanted) -> list[list]:
    """Read one day, make it the history frame, write its part files; the parts as JSON lists."""
    from dataclasses import astuple

    from gpm.store.archive import decode_resolved, file_frame, write_day

    res: Resolved = decode_resolved(job["resolved"])
    frame = reader.read(f"SELECT {', '.join(n for n, _ in res.raw)} FROM {res.table} "
                        f"WHERE {_inline(job['where'], job['params'])}", dict(res.raw))
    gpus = None
    if res.joins_gpus:
        schema = res.gpu_schema()
        storage = {name: "String" if dtype == _polars_type("String") else "Int64" for name, dtype in schema.items()}
        gpus = reader.read(res.gpu_sql(), storage).cast(schema)
    history = file_frame(res, frame, job["own_host"], gpus)
    parts = write_day(history, res, Path(job["archive_dir"]), job["lo"], job["name"], still_wanted=still_wanted)
    return [list(astuple(p)) for p in parts]


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies (Linux); elsewhere the checks before each rename remain."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before prctl
        os._exit(0)


def main(argv: list[str]) -> int:
    parent, db_path = int(argv[0]), argv[1]
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle

    from gpm.store.archive import Abandoned

    def still_wanted() -> bool:
        return os.getppid() == parent

    reader = None
    for line in sys.stdin:
        job = json.loads(line)
        try:
            reader = reader or AdbcReader(db_path)
            reply = {"parts": write_job(reader, job, still_wanted)}
        except Abandoned:
            return 0
        except _Fallback as why:
            reply = {"fallback": str(why)}
        except Exception as err:  # noqa: BLE001 - any failure: the parent does this day itself
            reply = {"fallback": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    if reader is not None:
        reader.close()
    sys.stdout.flush()
    os._exit(0)  # everything is durable already; skips tearing down Polars (~0.2 s)
