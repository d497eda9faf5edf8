"""The classifier: ``classify(facts, context) -> Decision``, a pure function.

Live classification (``gpm sample``, ``gpm ps``) and ``gpm classify`` both
call it, so a rule tested with JSON behaves the same on a real machine.

Order of decision, first match wins:

1. user rules (``[[classify.rules]]``), in file order;
2. a Steam game: an app id in the environment (``SteamAppId``...) or in the
   parent chain (``reaper SteamLaunch AppId=N``), or an exe (or Windows path,
   or working folder) under ``steamapps/common/<installdir>``;
3. desktop: display servers, compositors, browsers and their GPU processes,
   the Steam client, video players;
4. LLM inference: known servers and runners (Ollama, llama.cpp, vLLM, TGI,
   SGLang, LM Studio, koboldcpp, TabbyAPI/exllama, ...), by name;
5. ML training: training launchers and words (torchrun, deepspeed,
   ``accelerate launch``, ``train``, ``--epochs``...);
6. LLM inference: an ML framework loaded plus serving or generating signals;
7. weaker gaming signals: Windows executables (Wine/Proton), games started by
   the Steam client, game engines, game folders, and the original heuristic
   (GPU busier than 60 % plus an exe pattern);
8. ML training: a long-lived, high-memory framework process serving nothing;
9. general compute, labelled with the exe name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

from gpm.classify.cmdline import after, base, model_label, option, title_words, words
from gpm.classify.process_facts import ProcessFacts
from gpm.classify.known_programs import (BROWSERS, CUDNN_ONLY, DESKTOP, FINE_TUNE, GAME_EXE, GAME_NAME, GAME_PATH,
                                         GENERAL, GODOT, SERVE_OPTION, SERVE_WORDS, STEAM_CLIENT, TRAIN_OPTION,
                                         TRAIN_WORDS, TRAINABLE, UNREAL, VIDEO_PLAYERS, WINE, WINE_SYSTEM)
from gpm.classify.process_view import ProcessView, view_process
from gpm.classify.steam import SteamIndex
from gpm.classify.steam_signs import steam_game
from gpm.classify.user_rules import UserRule

BUSY_PERCENT = 60  # the original design's "the GPU is busy" threshold for games
LONG_LIVED_SECS = 600
HIGH_MEMORY_BYTES = 2 * 1024**3


def sample_key(used_memory_bytes: int | None, gpu_utilization_percent: float | None,
               age_seconds: float | None) -> tuple[bool | None, bool | None, bool | None]:
    """Which side of each threshold above a process's per-sample facts are on.

    Everything else ``classify`` reads is fixed for a running process or
    changes rarely; for equal other facts, equal keys give the same category,
    label and rule (the figures a reason quotes are those of the sample that
    decided). Live classification re-runs the rules only when this changes.
    """
    return (None if gpu_utilization_percent is None else gpu_utilization_percent > BUSY_PERCENT,
            None if used_memory_bytes is None else used_memory_bytes >= HIGH_MEMORY_BYTES,
            None if age_seconds is None else age_seconds >= LONG_LIVED_SECS)


# ---------------------------------------------------------------- context


@dataclass
class Context:
    """What the classifier may consult besides the facts: user rules, Steam.

    ``steam`` is an index or a function returning one; a function is called
    at most once and only when a process shows a Steam sign, so a machine
    without games never scans for Steam libraries. ``ollama_model`` maps a
    blob path to "llama3.1:8b" (gpm.classify.ollama_models.OllamaModels), or None.
    """

    rules: list[UserRule] = field(default_factory=list)
    steam: SteamIndex | Callable[[], SteamIndex | None] | None = None
    ollama_model: Callable[[str], str | None] | None = None

    @classmethod
    def from_config(cls, rules: list[dict], steam=None, ollama_model=None) -> "Context":
        return cls(UserRule.compile_all(rules or []), steam, ollama_model)

    def steam_index(self) -> SteamIndex | None:
        if callable(self.steam):
            self.steam = self.steam()
        return self.steam


@dataclass(slots=True)
class Decision:
    """The verdict: ``rule`` says which rule decided ("user rule #2",
    "llm_server:ollama"); ``signals`` is everything seen, for --explain."""

    category: str
    label: str
    reason: str
    rule: str
    signals: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"category": self.category, "label": self.label, "reason": self.reason}


# ---------------------------------------------------------------- built-in rules


def _desktop(v: ProcessView) -> tuple[str, str] | None:
    argv = v.f.cmdline
    for n in v.names:
        low = n.lower()
        if low in STEAM_CLIENT:
            return "Steam client", f"{n} is part of the Steam client"
        if low in DESKTOP:
            return DESKTOP[low], f"{n} is a display server or desktop shell"
    if "explorer.exe" in v.lower:
        return "Wine desktop", "explorer.exe is Wine's desktop shell"
    # Chromium and Electron rewrite their title into one string: search the joined text.
    if "--type=gpu-process" in " ".join(argv):
        app = next((BROWSERS[n.lower()] for n in v.names if n.lower() in BROWSERS), None)
        app = app or base(v.f.exe) or v.names[0]
        return app, f"{app} GPU process (--type=gpu-process)"
    for n in v.names:
        low = n.lower()
        if low in BROWSERS:
            return BROWSERS[low], f"{n} is a web browser"
        if low in VIDEO_PLAYERS:
            return VIDEO_PLAYERS[low], f"{n} is a video player"
    return None


def _llm_server(v: ProcessView, ctx: Context) -> tuple[str, str, str] | None:
    """(label, reason, rule id) for a known LLM server or runner."""
    argv = v.args
    low = v.lower
    mod = v.module
    paths = " ".join([v.f.exe or "", v.f.cwd or "", " ".join(v.f.cmdline[:3])]).lower()
    libs = " ".join(v.f.libraries or ()).lower()

    def model(*opts: str, positional: str | None = None, default: str) -> str:
        value = option(argv, *opts) if opts else None
        if value is None and positional:
            value = after(argv, positional)
        return model_label(value) or default

    if any(n.startswith("ollama") for n in low):
        if (argv and argv[0] == "runner") or any(n.startswith("ollama_llama") for n in low):
            blob = option(argv, "--model") or ""
            name = ctx.ollama_model(blob) if ctx.ollama_model and blob else None
            if name:
                v.signals.append(f"Ollama manifest names {base(blob)[:19]}… {name}")
            return name or model("--model", default="ollama runner"), "Ollama model runner", "llm:ollama_runner"
        return "ollama", "Ollama server" + (" (ollama serve)" if "serve" in argv else ""), "llm:ollama"
    if low & {"lm studio", "lm-studio", "lmstudio", "lms"} or "lm studio" in paths or "lm-studio" in paths \
            or ".lmstudio" in paths or "lmstudio" in libs or "lm-studio" in libs:
        return model("--model", "-m", default="LM Studio"), "LM Studio", "llm:lmstudio"
    llama_names = {
        "llama-server", "llama-cli", "llama-run", "llama-simple", "llama-simple-chat", "llama-bench",
        "llama-mtmd-cli", "llama-llava-cli", "llama-gemma3-cli", "llama-parallel", "llama-speculative",
        "llama-lookup", "llama-batched", "llama-embedding", "llama-perplexity", "llama-gguf",
        "llamafile", "llama-server-cuda", "llama-cpp-server",
    }
    hit = low & llama_names or {n for n in low if n.endswith(".llamafile")}
    gguf = option(argv, "-m", "--model") or ""
    if not hit and low & {"main", "server"} and ("ggml" in v.frameworks or gguf.endswith(".gguf")):
        hit = low & {"main", "server"}
    if hit or mod.startswith("llama_cpp"):
        which = sorted(hit)[0] if hit else mod
        label = model_label(option(argv, "-m", "--model")) or option(argv, "-hf", "-hfr", "--hf-repo") \
            or ("llamafile" if "llamafile" in which else "llama.cpp")
        return label, f"llama.cpp ({which})", "llm:llama.cpp"
    if "vllm" in low or mod.startswith("vllm") or "vLLM" in v.frameworks:
        return model("--model", positional="serve", default="vLLM"), "vLLM server", "llm:vllm"
    if any(n.startswith("text-generation") for n in low) or mod.startswith("text_generation_server"):
        return (model("--model-id", positional="serve", default="text-generation-inference"),
                "Hugging Face text-generation-inference", "llm:tgi")
    if "sglang" in low or mod.startswith("sglang"):
        return model("--model-path", "--model", default="SGLang"), "SGLang server", "llm:sglang"
    if any(n.startswith("koboldcpp") for n in low) or base(v.script).lower().startswith("koboldcpp"):
        value = option(argv, "--model", "-m") or next((a for a in argv if a.endswith(".gguf")), None)
        return model_label(value) or "koboldcpp", "koboldcpp", "llm:koboldcpp"
    if "tabbyapi" in paths or "exllama" in v.frameworks or mod.startswith("exllama"):
        name = "TabbyAPI" if "tabbyapi" in paths else "exllama"
        return model("--model-name", "--model_name", "--model-dir", default=name), f"{name} (exllama)", "llm:exllama"
    if "text-generation-webui" in paths:
        return model("--model", default="text-generation-webui"), "text-generation-webui", "llm:tgwebui"
    if "aphrodite" in low or mod.startswith("aphrodite"):
        return model("--model", positional="serve", default="Aphrodite"), "Aphrodite engine", "llm:aphrodite"
    if "mlc_llm" in low or mod.startswith("mlc_llm"):
        return model("--model", positional="serve", default="MLC LLM"), "MLC LLM", "llm:mlc"
    if low & {"local-ai", "localai"}:
        return "LocalAI", "LocalAI server", "llm:localai"
    if "gpt4all" in low or "gpt4all" in paths:
        return "GPT4All", "GPT4All", "llm:gpt4all"
    if "trtllm-serve" in low:
        return model(positional="trtllm-serve", default="TensorRT-LLM"), "TensorRT-LLM server", "llm:trtllm"
    if "tritonserver" in low:
        return "Triton Inference Server", "NVIDIA Triton Inference Server", "llm:triton"
    for marker, name in (("comfyui", "ComfyUI"), ("stable-diffusion-webui", "Stable Diffusion web UI"),
                         ("invokeai", "InvokeAI"), ("fooocus", "Fooocus")):
        if marker in paths or marker in low:
            return name, f"{name} (image generation server)", "llm:imagegen"
    libllama = next((b for b in map(base, v.f.libraries or ()) if b.startswith("libllama")), None)
    if libllama:
        return model("-m", "--model", default=base(v.f.exe) or v.names[0]), f"loaded {libllama} (llama.cpp)", \
            "llm:libllama"
    return None



def _training(v: ProcessView) -> tuple[list[str], list[str]]:
    """(strong, weak) training signals."""
    strong, weak = [], []
    argv = v.f.cmdline
    own = words(*(n for n in v.names), v.module, base(v.script))
    hits = own & TRAIN_WORDS
    if hits:
        strong.append(f"program or script name says {', '.join(sorted(hits))!r}")
    if FINE_TUNE.search(" ".join([v.module, base(v.script)] + v.names)):
        strong.append("script name says 'fine-tune'")
    subcommands = {a for a in v.args[:3] if a in ("train", "finetune", "fit", "pretrain", "sft", "launch")}
    if "launch" in subcommands and not ({"accelerate"} & (own | words(*argv[:3]))):
        subcommands.discard("launch")
    if subcommands:
        strong.append(f"subcommand {', '.join(sorted(subcommands))!r}")
    opts = [a.split("=")[0] for a in argv if TRAIN_OPTION.match(a)]
    if opts:
        strong.append(f"training options {', '.join(opts)}")
    for key in ("TORCHELASTIC_RUN_ID", "LOCAL_RANK"):
        if key in v.f.environ:
            strong.append(f"launched by a distributed launcher (env {key})")
            break
    for p in v.f.parents:
        pw = words(p.name or "", base(p.exe), *(p.cmdline[:4]))
        ph = pw & {"torchrun", "deepspeed", "horovodrun", "accelerate", "lightning", "axolotl",
                   "torchtune", "llamafactory", "composer", "colossalai"}
        if "accelerate" in ph and "launch" not in pw:
            ph.discard("accelerate")
        if ph or (pw & {"run", "launch"} and {"torch", "distributed"} <= pw):
            strong.append(f"parent {p.name or base(p.exe)} is a training launcher")
            break
    rest = words(*argv[1:]) - own
    if rest & TRAIN_WORDS or FINE_TUNE.search(" ".join(argv[1:])):
        weak.append("command line mentions " + repr(", ".join(sorted(rest & TRAIN_WORDS)) or "fine-tune"))
    return strong, weak


def _serving(v: ProcessView) -> tuple[list[str], list[str]]:
    strong, weak = [], []
    own = words(v.module, base(v.script).removesuffix(".py"))
    hits = own & SERVE_WORDS
    if hits:
        strong.append(f"script name says {', '.join(sorted(hits))!r}")
    argv = v.f.cmdline
    servers = words(*argv[:3]) & {"uvicorn", "gunicorn", "hypercorn", "gradio", "streamlit", "fastapi", "flask"}
    if servers:
        strong.append(f"runs under {', '.join(sorted(servers))}")
    opts = [a.split("=")[0] for a in argv if SERVE_OPTION.match(a)]
    if opts:
        strong.append(f"listens ({', '.join(opts)})")
    rest = (words(*argv[1:]) - own) & SERVE_WORDS
    if rest:
        weak.append(f"command line mentions {', '.join(sorted(rest))!r}")
    return strong, weak


def _weak_gaming(v: ProcessView) -> tuple[str, str, str] | None:
    f = v.f
    argv0 = f.cmdline[0] if f.cmdline else ""
    exe_names = [n for n in (base(argv0), f.name or "", base(f.exe)) if n]
    wine = [n for n in exe_names if "wine" in n.lower() or "preloader" in n.lower()]
    wine_env = [k for k in ("WINEPREFIX", "STEAM_COMPAT_DATA_PATH", "WINELOADER") if k in f.environ]
    wine_parent = [p.name or base(p.exe) for p in f.parents
                   if WINE.search(" ".join([p.name or "", p.exe or ""] + p.cmdline[:2]))]
    under = " under Wine/Proton" if wine or wine_env or wine_parent else ""
    windows = next((n for n in exe_names if GAME_NAME.search(n) and n.lower() not in WINE_SYSTEM), None)
    if windows and (windows.lower().endswith(".exe") or "shipping" in windows.lower()):
        kind = "Unreal Engine game" if "shipping" in windows.lower() else "Windows executable"
        return v.exe_label(), f"{kind} {windows}{under}", "gaming:windows_exe"
    if "explorer.exe" in {n.lower() for n in exe_names} and under:
        return None
    steam_parent = next((p for p in f.parents if (p.name or "").lower() in ("steam", "reaper")
                         or base(p.exe).lower() == "steam" or any(a.endswith("steam.sh") for a in p.cmdline[:2])),
                        None)
    if steam_parent is not None and not v.python:
        return (v.exe_label(), f"native game started by the Steam client (parent {steam_parent.name})",
                "gaming:steam_child")
    engine = None
    for lib in f.libraries or ():
        b = base(lib)
        if b.startswith("UnityPlayer"):
            engine = f"Unity engine ({b})"
        elif UNREAL.match(b):
            engine = f"Unreal Engine ({b})"
        elif GODOT.match(b):
            engine = f"Godot engine ({b})"
        if engine:
            break
    if engine and not v.frameworks.keys() & TRAINABLE:
        return v.exe_label(), f"loaded the {engine}", "gaming:engine"
    if f.exe and GAME_PATH.search(f.exe) and not v.python:
        return v.exe_label(), f"installed in a games folder ({f.exe})", "gaming:games_folder"
    util = f.gpu_utilization_percent
    pattern = next((n for n in exe_names if GAME_EXE.search(n)), None)
    if util is not None and util > BUSY_PERCENT and pattern and not v.frameworks and not v.python:
        return (v.exe_label(), f"GPU at {util:g}% and a game-like exe name {pattern} (weak signal)",
                "gaming:busy_heuristic")
    return None


def _unknown_note(f: ProcessFacts) -> str:
    if f.gone:
        return "; the process exited before /proc could be read, so only its name was known"
    missing = [m for m in f.unreadable if m in ("environ", "maps", "exe", "cmdline")]
    if missing:
        return f"; could not read its {', '.join(missing)} (another user's or a container's process?)"
    return ""


def _user_rule(v: ProcessView, ctx: Context, appid: str | None) -> Decision | None:
    for rule in ctx.rules:
        if rule.matches(v, appid):
            default = v.script_label() if v.python else (base(v.f.exe) or v.f.name or "?")
            return Decision(rule.category, rule.label or default, f"matched {rule.describe()}",
                            f"user rule #{rule.index}")
    return None


def classify(f: ProcessFacts, ctx: Context | None = None) -> Decision:
    """Decide the category, label and reason of one process."""
    ctx = ctx or Context()
    title = title_words(f)
    if title is not None:
        f = copy.copy(f)
        f.cmdline = title
    v = view_process(f)
    note = _unknown_note(f)

    def done(category: str, label: str, reason: str, rule: str) -> Decision:
        v.signals.append(f"decided by {rule}")
        return Decision(category, label or "?", reason + note, rule, v.signals)

    # Steam's app id is needed by user rules too; look it up only when a sign is there.
    steam = steam_game(v, ctx.steam_index)
    if ctx.rules:
        d = _user_rule(v, ctx, steam[2] if steam else None)
        if d is not None:
            return done(d.category, d.label, d.reason, d.rule)
    if steam:
        return done("gaming", steam[0], steam[1], "gaming:steam")
    desk = _desktop(v)
    if desk:
        return done("desktop", desk[0], desk[1], "desktop")
    llm = _llm_server(v, ctx)
    if llm:
        return done("llm_inference", llm[0], llm[1], llm[2])

    frameworks = v.frameworks.keys() - CUDNN_ONLY
    fw_text = ", ".join(f"{v.frameworks[fw]}" for fw in sorted(frameworks)) if frameworks else ""
    libs_unknown = f.libraries is None
    train_strong, train_weak = _training(v)
    serve_strong, serve_weak = _serving(v)
    for s in train_strong + train_weak:
        v.signals.append(f"training signal: {s}")
    for s in serve_strong + serve_weak:
        v.signals.append(f"serving signal: {s}")
    loaded = f"loaded {fw_text}" if fw_text else ("libraries unknown" if libs_unknown else "no ML library loaded")
    label = v.script_label()
    if train_strong:
        return done("ml_training", label, f"{loaded} and {train_strong[0]}", "training:signals")
    if serve_strong and (frameworks or (libs_unknown and v.python)):
        return done("llm_inference", label, f"{loaded} and {serve_strong[0]}", "inference:framework_serves")
    if train_weak and (frameworks or (libs_unknown and v.python)):
        return done("ml_training", label, f"{loaded} and {train_weak[0]}", "training:weak_signals")
    if serve_weak and frameworks:
        return done("llm_inference", label, f"{loaded} and {serve_weak[0]}", "inference:weak_signals")
    game = _weak_gaming(v)
    if game:
        return done("gaming", game[0], game[1], game[2])
    if frameworks & TRAINABLE:
        age, mem = f.age_seconds, f.used_memory_bytes
        if age is not None and mem is not None and age >= LONG_LIVED_SECS and mem >= HIGH_MEMORY_BYTES:
            return done("ml_training", label,
                        f"{loaded}, running {age / 60:.0f} min with {mem / 2**30:.1f} GiB of GPU memory "
                        "and serving nothing", "training:long_lived")
    if v.python or frameworks:
        extra = f"{loaded}; no training or serving signal" if frameworks else "Python program with no ML signal"
        return done("general_compute", label, extra, "general:python")
    name = base(f.exe) or f.name or (v.names[0] if v.names else (f"pid {f.pid}" if f.pid else "?"))
    known = next((GENERAL[n] for n in v.names if n in GENERAL or n.lower() in GENERAL), None)
    known = known or next((GENERAL[n.lower()] for n in v.names if n.lower() in GENERAL), None)
    reason = known or "uses the GPU; no gaming, LLM, training or desktop signal"
    return done("general_compute", name, reason, "general")
