"""What is known about one GPU process: read through psutil, or from a JSON line.

psutil reads the process from ``psutil.PROCFS_PATH`` ("/proc" unless set,
e.g. to a host's /proc mounted in a container). Every read may fail: the
process exits between NVML listing it and us looking (``NoSuchProcess``),
belongs to another user (``AccessDenied``: environ, maps, exe), is a zombie,
or lives in another PID namespace (NVML reports host pids). Failures never
raise; they are recorded in ``unreadable`` (or ``gone``) so the classifier
can say what it did not see.

Three reads stay below psutil (docs/classify.md has the figures):
``proc_stat``, the one read a long-lived classifier makes of each GPU process
at every sample and scrape (psutil's ``Process(pid)``, ``name()`` and
``ppid()`` read the same file three times); ``libraries``, which reads
``maps`` where psutil's ``memory_maps()`` reads ``smaps``, ten times slower
as the kernel walks the process's page tables for it; and ``read_cmdline``,
as psutil's guess splits a lone argument holding spaces into words.

psutil is imported where a process is read: an idle GPU server's cron
``gpm sample`` has none and does not load it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from gpm.classify.redact import redact_cmdline
from gpm.humanize import os_str, os_text

# Only what classification needs is kept from the environment: the rest may
# hold secrets and is never kept by gpm.
ENV_KEYS = frozenset({
    "SteamAppId", "SteamGameId", "SteamOverlayGameId", "WINEPREFIX", "WINELOADER",
    "TORCHELASTIC_RUN_ID", "LOCAL_RANK", "WORLD_SIZE",
})
ENV_PREFIXES = ("STEAM_COMPAT_", "PROTON_", "ACCELERATE_")

MAX_PARENTS = 64


def select_env(environ: dict[str, str] | None) -> dict[str, str]:
    if not environ:
        return {}
    return {k: str(v) for k, v in environ.items() if k in ENV_KEYS or k.startswith(ENV_PREFIXES)}


@dataclass(slots=True)
class ParentFacts:
    pid: int | None = None
    name: str | None = None
    exe: str | None = None
    cmdline: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class ProcessFacts:
    """Everything the rules may look at about one process.

    ``name`` is psutil's (the kernel's comm, or the command's own name when
    comm is that name cut at 15 characters); ``environ`` holds the selected
    keys only; ``libraries`` None means unknown (unreadable or not given);
    ``parents`` nearest first; ``process_type`` "compute", "graphics" or
    "compute+graphics"; ``gone``: exited (or not visible) before it could be
    read; ``unreadable`` e.g. ["exe", "environ", "maps"].
    """

    pid: int | None = None
    name: str | None = None
    exe: str | None = None
    cmdline: list[str] = field(default_factory=list)
    user: str | None = None
    start_time_ms: int | None = None
    age_seconds: float | None = None
    cwd: str | None = None
    environ: dict[str, str] = field(default_factory=dict)
    libraries: list[str] | None = None
    parents: list[ParentFacts] = field(default_factory=list)
    used_memory_bytes: int | None = None
    gpu_utilization_percent: float | None = None
    process_type: str | None = None
    gone: bool = False
    unreadable: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "ProcessFacts":
        """The ``gpm classify`` input object -> facts (raises ValueError on bad types).

        Command lines are redacted as ``/proc``'s are, so no label is made of a secret.
        """

        def strings(value, what) -> list[str]:
            if value is None:
                return []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"'{what}' must be a list of strings")
            return list(value)

        def opt(value, types, what):
            if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
                raise ValueError(f"'{what}' has the wrong type")
            return value

        environ = obj.get("environ")
        if environ is not None and not isinstance(environ, dict):
            raise ValueError("'environ' must be an object")
        parents = []
        raw_parents = obj.get("parents") or []
        if not isinstance(raw_parents, list):
            raise ValueError("'parents' must be a list of objects")
        for p in raw_parents:
            if not isinstance(p, dict):
                raise ValueError("'parents' must be a list of objects")
            parents.append(ParentFacts(
                pid=opt(p.get("pid"), int, "parents.pid"), name=opt(p.get("name"), str, "parents.name"),
                exe=opt(p.get("exe"), str, "parents.exe"),
                cmdline=redact_cmdline(strings(p.get("cmdline"), "parents.cmdline")),
            ))
        libraries = obj.get("libraries")
        return cls(
            pid=opt(obj.get("pid"), int, "pid"),
            name=opt(obj.get("name"), str, "name"),
            exe=opt(obj.get("exe"), str, "exe"),
            cmdline=redact_cmdline(strings(obj.get("cmdline"), "cmdline")),
            user=opt(obj.get("user"), str, "user"),
            age_seconds=opt(obj.get("age_seconds"), (int, float), "age_seconds"),
            cwd=opt(obj.get("cwd"), str, "cwd"),
            environ=select_env(environ),
            libraries=None if libraries is None else strings(libraries, "libraries"),
            parents=parents,
            used_memory_bytes=opt(obj.get("used_memory_bytes"), int, "used_memory_bytes"),
            gpu_utilization_percent=opt(obj.get("gpu_utilization_percent"), (int, float),
                                        "gpu_utilization_percent"),
            process_type=opt(obj.get("type"), str, "type"),
        )


class ProcStat(NamedTuple):
    """What ``/proc/PID/stat`` says that tells whether a known process changed.

    The start time tells a reused pid from the process that had it; the name
    changes at an ``exec``; the virtual size whenever the process maps a library.
    """

    name: str
    ppid: int
    start_ticks: int
    vsize_bytes: int


def proc_stat(pid: int) -> ProcStat | None:
    """One read(2) of ``/proc/PID/stat``; None when the process is gone or hidden."""
    import psutil

    try:
        fd = os.open(f"{psutil.PROCFS_PATH}/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    open_, close = data.find(b"("), data.rfind(b")")
    rest = data[close + 2:].split()
    try:
        return ProcStat(os_text(data[open_ + 1:close]), int(rest[1]), int(rest[19]), int(rest[20]))
    except (IndexError, ValueError):
        return None


def _process(pid: int):
    """``psutil.Process(pid)``, or None when there is none to read."""
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _hidden_errors() -> tuple[type[BaseException], ...]:
    """What a read raises when this one detail is hidden (another user's, a zombie's)
    while the process itself is still there."""
    import psutil

    return psutil.AccessDenied, psutil.ZombieProcess, OSError


def read_cmdline(pid: int) -> list[str] | None:
    """The command line of ``pid``, secrets masked; None when it cannot be read.

    Read by hand: psutil's ``cmdline()`` splits a lone argument holding spaces
    into words (its guess for Chrome's rewritten titles, psutil#1179), which
    changes what the process was given. A title rewritten by setproctitle
    stays one element; the NULs after it are dropped. Secrets are masked
    here, before any rule or label sees them (#12.9).
    """
    import psutil

    try:
        with open(f"{psutil.PROCFS_PATH}/{pid}/cmdline", "rb") as f:
            parts = f.read().split(b"\0")
    except OSError:
        return None
    while parts and parts[-1] == b"":
        parts.pop()
    return redact_cmdline([os_text(p) for p in parts])


def reread(pid: int) -> tuple[list[str] | None, str | None]:
    """What a running process may change without an ``exec``: its (redacted) command
    line and its working folder; None for what cannot be read."""
    import psutil

    p = _process(pid)
    if p is None:
        return None, None
    try:
        cwd = os_str(p.cwd()) or None
    except (psutil.Error, OSError):  # exited since, or hidden: kept as known
        cwd = None
    return read_cmdline(pid), cwd


def libraries(pid: int) -> list[str] | None:
    """The shared objects (and the Windows DLLs a Proton game maps) in ``/proc/PID/maps``."""
    import psutil

    try:
        with open(f"{psutil.PROCFS_PATH}/{pid}/maps", "rb") as f:
            data = f.read()
    except OSError:
        return None
    seen: dict[str, None] = {}
    for line in data.split(b"\n"):
        slash = line.find(b"/")
        if slash < 0 or (b".so" not in line and b".dll" not in line and b".DLL" not in line):
            continue
        path = os_text(line[slash:])
        seen[path.removesuffix(" (deleted)")] = None
    return list(seen)


def read_facts(pid: int, *, now_ms: int | None = None, parents: bool = True, stat: ProcStat | None = None,
               known_parents: dict[int, tuple[ParentFacts, int]] | None = None) -> ProcessFacts:
    """Everything about ``pid``; ``stat`` is its ``proc_stat()`` when already read.

    The parent's pid comes from ``stat``: psutil's ``ppid()`` first makes sure
    the pid was not reused, by reading ``stat`` twice more. ``known_parents``
    (pid -> (facts, its ppid)) is shared by the processes of one sample: the
    workers of one job have the same parents.
    """
    import psutil

    hidden = _hidden_errors()
    f = ProcessFacts(pid=pid)
    st = stat or proc_stat(pid)
    p = None if st is None else _process(pid)
    if p is None:
        f.gone = True
        return f
    try:
        with p.oneshot():
            f.name = os_str(p.name())
            f.start_time_ms = round(p.create_time() * 1000)
            try:
                f.user = os_str(p.username())
            except hidden:
                f.unreadable.append("user")
            cmdline = read_cmdline(pid)
            if cmdline is None:
                f.unreadable.append("cmdline")
            else:
                f.cmdline = cmdline
            try:
                f.exe = os_str(p.exe()) or None
            except hidden:
                pass
            if f.exe is None:
                f.unreadable.append("exe")
            try:
                f.cwd = os_str(p.cwd()) or None
            except hidden:
                pass
            try:
                f.environ = {os_str(k): os_str(v) for k, v in select_env(p.environ()).items()}
            except hidden:
                f.unreadable.append("environ")
    except psutil.NoSuchProcess:
        f.gone = True
        return f
    if now_ms is not None:
        f.age_seconds = max(0.0, (now_ms - f.start_time_ms) / 1000)
    f.libraries = libraries(pid)
    if f.libraries is None:
        f.unreadable.append("maps")
    if parents:
        f.parents = parent_chain(st.ppid, known_parents)
    return f


def _parent(pid: int) -> tuple[ParentFacts, int] | None:
    """One parent's facts and its own parent's pid; None when it cannot be read."""
    import psutil

    hidden = _hidden_errors()
    st = proc_stat(pid)
    p = None if st is None else _process(pid)
    if p is None:
        return None
    try:
        with p.oneshot():
            parent = ParentFacts(pid=pid, name=os_str(p.name()))
            try:
                parent.exe = os_str(p.exe()) or None
            except hidden:
                pass
            parent.cmdline = read_cmdline(pid) or []
    except psutil.Error:
        return None
    return parent, st.ppid


def parent_chain(ppid: int, known: dict[int, tuple[ParentFacts, int]] | None = None) -> list[ParentFacts]:
    """The parents of a process whose parent is ``ppid``, nearest first."""
    known = {} if known is None else known
    chain: list[ParentFacts] = []
    seen = set()
    while ppid > 0 and ppid not in seen and len(chain) < MAX_PARENTS:
        seen.add(ppid)
        if ppid not in known:
            found = _parent(ppid)
            if found is None:
                break
            known[ppid] = found
        parent, next_ppid = known[ppid]
        chain.append(parent)
        ppid = next_ppid
    return chain
