"""Live classification: the sampler's enricher, and ``gpm ps``'s view.

For each GPU process of a sample: read its facts through psutil (once per
pid per sample, even when it uses several GPUs; the parents once for all the
processes of the sample), classify with the same pure
function as ``gpm classify``, and attach category, label, reason and the
stored details (command line redacted, or dropped when
``[classify] store_cmdline = false``).

Steam libraries are looked for under the home of the user running gpm and
under the homes of the users owning GPU processes, plus
``[classify] steam_paths``; each set of folders is parsed once per
``Classifier`` (the daemon keeps one) and re-parsed only when its files
change, and only when a process shows a Steam sign at all.

A long-lived ``Classifier`` (the daemon's) remembers each process by pid and
start time, so a reused pid is a new process: an unchanged process costs one
read of ``/proc/PID/stat`` per sample. Its command line and working folder
are re-read every ``refresh_secs``, its libraries then too when its address
space grew or shrank (a Python program importing torch); its parents when
its parent pid changes; everything when its name changes (an ``exec``). The
rules re-run only when one of those facts changed or a per-sample figure
crossed a threshold they use (``rules.sample_key``). Processes no longer on
any GPU are forgotten.
"""

from __future__ import annotations

import copy
import os
import pwd

from gpm.classify.process_facts import (ParentFacts, ProcessFacts, ProcStat, libraries, parent_chain, proc_stat, read_facts,
                                reread)
from gpm.classify.ollama_models import OllamaModels
from gpm.classify.rules import Context, Decision, classify, sample_key
from gpm.classify.steam import SteamLibrary
from gpm.classify.user_rules import UserRule
from gpm.config import Config
from gpm.gpu.sample import GpuSample, ProcessDetails, now_ms


# Libraries get loaded after start (a Python program importing torch) and
# setproctitle rewrites command lines: how often a known process's cmdline,
# cwd and (when its virtual size changed) maps are read again.
REFRESH_SECS = 30.0
NO_STAT = ProcStat("", 0, -1, 0)  # what a process not remembered is known by


class Known:
    """What a long-lived ``Classifier`` remembers about one running process."""

    __slots__ = ("start_ticks", "comm", "ppid", "vsize", "refreshed_ms", "facts", "details", "decisions")

    def __init__(self, stat: ProcStat, facts: ProcessFacts, details: ProcessDetails, now: int):
        self.comm, self.ppid, self.start_ticks, self.vsize = stat
        self.facts = facts  # without the per-sample figures (memory, utilization, age)
        self.details = details
        self.refreshed_ms = now
        # sample_key(...) -> (facts as classified, decision)
        self.decisions: dict[tuple, tuple[ProcessFacts, Decision]] = {}


class Classifier:
    def __init__(self, cfg: Config, refresh_secs: float = REFRESH_SECS):
        self.rules = UserRule.compile_all(cfg["classify.rules"] or [])
        self.store_cmdline = bool(cfg["classify.store_cmdline"])
        self.steam_paths = list(cfg["classify.steam_paths"] or [])
        self.refresh_ms = refresh_secs * 1000
        self.processes: dict[int, Known] = {}  # pid -> the processes of the last sample
        self._libraries: dict[tuple[str, ...], "SteamLibrary"] = {}
        self._homes: dict[str, str | None] = {}
        self._ollama_models = None
        # Parents read during the current sample: the workers of one job share them.
        self._parents: dict[int, tuple[ParentFacts, int]] = {}

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
        key = tuple(sorted(set(homes)))
        lib = self._libraries.get(key)
        if lib is None:
            lib = self._libraries[key] = SteamLibrary.for_homes(key, self.steam_paths)
        return lib

    def context(self, users: set[str | None] = frozenset()) -> Context:
        homes = [os.path.expanduser("~")]
        homes += [h for h in (self._home(u) for u in users) if h]
        return Context(self.rules, steam=lambda: self.steam_library(homes).index(),
                       ollama_model=self.ollama_model)

    def ollama_model(self, blob_path: str) -> str | None:
        if self._ollama_models is None:
            self._ollama_models = OllamaModels()
        return self._ollama_models(blob_path)

    def facts(self, pid: int, now: int | None = None) -> ProcessFacts:
        return read_facts(pid, now_ms=now if now is not None else now_ms())

    def details(self, facts: ProcessFacts) -> ProcessDetails:
        cmdline = list(facts.cmdline) if self.store_cmdline and facts.cmdline else None  # redacted when read
        return ProcessDetails(user=facts.user, exe=facts.exe, cmdline=cmdline,
                              start_time_ms=facts.start_time_ms)

    def known(self, pid: int, now: int) -> Known:
        """What is known about ``pid`` now, re-reading only what may have changed.

        A pid this /proc does not show (gone, or a host pid NVML reports
        into a container) is remembered as such while it stays on a GPU, so
        its decision is made once, not at every sample or scrape (#14).
        """
        st = proc_stat(pid)
        if st is None:
            k = self.processes.get(pid)
            if k is None or k.start_ticks != NO_STAT.start_ticks:
                gone = ProcessFacts(pid=pid, gone=True)
                k = self.processes[pid] = Known(NO_STAT, gone, self.details(gone), now)
            return k
        k = self.processes.get(pid)
        if k is None or k.start_ticks != st.start_ticks or k.comm != st.name:
            f = read_facts(pid, stat=st, known_parents=self._parents)
            if f.gone:  # exited between the two reads
                self.processes.pop(pid, None)
                return Known(NO_STAT, f, self.details(f), now)
            k = self.processes[pid] = Known(st, f, self.details(f), now)
            return k
        f = k.facts
        changed = False
        if st.ppid != k.ppid:
            k.ppid = st.ppid
            f.parents = parent_chain(st.ppid, self._parents)
            changed = True
        if abs(now - k.refreshed_ms) >= self.refresh_ms:  # abs: the wall clock may be set back
            k.refreshed_ms = now
            cmdline, cwd = reread(pid)
            if cmdline is not None and cmdline != f.cmdline:
                f.cmdline = cmdline
                k.details = self.details(f)
                changed = True
            if cwd is not None and cwd != f.cwd:
                f.cwd, changed = cwd, True
            if st.vsize_bytes != k.vsize:
                k.vsize = st.vsize_bytes
                libs = libraries(pid)
                if libs is not None and libs != f.libraries:
                    f.libraries, changed = libs, True
        if changed:
            k.decisions.clear()
        return k

    def _unknown(self, pid: int, now: int, err: Exception) -> Known:
        """What is kept of a process whose facts could not be read: nothing but its pid."""
        _warn("pid %s: facts not read (%s: %s)", pid, type(err).__name__, err)
        self.processes.pop(pid, None)
        f = ProcessFacts(pid=pid, unreadable=["everything"])
        return Known(NO_STAT, f, ProcessDetails(), now)

    def enrich(self, samples: list[GpuSample]) -> dict[int, tuple[ProcessFacts, Decision]]:
        """Classify every process of ``samples`` in place; return {pid: (facts, decision)}.

        The facts are those the decision was made on (per-sample figures included).
        """
        seen: dict[int, Known] = {}
        self._parents.clear()
        for s in samples:
            for p in s.processes:
                if p.pid not in seen:
                    try:
                        seen[p.pid] = self.known(p.pid, s.ts_ms)
                    except Exception as err:  # noqa: BLE001 - one process must not stop the sample (#12.2)
                        seen[p.pid] = self._unknown(p.pid, s.ts_ms, err)
        for pid in [pid for pid in self.processes if pid not in seen]:
            del self.processes[pid]
        ctx = None
        out: dict[int, tuple[ProcessFacts, Decision]] = {}
        for s in samples:
            for p in s.processes:
                k = seen[p.pid]
                base = k.facts
                age = None if base.start_time_ms is None else max(0.0, (s.ts_ms - base.start_time_ms) / 1000)
                util = p.sm_utilization_percent if p.sm_utilization_percent is not None \
                    else s.utilization_gpu_percent
                key = sample_key(p.used_memory_bytes, util, age)
                hit = k.decisions.get(key)
                if hit is None:
                    f = copy.copy(base)
                    f.name = f.name or p.name
                    f.used_memory_bytes = p.used_memory_bytes
                    f.gpu_utilization_percent = util
                    f.age_seconds = age
                    f.process_type = p.type
                    if ctx is None:
                        ctx = self.context({v.facts.user for v in seen.values()})
                    try:
                        decision = classify(f, ctx)
                    except Exception as err:  # noqa: BLE001 - as above
                        _warn("pid %s: not classified (%s: %s)", p.pid, type(err).__name__, err)
                        decision = Decision("general_compute", f.name or "?", "not classified: gpm failed on it",
                                            "error")
                    hit = k.decisions[key] = (f, decision)
                f, d = hit
                p.name = p.name or f.name
                p.category, p.label, p.reason = d.category, d.label, d.reason
                p.details = k.details
                out[p.pid] = hit
        return out


def enrich_samples(samples: list[GpuSample], sampler) -> None:
    """The sampler's enricher (see gpm.sampling.default_enrichers)."""
    if sampler.classifier is None:
        sampler.classifier = Classifier(sampler.cfg)
    sampler.classifier.enrich(samples)



def _warn(msg: str, *args) -> None:
    """A rare warning; ``logging`` is imported only then (a cold ``gpm sample`` skips it)."""
    import logging

    logging.getLogger(__name__).warning(msg, *args)
