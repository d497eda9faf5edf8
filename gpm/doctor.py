"""``gpm doctor``: look for what a user cannot see at a glance, and say what to do.

Each check is a plain function ``check_x(setup) -> list[Finding]``; ``CHECKS``
lists them in the order they are shown. Checks only read: they open the
database read-only and probe locks through ``/proc/locks`` (taking a lock,
even for a moment, could make a concurrent ``gpm report`` give up). A
finding may carry a ``repair``: a safe repair that ``apply_fixes`` runs only
when asked (``gpm doctor --fix``), and only on files gpm wrote itself.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from gpm.config import Config
from gpm.errors import GpmError, NoBackendError
from gpm.gpu.nvml import NvmlReader
from gpm.gpu.reader import backend_reason
from gpm.gpu.smi import smi_read_once
from gpm.humanize import visible
from gpm.llm.client import OllamaClient, OllamaUnavailable
from gpm.report.rollup import FILES, reduction_folder
from gpm.locks import exclusive_lock, lock_path
from gpm.store.archive_files import host_dir, manifest_paths, owned_hosts
from gpm.store.db import connect
from gpm.store.timeseries import TIME_SERIES, available

OK, NOTE, PROBLEM, FIXED = "ok", "note", "problem", "fixed"

# Free space below the larger of these, for the data or the archive folder, is
# a problem: the database grows by a few MiB a day per GPU, and `gpm archive`
# (or a VACUUM) needs about the database's size again while it works.
MIN_FREE_BYTES = 1024**3
# Free pages worth reclaiming: at least this share of the file and this many bytes.
RECLAIM_MIN_SHARE = 0.10
RECLAIM_MIN_BYTES = 1024**2
# A job lock held longer than this is probably a stuck run (`gpm archive` of
# months of backlog takes minutes, not hours).
LOCK_HELD_TOO_LONG_SECS = 2 * 3600
# How long gpm doctor waits for Ollama: it only asks whether it answers.
OLLAMA_TIMEOUT_SECS = 2.0

# Names gpm itself gives files (gpm.store.archive.write_durably, gpm.locks.lock_path).
# Temp files gpm writes in the archive: ``.part-….parquet.tmp``, ``.partials.pq.tmp``...
_TMP = re.compile(r"^\..+\.tmp$")
REDUCTION_FILES = {*FILES.values(), "sources.json"}
_LOCK_FILE = re.compile(r"^(?P<db>.+)\.(?P<job>[a-z][a-z_-]*)\.lock$")


@dataclass
class Finding:
    """One line of the verdict: a check's outcome, and for a problem what to do."""

    check: str
    status: str  # ok, note, problem, fixed
    message: str
    advice: str = ""
    path: str | None = None
    # The safe repair `--fix` performs; returns what it did, in words.
    repair: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    fix: str | None = None  # what the repair does, in words (shown before it runs)

    def to_json(self) -> dict:
        return {"check": self.check, "status": self.status, "message": self.message,
                "advice": self.advice or None, "path": self.path, "fix": self.fix}


@dataclass
class Setup:
    """What the checks look at; tests and scripts build one without Click."""

    cfg: Config
    db_path: Path
    archive_dir: Path
    host: str
    now: Callable[[], float] = time.time
    min_free_bytes: int = MIN_FREE_BYTES
    lock_held_too_long_secs: float = LOCK_HELD_TOO_LONG_SECS

    @classmethod
    def from_config(cls, cfg: Config, **kwargs) -> "Setup":
        return cls(cfg=cfg, db_path=cfg.db_path, archive_dir=cfg.archive_dir, host=cfg.hostname, **kwargs)


# --------------------------------------------------------------------------- database


def _open_readonly(path: Path) -> sqlite3.Connection:
    return connect(path, readonly=True)


def check_database(setup: Setup) -> list[Finding]:
    """Integrity (``PRAGMA quick_check``), WAL journal mode, free pages worth reclaiming."""
    db = setup.db_path
    if not db.exists():
        return [Finding("database", PROBLEM, f"{db}: database not found",
                        f"run `gpm sample` to create it, or check --db / "
                        f"{_setting(setup.cfg, 'storage.db_path')}", str(db))]
    try:
        conn = _open_readonly(db)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError as err:  # unreadable or busy, not damaged
        return [Finding("database", PROBLEM, f"{db}: cannot read the database ({_one_line(err)})",
                        "check its permissions and that of its folder, then try again", str(db))]
    except sqlite3.DatabaseError as err:
        return [Finding("database", PROBLEM, f"{db}: database is damaged ({_one_line(err)})",
                        "stop gpm, keep a copy, then rebuild it: "
                        f"sqlite3 {db} .recover | sqlite3 new.db", str(db))]
    except GpmError as err:
        return [Finding("database", PROBLEM, str(err), "check the path and its permissions", str(db))]
    out: list[Finding] = []
    if mode != "wal":
        out.append(Finding("database", PROBLEM, f"{db}: journal mode is {mode}, not wal "
                           "(readers then block the sampler)", "run `gpm doctor --fix`", str(db),
                           repair=lambda: _set_wal(db), fix="set journal_mode = WAL"))
    free_bytes, total_bytes = free * page_size, pages * page_size
    if free_bytes >= RECLAIM_MIN_BYTES and free >= RECLAIM_MIN_SHARE * pages:
        out.append(Finding("database", PROBLEM, f"{db}: {_size(free_bytes)} of {_size(total_bytes)} are "
                           "free pages", "run `gpm doctor --fix` to give them back", str(db),
                           repair=lambda: _reclaim(db), fix="reclaim free pages"))
    if not out:
        out.append(Finding("database", OK, f"integrity ok, WAL, {_size(total_bytes)} "
                           f"({_size(free_bytes)} free)", path=str(db)))
    return out


def _set_wal(db: Path) -> str:
    conn = connect(db)  # gpm's own open sets WAL mode
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    if mode != "wal":
        raise GpmError(f"{db}: SQLite refused WAL mode here (journal mode stays {mode}; "
                       "a network file system?)")
    return f"{db}: journal mode set to WAL"


def _reclaim(db: Path) -> str:
    """Drain the free list: ``incremental_vacuum`` through ``executescript`` (which
    steps it to the end; ``execute`` frees one page) or, on a database without
    incremental auto-vacuum, a VACUUM that also turns it on."""
    conn = connect(db)
    try:
        before = conn.execute("PRAGMA freelist_count").fetchone()[0]
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            conn.executescript("PRAGMA incremental_vacuum;")
            how = "incremental_vacuum"
        else:
            conn.executescript("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            how = "VACUUM"
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        after = conn.execute("PRAGMA freelist_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return f"{db}: {how} gave back {_size((before - after) * page_size)} ({after} free pages left)"


# --------------------------------------------------------------------------- space and permissions


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (what a new folder would live on)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_space(setup: Setup) -> list[Finding]:
    """Free space for this user on the data folder's and the archive folder's file systems."""
    db_size = setup.db_path.stat().st_size if setup.db_path.is_file() else 0
    need = max(setup.min_free_bytes, db_size)
    out: list[Finding] = []
    seen: set[int] = set()
    for what, folder in (("data folder", setup.db_path.parent), ("archive folder", setup.archive_dir)):
        probe = _existing(folder)
        try:
            st = os.statvfs(probe)
            device = os.stat(probe).st_dev
        except OSError as err:
            out.append(Finding("free-space", PROBLEM, f"{probe}: cannot read free space ({err.strerror})",
                               "check the folder exists and is readable", str(folder)))
            continue
        if device in seen:
            continue
        seen.add(device)
        free = st.f_bavail * st.f_frsize
        if free < need:
            out.append(Finding("free-space", PROBLEM, f"{folder}: only {_size(free)} free for the {what} "
                               f"(gpm wants {_size(need)})",
                               "free some space, or move [storage] db_path / archive_dir elsewhere",
                               str(folder)))
        else:
            out.append(Finding("free-space", OK, f"{_size(free)} free for the {what}", path=str(folder)))
    return out


def check_permissions(setup: Setup) -> list[Finding]:
    """What gpm writes must be writable by this user, and the config file readable."""
    db = setup.db_path
    wanted: list[tuple[Path, int, str]] = [(_existing(db.parent), os.W_OK | os.X_OK, "data folder")]
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            wanted.append((path, os.R_OK | os.W_OK, "database file"))
    locks = lock_path(db, "archive").parent
    if locks.exists():
        wanted.append((locks, os.W_OK | os.X_OK, "lock folder"))
    wanted.append((_existing(setup.archive_dir), os.W_OK | os.X_OK, "archive folder"))
    if setup.cfg.config_file_found and setup.cfg.config_path:
        wanted.append((Path(setup.cfg.config_path), os.R_OK, "config file"))
    out = []
    for path, mode, what in wanted:
        if not os.access(path, mode):
            need = "readable" if mode == os.R_OK else "writable"
            out.append(Finding("permissions", PROBLEM, f"{path}: {what} not {need} by this user "
                               f"(uid {os.geteuid()})",
                               f"run gpm as the file's owner, or make it {need} (chmod/chown)", str(path)))
    return out or [Finding("permissions", OK, "database, folders and config accessible")]


# --------------------------------------------------------------------------- archive


def _manifest(setup: Setup) -> tuple[set[str], set[str]] | Finding:
    """(listed paths, hosts) from this database's manifest, through gpm.store.archive."""
    try:
        conn = _open_readonly(setup.db_path)
        try:
            listed: set[str] = set()
            for spec in available(conn):
                listed |= manifest_paths(conn, spec.table)
            return listed, owned_hosts(conn, setup.host)
        finally:
            conn.close()
    except (sqlite3.Error, GpmError) as err:
        return Finding("archive", PROBLEM, f"{setup.db_path}: cannot read the archive manifest "
                       f"({_one_line(err)})", "see the database finding above", str(setup.db_path))


def _owned_folders(archive_dir: Path, hosts: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """The folders of part files this database reads and recovers (as ``archive.recover`` walks
    them), and those of the report's rollups of its days (``report.rollup``)."""
    hosts = sorted(hosts)
    parts = [archive_dir / spec.table / host_dir(host) for spec in TIME_SERIES for host in hosts]
    return parts, [reduction_folder(archive_dir, host_dir(host), "") for host in hosts]


def check_archive(setup: Setup) -> list[Finding]:
    """The archive's files against this database's manifest."""
    if not setup.db_path.exists():
        return []
    manifest = _manifest(setup)
    if isinstance(manifest, Finding):
        return [manifest]
    listed, hosts = manifest
    root = setup.archive_dir
    on_disk = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if not p.is_dir()} \
        if root.is_dir() else {}
    part_folders, reduction_folders = _owned_folders(root, hosts)

    def under(path: Path, folders: list[Path]) -> bool:
        return any(folder in path.parents for folder in folders)

    missing = sorted(rel for rel in listed if rel not in on_disk)
    tmp, rejected, orphans, foreign = [], [], [], []
    for rel, path in sorted(on_disk.items()):
        if rel in listed:
            continue
        if under(path, reduction_folders):
            if _TMP.match(path.name):
                tmp.append(path)
            elif path.name not in REDUCTION_FILES:
                foreign.append(path)
        elif not under(path, part_folders):
            foreign.append(path)
        elif _TMP.match(path.name):
            tmp.append(path)
        elif path.name.endswith(".rejected"):
            rejected.append(path)
        else:
            orphans.append(path)
    out: list[Finding] = []
    if missing:
        out.append(Finding("archive", PROBLEM, f"{len(missing)} archived files missing, e.g. "
                           f"{root / missing[0]} (their rows are gone from the history)",
                           "restore them from a backup into the same place", str(root / missing[0])))
    if tmp:
        out.append(Finding("archive", PROBLEM, f"{len(tmp)} temp files of a killed `gpm archive`, e.g. {tmp[0]}",
                           "run `gpm doctor --fix` (or the next `gpm archive`) to remove them", str(tmp[0]),
                           repair=lambda: _remove_tmp(setup, tmp), fix="remove the temp files"))
    if rejected:
        out.append(Finding("archive", PROBLEM, f"{len(rejected)} part files set aside as *.rejected, "
                           f"e.g. {rejected[0]} (never read)",
                           "look at them: their rows did not match the database; delete them when done",
                           str(rejected[0])))
    if orphans:
        out.append(Finding("archive", PROBLEM, f"{len(orphans)} files not in this database's manifest, "
                           f"e.g. {orphans[0]}",
                           "if another database archives here, give each its own [storage] archive_dir; "
                           "else `gpm archive` adopts them", str(orphans[0])))
    if foreign:
        out.append(Finding("archive", NOTE, f"{len(foreign)} files belong to no database here "
                           f"(another host's or database's, or not gpm's), e.g. {foreign[0]}",
                           "gpm leaves them alone; move them away if they are not meant to be there",
                           str(foreign[0])))
    if not any(f.status == PROBLEM for f in out):
        said = f"{len(listed)} archived files, all present" if listed else "nothing archived yet"
        out.insert(0, Finding("archive", OK, said, path=str(root)))
    return out


def _remove_tmp(setup: Setup, paths: list[Path]) -> str:
    """Remove temp files of killed runs, holding the archive lock so that no run is writing them."""
    with exclusive_lock(lock_path(setup.db_path, "archive"), job="archive", wait_secs=0):
        for path in paths:
            path.unlink(missing_ok=True)
    return f"removed {len(paths)} temp files of a killed `gpm archive`"


# --------------------------------------------------------------------------- GPUs and Ollama


def check_gpu(setup: Setup) -> list[Finding]:
    """NVML and nvidia-smi, each on its own, with the reason each one fails (as `gpm sample` says it)."""
    cfg = setup.cfg
    out: list[Finding] = []
    nvml_ok = False
    if cfg["gpu.enable_nvml"]:
        try:
            reader = NvmlReader().open()
            try:
                out.append(Finding("gpu", OK, f"NVML: {_gpus(reader.gpu_count)}, driver {reader.driver_version}"))
                nvml_ok = True
            finally:
                reader.close()
        except NoBackendError as err:
            out.append(Finding("gpu", PROBLEM, backend_reason("NVML", err),
                               "fix the driver as the reason says, or set [gpu] enable_nvml = false"))
    if cfg["gpu.fallback_to_nvidia_smi"] or not cfg["gpu.enable_nvml"]:
        try:
            samples = smi_read_once(cfg["gpu.nvidia_smi_path"], cfg["gpu.nvidia_smi_timeout_secs"])
            out.append(Finding("gpu", OK, f"nvidia-smi: {_gpus(len(samples))}"))
        except NoBackendError as err:
            # Only the fallback: a note while NVML works, a problem when nothing reads the GPUs.
            out.append(Finding("gpu", NOTE if nvml_ok else PROBLEM, backend_reason("nvidia-smi", err),
                               "install the NVIDIA utilities or fix "
                               f"{_setting(cfg, 'gpu.nvidia_smi_path')}"))
    if not out:
        out.append(Finding("gpu", PROBLEM, "NVML and nvidia-smi are both disabled: nothing is sampled",
                           "set [gpu] enable_nvml = true"))
    return out


def check_ollama(setup: Setup) -> list[Finding]:
    """Ollama answers at [ollama] api_url, when gpm is set to watch it."""
    cfg = setup.cfg
    if not (cfg["ollama.enabled"] or cfg["ollama.enable_proxy"]):
        return [Finding("ollama", OK, "not watched ([ollama] enabled = false)")]
    url = cfg["ollama.api_url"]
    try:
        version = OllamaClient(url, min(cfg["ollama.timeout_secs"], OLLAMA_TIMEOUT_SECS)).version()
    except (OllamaUnavailable, ValueError) as err:
        return [Finding("ollama", PROBLEM, f"Ollama not reachable: {err}",
                        f"start Ollama (`ollama serve`) or fix {_setting(cfg, 'ollama.api_url')}")]
    return [Finding("ollama", OK, f"Ollama {version} at {url}")]


# --------------------------------------------------------------------------- locks


def _held_inodes() -> set[tuple[int, int]]:
    """(device, inode) of every file with a lock, from /proc/locks (probing with flock could
    make a concurrent job give up)."""
    held = set()
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return held
    for line in text.splitlines():
        fields = line.split()
        ident = next((f for f in fields if f.count(":") == 2), None)
        if ident is None:
            continue
        major, minor, inode = ident.split(":")
        held.add((os.makedev(int(major, 16), int(minor, 16)), int(inode)))
    return held


def _holders(path: Path) -> list[str]:
    """The processes that have ``path`` open ("pid (name)"): who holds the lock now."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if any(f.path == str(path) for f in proc.open_files()):
                out.append(f"{proc.info['pid']} ({proc.info['name']})")
        except (psutil.Error, OSError):
            continue
    return out


def _recorded_pid(path: Path) -> int | None:
    try:
        text = path.read_text()[:32].strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def check_locks(setup: Setup) -> list[Finding]:
    """Job locks held very long, or held by someone other than the run that took them."""
    import psutil

    folder = lock_path(setup.db_path, "archive").parent
    files = sorted(p for p in folder.glob("*.lock") if _LOCK_FILE.match(p.name)) if folder.is_dir() else []
    held = _held_inodes()
    out: list[Finding] = []
    for path in files:
        match = _LOCK_FILE.match(path.name)
        assert match is not None
        job, db_name = match["job"], match["db"]
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if (st.st_dev, st.st_ino) not in held:
            if not (folder.parent / db_name).exists():
                out.append(Finding("locks", NOTE, f"{path}: lock file of a database that is gone",
                                   "run `gpm doctor --fix` to remove it", str(path),
                                   repair=lambda p=path, j=job: _remove_lock_file(p, j), fix="remove the lock file"))
            continue
        if db_name != setup.db_path.name:
            continue
        pid = _recorded_pid(path)
        age = setup.now() - st.st_mtime  # the holder writes its pid when it takes the lock
        if pid is None or not psutil.pid_exists(pid):
            holders = ", ".join(_holders(path)) or "unknown"
            out.append(Finding("locks", PROBLEM, f"{path}: `gpm {job}` lock held by pid {holders}, "
                               f"though pid {pid} that took it is gone",
                               "a leftover child of a killed run: stop it (kill PID) if it is stuck",
                               str(path)))
        elif age > setup.lock_held_too_long_secs:
            out.append(Finding("locks", PROBLEM, f"{path}: `gpm {job}` lock held for {_duration(age)} by "
                               f"pid {pid} ({_process_name(pid)})",
                               f"a stuck run? if pid {pid} does no work, stop it (kill {pid})", str(path)))
        else:
            out.append(Finding("locks", OK, f"`gpm {job}` running (pid {pid}, {_duration(age)})",
                               path=str(path)))
    return out or [Finding("locks", OK, "no lock held")]


def _process_name(pid: int) -> str:
    import psutil

    try:
        return " ".join(psutil.Process(pid).cmdline())[:80] or psutil.Process(pid).name()
    except psutil.Error:
        return "?"


def _remove_lock_file(path: Path, job: str) -> str:
    """Unlink a lock file while holding its lock: a run that opened it meanwhile
    notices the unlink and opens the new one (gpm.locks)."""
    with exclusive_lock(path, job=job, wait_secs=0):
        path.unlink(missing_ok=True)
    return f"{path}: removed"


# --------------------------------------------------------------------------- running


CHECKS: list[Callable[[Setup], list[Finding]]] = [
    check_database, check_free_space, check_permissions, check_archive, check_locks, check_gpu, check_ollama,
]


def run_checks(setup: Setup, checks: Iterable[Callable[[Setup], list[Finding]]] = CHECKS) -> Iterator[Finding]:
    """Every finding of every check, in order (a check that cannot run is a finding too)."""
    for check in checks:
        try:
            yield from check(setup)
        except (OSError, sqlite3.Error, GpmError) as err:
            name = check.__name__.removeprefix("check_").replace("_", "-")
            yield Finding(name, PROBLEM, f"check could not run: {_one_line(err)}", "see the message")


def apply_fixes(findings: list[Finding]) -> Iterator[Finding]:
    """Run each finding's safe repair; yield the finding as each is done (status fixed, or still a problem)."""
    for finding in findings:
        if finding.repair is None:
            continue
        try:
            finding.message = finding.repair()
            finding.status, finding.advice = FIXED, ""
        except (OSError, sqlite3.Error, GpmError) as err:
            finding.message = f"{finding.fix} failed: {_one_line(err)}"
            finding.status = PROBLEM
        finding.repair = None
        yield finding


def has_problems(findings: Iterable[Finding]) -> bool:
    return any(f.status == PROBLEM for f in findings)


# --------------------------------------------------------------------------- words


def _setting(cfg: Config, dotted: str) -> str:
    """``[section] key = 'value' (where it was set)``, so the advice says which setting to change."""
    section, name = dotted.split(".")
    return f"[{section}] {name} = {cfg[dotted]!r} ({cfg.source(dotted)})"


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _size(n: float) -> str:
    return f"{n / 1024**2:.1f} MiB" if n < 1024**3 else f"{n / 1024**3:.1f} GiB"


def _duration(seconds: float) -> str:
    minutes = int(seconds) // 60
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {int(seconds) % 60:02d}s"


def render_line(finding: Finding) -> str:
    """One terminal line: status, check, message and, for a problem, what to do."""
    text = f"{finding.status:<8}{finding.check}: {finding.message}"
    if finding.advice and finding.status != OK:
        text += f"; {finding.advice}"
    return visible(text)


def summary(findings: list[Finding]) -> str:
    problems = sum(f.status == PROBLEM for f in findings)
    fixable = sum(f.repair is not None and f.status == PROBLEM for f in findings)
    if not problems:
        return "gpm doctor: all well"
    more = f"; `gpm doctor --fix` repairs {fixable}" if fixable else ""
    return f"gpm doctor: {problems} problem{'s' if problems > 1 else ''}{more}"


__all__ = ["CHECKS", "Finding", "Setup", "apply_fixes", "has_problems", "render_line", "run_checks",
           "summary"]
