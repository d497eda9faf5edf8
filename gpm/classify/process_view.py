"""A process's facts digested once for the classifier's rules: its names, the
Python program it runs, the ML frameworks it loaded and the signals seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpm.classify.cmdline import base, is_python, python_target
from gpm.classify.process_facts import ProcessFacts
from gpm.classify.known_programs import EXE_SUFFIXES, framework_of


@dataclass(slots=True)
class ProcessView:
    """Facts digested once: names, words, frameworks, Steam signs.

    ``names``: program names as seen (comm, exe name, argv[0] name);
    ``frameworks``: framework -> the library that showed it.
    """

    f: ProcessFacts
    names: list[str]
    lower: set[str]
    python: bool
    target: tuple[str, str, int] | None
    frameworks: dict[str, str]
    signals: list[str]

    @property
    def args(self) -> list[str]:
        """The program's own arguments (after ``python [opts] script|-m module``)."""
        return self.f.cmdline[self.target[2]:] if self.target else self.f.cmdline[1:]

    @property
    def module(self) -> str:
        return self.target[1] if self.target and self.target[0] == "module" else ""

    @property
    def script(self) -> str:
        return self.target[1] if self.target and self.target[0] == "script" else ""

    def exe_label(self) -> str:
        """The program's name as a label; a Windows exe without ``.exe`` and ``-Win64-Shipping``."""
        argv0 = base(self.f.cmdline[0]) if self.f.cmdline else ""
        for n in (argv0, self.f.name, base(self.f.exe)):
            if n and n.lower().endswith(".exe"):
                return EXE_SUFFIXES.sub("", n[:-4]) or n
        return argv0 or self.f.name or base(self.f.exe) or "?"

    def script_label(self) -> str:
        """A Python program's module or script as a label, else its first ``.py`` argument or name."""
        if self.target:
            kind, value, _ = self.target
            if kind == "module":
                return value
            if kind == "script":
                return base(value)
            return "python -c"
        for arg in self.f.cmdline[1:]:
            if arg.endswith(".py"):
                return base(arg)
        return self.names[0] if self.names else "?"


def view_process(f: ProcessFacts) -> ProcessView:
    """Digest ``f`` once for every rule, with the signals ``--explain`` shows."""
    argv0 = f.cmdline[0] if f.cmdline else ""
    names = []
    for n in (f.name, base(f.exe), base(argv0)):
        if n and n not in names:
            names.append(n)
    lower = {n.lower() for n in names}
    python = any(is_python(n) for n in names)
    target = python_target(f.cmdline) if python else None
    frameworks: dict[str, str] = {}
    for lib in f.libraries or ():
        b = lib.rsplit("/", 1)[-1]
        fw = framework_of(b)
        if fw:
            frameworks.setdefault(fw, b)
        if "/vllm/" in lib:
            frameworks.setdefault("vLLM", b)
    signals = [f"program names: {', '.join(names) or '(unknown)'}"]
    if target:
        signals.append(f"python {target[0]}: {target[1]}")
    if frameworks:
        signals.append("ML libraries loaded: " + ", ".join(f"{fw} ({lib})" for fw, lib in frameworks.items()))
    elif f.libraries is not None:
        signals.append(f"no ML library among {len(f.libraries)} mapped libraries")
    if f.environ:
        signals.append("environment: " + ", ".join(f"{k}={v}" for k, v in sorted(f.environ.items())))
    if f.parents:
        signals.append("parents: " + " < ".join(p.name or base(p.exe) or "?" for p in f.parents))
    if f.gpu_utilization_percent is not None:
        signals.append(f"GPU utilization {f.gpu_utilization_percent:g}%")
    if f.used_memory_bytes is not None:
        signals.append(f"GPU memory {f.used_memory_bytes / 2**20:.0f} MiB")
    if f.age_seconds is not None:
        signals.append(f"running for {f.age_seconds:.0f} s")
    if f.gone:
        signals.append("process gone before /proc could be read")
    if f.unreadable:
        signals.append("unreadable: " + ", ".join(f.unreadable))
    return ProcessView(f, names, lower, python, target, frameworks, signals)
