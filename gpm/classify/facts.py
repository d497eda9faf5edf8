"""What is known about one GPU process: read from ``/proc``, or from a JSON line.

Reading ``/proc`` directly (not psutil) keeps ``gpm sample`` cheap. Every read
may fail: the process exits between NVML listing it and us looking, belongs
to another user (``environ``, ``maps`` and ``exe`` are then unreadable) or
lives in another PID namespace. Failures never raise; they are recorded in
``unreadable`` (or ``gone``) so the classifier can say what it did not see.
"""

from __future__ import annotations

import os
import pwd
from typing import Any

from gpm.classify.redact import redact_cmdline
from gpm.humanize import os_text
from gpm.plain import Plain

# Only what classification needs is kept from the environment: the rest may
# hold secrets and is never read into gpm.
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


class ParentFacts(Plain):
    __slots__ = ("pid", "name", "exe", "cmdline")

    def __init__(self, pid: int | None = None, name: str | None = None, exe: str | None = None,
                 cmdline: list[str] | None = None) -> None:
        self.pid = pid
        self.name = name
        self.exe = exe
        self.cmdline = [] if cmdline is None else cmdline

    def to_json(self) -> dict:
        return {"pid": self.pid, "name": self.name, "exe": self.exe, "cmdline": self.cmdline}


class ProcessFacts(Plain):
    """Everything the rules may look at about one process.

    ``name`` is the kernel's comm (15 characters at most); ``environ`` holds
    the selected keys only; ``libraries`` None means unknown (unreadable or
    not given); ``parents`` nearest first; ``process_type`` "compute",
    "graphics" or "compute+graphics"; ``gone``: exited (or not visible)
    before /proc could be read; ``unreadable`` e.g. ["exe", "environ", "maps"].
    """

    __slots__ = ("pid", "name", "exe", "cmdline", "user", "start_time_ms", "age_seconds", "cwd", "environ",
                 "libraries", "parents", "used_memory_bytes", "gpu_utilization_percent", "process_type", "gone",
                 "unreadable")

    def __init__(self, pid: int | None = None, name: str | None = None, exe: str | None = None,
                 cmdline: list[str] | None = None, user: str | None = None, start_time_ms: int | None = None,
                 age_seconds: float | None = None, cwd: str | None = None, environ: dict[str, str] | None = None,
                 libraries: list[str] | None = None, parents: list[ParentFacts] | None = None,
                 used_memory_bytes: int | None = None, gpu_utilization_percent: float | None = None,
                 process_type: str | None = None, gone: bool = False, unreadable: list[str] | None = None) -> None:
        self.pid = pid
        self.name = name
        self.exe = exe
        self.cmdline = [] if cmdline is None else cmdline
        self.user = user
        self.start_time_ms = start_time_ms
        self.age_seconds = age_seconds
        self.cwd = cwd
        self.environ = {} if environ is None else environ
        self.libraries = libraries
        self.parents = [] if parents is None else parents
        self.used_memory_bytes = used_memory_bytes
        self.gpu_utilization_percent = gpu_utilization_percent
        self.process_type = process_type
        self.gone = gone
        self.unreadable = [] if unreadable is None else unreadable

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


class ProcReader:
    """Reads facts from ``/proc`` (or a copy of it), with per-instance caches."""

    def __init__(self, proc: str = "/proc"):
        self.proc = proc
        self._users: dict[int, str] = {}
        self._boot_ms: int | None = None
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _read(self, pid: int, what: str) -> bytes | None:
        try:
            with open(f"{self.proc}/{pid}/{what}", "rb") as f:
                return f.read()
        except OSError:
            return None

    def _read_small(self, pid: int, what: str) -> bytes | None:
        """One read(2) of a small file (``stat``): about half the cost of ``open()``,
        which counts when the daemon looks at every GPU process every second."""
        try:
            fd = os.open(f"{self.proc}/{pid}/{what}", os.O_RDONLY)
        except OSError:
            return None
        try:
            return os.read(fd, 4096)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _link(self, pid: int, what: str) -> str | None:
        try:
            target = os_text(os.readlink(os.fsencode(f"{self.proc}/{pid}/{what}")))
        except OSError:
            return None
        return target[:-10] if target.endswith(" (deleted)") else target

    def boot_ms(self) -> int:
        if self._boot_ms is None:
            self._boot_ms = 0
            data = self._read_path(f"{self.proc}/stat") or b""
            for line in data.splitlines():
                if line.startswith(b"btime "):
                    self._boot_ms = int(line.split()[1]) * 1000
        return self._boot_ms

    @staticmethod
    def _read_path(path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            return None

    def user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name

    def stat(self, pid: int) -> tuple[str, int, int, int] | None:
        """(comm, ppid, start ticks since boot, virtual memory bytes) from /proc/PID/stat.

        The start time tells a reused pid from the process that had it; the
        virtual size changes whenever the process maps a library.
        """
        data = self._read_small(pid, "stat")
        if not data:
            return None
        open_, close = data.find(b"("), data.rfind(b")")
        rest = data[close + 2:].split()
        try:
            return os_text(data[open_ + 1:close]), int(rest[1]), int(rest[19]), int(rest[20])
        except (IndexError, ValueError):
            return None

    def start_ms(self, start_ticks: int) -> int:
        return self.boot_ms() + start_ticks * 1000 // self._tick

    def cwd(self, pid: int) -> str | None:
        return self._link(pid, "cwd")

    def cmdline(self, pid: int) -> list[str] | None:
        data = self._read(pid, "cmdline")
        if data is None:
            return None
        parts = data.split(b"\0")
        while parts and parts[-1] == b"":
            parts.pop()  # the end, and the NULs a rewritten title leaves behind
        # A process that rewrote its title into one string (setproctitle) has
        # no NULs between arguments: keep it as one element. Secrets are masked
        # here, before any rule or label sees them (#12.9).
        return redact_cmdline([os_text(p) for p in parts])

    def environ(self, pid: int) -> dict[str, str] | None:
        data = self._read(pid, "environ")
        if data is None:
            return None
        out = {}
        for item in data.split(b"\0"):
            key, sep, value = item.partition(b"=")
            if sep:
                k = os_text(key)
                if k in ENV_KEYS or k.startswith(ENV_PREFIXES):
                    out[k] = os_text(value)
        return out

    def libraries(self, pid: int) -> list[str] | None:
        data = self._read(pid, "maps")
        if data is None:
            return None
        seen: dict[str, None] = {}
        for line in data.split(b"\n"):
            # Shared objects (and the Windows DLLs a Proton game maps).
            slash = line.find(b"/")
            if slash < 0 or (b".so" not in line and b".dll" not in line and b".DLL" not in line):
                continue
            path = os_text(line[slash:])
            if path.endswith(" (deleted)"):
                path = path[:-10]
            seen[path] = None
        return list(seen)

    def facts(self, pid: int, *, now_ms: int | None = None, parents: bool = True,
              stat: tuple[str, int, int, int] | None = None) -> ProcessFacts:
        """Everything about ``pid``; ``stat`` is its ``stat()`` when already read."""
        f = ProcessFacts(pid=pid)
        st = stat or self.stat(pid)
        if st is None:
            f.gone = True
            return f
        f.name, ppid, start_ticks, _ = st
        f.start_time_ms = self.start_ms(start_ticks)
        if now_ms is not None:
            f.age_seconds = max(0.0, (now_ms - f.start_time_ms) / 1000)
        try:
            f.user = self.user(os.stat(f"{self.proc}/{pid}").st_uid)
        except OSError:
            f.unreadable.append("user")
        cmd = self.cmdline(pid)
        if cmd is None:
            f.unreadable.append("cmdline")
        else:
            f.cmdline = cmd
        f.exe = self._link(pid, "exe")
        if f.exe is None:
            f.unreadable.append("exe")
        f.cwd = self.cwd(pid)
        env = self.environ(pid)
        if env is None:
            f.unreadable.append("environ")
        else:
            f.environ = env
        f.libraries = self.libraries(pid)
        if f.libraries is None:
            f.unreadable.append("maps")
        if parents:
            f.parents = self.parent_chain(ppid)
        return f

    def parent_chain(self, ppid: int) -> list[ParentFacts]:
        chain: list[ParentFacts] = []
        seen = set()
        while ppid > 0 and ppid not in seen and len(chain) < MAX_PARENTS:
            seen.add(ppid)
            st = self.stat(ppid)
            if st is None:
                break
            name, next_ppid, _, _ = st
            chain.append(ParentFacts(pid=ppid, name=name, exe=self._link(ppid, "exe"),
                                     cmdline=self.cmdline(ppid) or []))
            ppid = next_ppid
        return chain
