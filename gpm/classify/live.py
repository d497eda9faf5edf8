"""Live classification: the sampler's enricher, and ``gpm ps``'s view.

For each GPU process of a sample: read its facts from ``/proc`` (once per
pid per sample, even when it uses several GPUs), classify with the same pure
function as ``gpm classify``, and attach category, label, reason and the
stored details (command line redacted, or dropped when
``[classify] store_cmdline = false``).

Steam libraries are looked for under the home of the user running gpm and
under the homes of the users owning GPU processes, plus
``[classify] steam_paths``; each set of folders is parsed once per
``Classifier`` (the daemon keeps one) and re-parsed only when its files
change, and only when a process shows a Steam sign at all.
"""

from __future__ import annotations

import pwd
from pathlib import Path
from typing import TYPE_CHECKING

from gpm.classify.facts import ProcessFacts, ProcReader
from gpm.classify.redact import redact_cmdline
from gpm.classify.rules import Context, Decision, UserRule, classify
from gpm.config import Config
from gpm.gpu.model import GpuSample, ProcessDetails, now_ms

if TYPE_CHECKING:
    from gpm.classify.steam import SteamLibrary


class Classifier:
    def __init__(self, cfg: Config, proc: str = "/proc"):
        self.rules = UserRule.compile_all(cfg["classify.rules"] or [])
        self.store_cmdline = bool(cfg["classify.store_cmdline"])
        self.steam_paths = list(cfg["classify.steam_paths"] or [])
        self.reader = ProcReader(proc)
        self._libraries: dict[tuple[str, ...], "SteamLibrary"] = {}
        self._homes: dict[str, str | None] = {}
        self._ollama_models = None

    def _home(self, user: str | None) -> str | None:
        if user is None:
            return None
        if user not in self._homes:
            try:
                self._homes[user] = pwd.getpwnam(user).pw_dir
            except KeyError:
                self._homes[user] = None
        return self._homes[user]

    def steam_library(self, homes: list[str]) -> "SteamLibrary":
        from gpm.classify.steam import SteamLibrary

        key = tuple(sorted(set(homes)))
        lib = self._libraries.get(key)
        if lib is None:
            lib = self._libraries[key] = SteamLibrary.for_homes(key, self.steam_paths)
        return lib

    def context(self, users: set[str | None] = frozenset()) -> Context:
        homes = [str(Path.home())]
        homes += [h for h in (self._home(u) for u in users) if h]
        return Context(self.rules, steam=lambda: self.steam_library(homes).index(),
                       ollama_model=self.ollama_model)

    def ollama_model(self, blob_path: str) -> str | None:
        if self._ollama_models is None:
            from gpm.classify.ollama_models import OllamaModels

            self._ollama_models = OllamaModels()
        return self._ollama_models(blob_path)

    def facts(self, pid: int, now: int | None = None) -> ProcessFacts:
        return self.reader.facts(pid, now_ms=now if now is not None else now_ms())

    def details(self, facts: ProcessFacts) -> ProcessDetails:
        cmdline = redact_cmdline(facts.cmdline) if self.store_cmdline and facts.cmdline else None
        return ProcessDetails(user=facts.user, exe=facts.exe, cmdline=cmdline,
                              start_time_ms=facts.start_time_ms)

    def enrich(self, samples: list[GpuSample]) -> dict[int, tuple[ProcessFacts, Decision]]:
        """Classify every process of ``samples`` in place; return {pid: (facts, decision)}."""
        seen: dict[int, ProcessFacts] = {}
        for s in samples:
            for p in s.processes:
                if p.pid not in seen:
                    seen[p.pid] = self.facts(p.pid, s.ts_ms)
        ctx = self.context({f.user for f in seen.values()})
        out: dict[int, tuple[ProcessFacts, Decision]] = {}
        for s in samples:
            for p in s.processes:
                base = seen[p.pid]
                f = ProcessFacts(**{k: getattr(base, k) for k in base.__dataclass_fields__})
                f.name = f.name or p.name
                f.used_memory_bytes = p.used_memory_bytes
                f.gpu_utilization_percent = (p.sm_utilization_percent if p.sm_utilization_percent is not None
                                             else s.utilization_gpu_percent)
                f.process_type = p.type
                d = classify(f, ctx)
                p.name = p.name or f.name
                p.category, p.label, p.reason = d.category, d.label, d.reason
                p.details = self.details(f)
                out[p.pid] = (f, d)
        return out


def enrich_samples(samples: list[GpuSample], sampler) -> None:
    """The sampler's enricher (see gpm.sampling.default_enrichers)."""
    clf = sampler.state.get("classify")
    if clf is None:
        clf = sampler.state["classify"] = Classifier(sampler.cfg)
    clf.enrich(samples)

