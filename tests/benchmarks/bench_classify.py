"""How much does classification cost? Run: python tests/benchmarks/bench_classify.py [--runs N]

Medians over N runs of:
- classifying 200 processes (the test table's realistic cases, repeated with
  varied pids and paths) with a Steam library of 300 games, the library
  parsed once and then only checked for changes once per batch
  (target: under 20 ms for all 200);
- the same 200 with one user rule of each kind configured;
- parsing that Steam library cold (what happens once, and again on change);
- the live path: reading facts from /proc for up to 200 running processes
  of this machine and classifying them (what `gpm sample` adds per sample).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from gpm.classify.process_facts import ProcessFacts, read_facts  # noqa: E402
from gpm.classify.rules import Context, classify  # noqa: E402
from gpm.classify.steam import SteamLibrary  # noqa: E402
from gpm.classify.user_rules import validate_rules  # noqa: E402
from tests.steamtree import install, new_libraryfolders  # noqa: E402
from tests.test_cli_classify import CASES  # noqa: E402

BUDGET_MS = 20.0


def processes(n: int = 200) -> list[ProcessFacts]:
    out = []
    for i in range(n):
        obj = dict(CASES[i % len(CASES)][1])
        obj["pid"] = 10_000 + i
        if "cmdline" in obj:
            obj["cmdline"] = list(obj["cmdline"]) + [f"--seed={i}"]
        out.append(ProcessFacts.from_json(obj))
    return out


def steam_tree(root: Path, games: int = 300) -> Path:
    home = root / "home"
    steam = home / ".local/share/Steam"
    second = root / "games"
    for i in range(games):
        lib = steam if i % 2 else second
        install(lib, str(1000 + i), f"Game {i}", f"Game Folder {i}")
    install(steam, "1091500", "Cyberpunk 2077", "Cyberpunk 2077")
    install(second, "892970", "Valheim", "Valheim")
    (steam / "steamapps/libraryfolders.vdf").write_text(new_libraryfolders([steam, second]))
    return home


def timed(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    facts = processes()
    rules = validate_rules([
        {"cmdline": r"my_trainer\.py", "category": "ml_training"},
        {"name": "^blender$", "category": "desktop"},
        {"appid": 763890, "category": "general_compute"},
        {"library": r"libmyengine\.so", "category": "gaming"},
        {"exe": "^/opt/sim/", "category": "gaming"},
    ], "bench")
    with tempfile.TemporaryDirectory() as tmp:
        home = steam_tree(Path(tmp))
        lib = SteamLibrary.for_homes([home])
        lib.index()

        def batch(ctx_rules=()):
            ctx = Context.from_config(list(ctx_rules), steam=lib.index)
            for f in facts:
                classify(f, ctx)

        batch()  # warm caches (regexes)
        plain = timed(batch, args.runs)
        with_rules = timed(lambda: batch(rules), args.runs)
        cold = timed(lambda: SteamLibrary.for_homes([home]).index(), max(5, args.runs // 5))
        parses = lib.parses

    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())[:200]

    def live():
        now = time.time_ns() // 1_000_000
        ctx = Context()
        for pid in pids:
            classify(read_facts(pid, now_ms=now), ctx)

    live_times = timed(live, max(5, args.runs // 5))
    med = statistics.median
    print(f"classify 200 processes (Steam library of 300 games, cached): median {med(plain):.2f} ms "
          f"(min {min(plain):.2f}, max {max(plain):.2f}); {med(plain) / BUDGET_MS:.0%} of the {BUDGET_MS:.0f} ms budget")
    print(f"  ... with 5 user rules:                                median {med(with_rules):.2f} ms")
    print(f"  per process:                                          median {med(plain) / 200 * 1000:.1f} us")
    print(f"Steam library parsed {parses} time(s) over {2 * args.runs + 1} batches; a cold parse of 300 "
          f"manifests: median {med(cold):.2f} ms")
    print(f"live: /proc facts + classify for {len(pids)} running processes: median {med(live_times):.2f} ms "
          f"({med(live_times) / max(1, len(pids)) * 1000:.0f} us per process)")
    ok = med(plain) < BUDGET_MS and parses == 1
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
