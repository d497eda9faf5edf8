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
import re
import warnings
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from gpm.classify import CATEGORIES
from gpm.classify.facts import ProcessFacts
from gpm.classify.redact import MASK
from gpm.errors import ConfigError

if TYPE_CHECKING:  # the Steam reader is imported only where a library is scanned
    from gpm.classify.steam import SteamIndex

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

# ---------------------------------------------------------------- user rules

RULE_MATCH_FIELDS = ("exe", "name", "cmdline", "appid", "library")
RULE_SET_FIELDS = ("category", "label")
_RULE_REGEX_FIELDS = ("exe", "name", "cmdline", "library")


def validate_rules(value: Any, where: str) -> list[dict]:
    """Check ``[[classify.rules]]``; return them normalised (plain, JSON-safe).

    Called by gpm.config for the ``classify.rules`` key. Every problem is a
    one-line ``ConfigError`` naming the rule by its 1-based position.
    """
    if not isinstance(value, list):
        raise ConfigError(f"{where}: [[classify.rules]] must be an array of tables")
    out = []
    for i, rule in enumerate(value, start=1):
        at = f"{where}: [[classify.rules]] #{i}"
        if not isinstance(rule, dict):
            raise ConfigError(f"{at}: must be a table")
        allowed = RULE_MATCH_FIELDS + RULE_SET_FIELDS
        for key in rule:
            if key not in allowed:
                raise ConfigError(f"{at}: unknown field '{key}' (expected one of {', '.join(allowed)})")
        if not any(k in rule for k in RULE_MATCH_FIELDS):
            raise ConfigError(f"{at}: needs at least one of {', '.join(RULE_MATCH_FIELDS)} to match on")
        category = rule.get("category")
        if category not in CATEGORIES:
            raise ConfigError(f"{at}: category = {category!r}: expected one of {', '.join(CATEGORIES)}")
        norm: dict[str, str] = {"category": category}
        for key in _RULE_REGEX_FIELDS:
            if key in rule:
                pattern = rule[key]
                if not isinstance(pattern, str):
                    raise ConfigError(f"{at}: {key} must be a string (a regular expression)")
                try:
                    with warnings.catch_warnings():  # "possible nested set" would be a second stderr line
                        warnings.simplefilter("ignore")
                        re.compile(pattern)
                except (re.error, OverflowError, RecursionError) as err:  # a{4294967296}, 5,000 nested groups
                    reason = "nested too deeply" if isinstance(err, RecursionError) else err
                    raise ConfigError(f"{at}: {key} = {pattern!r} is not a valid regular expression: {reason}") from None
                norm[key] = pattern
        if "appid" in rule:
            appid = rule["appid"]
            if isinstance(appid, bool) or not isinstance(appid, (int, str)) or not str(appid).isdigit():
                raise ConfigError(f"{at}: appid = {appid!r}: expected a Steam app id (digits)")
            norm["appid"] = str(appid)
        if "label" in rule:
            if not isinstance(rule["label"], str):
                raise ConfigError(f"{at}: label must be a string")
            norm["label"] = rule["label"]
        out.append(norm)
    return out


@dataclass
class UserRule:
    index: int
    category: str
    label: str | None
    _: KW_ONLY
    exe: re.Pattern | None = None
    name: re.Pattern | None = None
    cmdline: re.Pattern | None = None
    library: re.Pattern | None = None
    appid: str | None = None

    @classmethod
    def compile_all(cls, rules: list[dict]) -> list["UserRule"]:
        out = []
        for i, r in enumerate(rules, start=1):
            out.append(cls(
                index=i, category=r["category"], label=r.get("label"), appid=r.get("appid"),
                **{k: re.compile(r[k]) for k in _RULE_REGEX_FIELDS if k in r},
            ))
        return out

    def describe(self) -> str:
        parts = [f"{k}={getattr(self, k).pattern!r}" for k in _RULE_REGEX_FIELDS if getattr(self, k)]
        if self.appid:
            parts.append(f"appid={self.appid}")
        return f"user rule #{self.index} ({', '.join(parts)})"


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


# ---------------------------------------------------------------- helpers


def base(path: str | None) -> str:
    """The last part of a POSIX path, or of a Windows one (a Proton game's ``C:\\...\\game.exe``).

    A backslash counts as a separator only in a path with no slash: on Linux
    it is an ordinary character, and it starts the ``\\xff`` that stands for
    an undecodable byte in a name (#12.2).
    """
    if not path:
        return ""
    sep = "/" if "/" in path else "\\"
    return path.rstrip(sep).rsplit(sep, 1)[-1]


_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


_PYTHON = re.compile(r"(python[0-9.]*|pythonw|pypy[0-9.]*)(\.exe)?$", re.IGNORECASE)


def is_python(name: str) -> bool:
    """``python``, ``python3.12``, ``pythonw``, ``pypy3`` (``.exe`` too), in any case."""
    return _PYTHON.match(name) is not None


def option(argv: list[str], *names: str) -> str | None:
    """Value of ``--name VALUE`` or ``--name=VALUE`` (first of ``names`` found)."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def after(argv: list[str], word: str) -> str | None:
    """The first non-option argument after ``word`` (``vllm serve MODEL``).

    A masked value (``--api-key ***``) is an option's value, never the argument.
    """
    for i, arg in enumerate(argv[:-1]):
        if arg == word:
            for nxt in argv[i + 1:]:
                if not nxt.startswith("-") and MASK not in nxt:
                    return nxt
            return None
    return None


def title_words(f: ProcessFacts) -> list[str] | None:
    """The words of a command line set as one string (setproctitle: ``python3 serve.py
    --api-key ***`` in argv[0]), or None for an ordinary one.

    It is taken for a title when its first word names the program (the
    kernel's 15-character ``comm``); a lone argv[0] with a space in its path
    (``/opt/LM Studio/lm-studio``) is not split.
    """
    if len(f.cmdline) != 1 or " " not in f.cmdline[0] or not f.name:
        return None
    words = f.cmdline[0].split()
    return words if base(words[0])[:15] == f.name[:15] else None


def model_label(value: str | None) -> str | None:
    """A model argument as a label: file paths by their name, hub ids as they are."""
    if not value:
        return None
    v = value.rstrip("/")
    name = base(v)
    m = re.match(r"^sha256[-:]([0-9a-f]{12})[0-9a-f]{52}$", name)
    if m:
        return f"sha256-{m.group(1)}"  # an Ollama blob
    looks_like_path = v.startswith(("/", ".", "~")) or re.search(r"\.(gguf|bin|safetensors|pt|ggml|llamafile)$", v, re.I)
    if looks_like_path or v.count("/") > 1:
        return name
    return v  # "meta-llama/Llama-3.1-8B-Instruct" or "llama3"


def python_target(argv: list[str]) -> tuple[str, str, int] | None:
    """("module", "vllm.entrypoints...", i) or ("script", "train.py", i) of a python cmdline.

    ``i`` is the index of the first argument of the program itself.
    """
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m" and i + 1 < len(argv):
            return "module", argv[i + 1], i + 2
        if arg.startswith("-m") and len(arg) > 2:
            return "module", arg[2:], i + 1
        if arg == "-c":
            return "code", "-c", i + 2
        if arg in ("-X", "-W", "-Q"):
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return "script", arg, i + 1
    return None


def _words(*texts: str) -> set[str]:
    out: set[str] = set()
    for t in texts:
        out.update(w for w in _WORD_SPLIT.split(t.lower()) if w)
    return out


# Library file name prefixes -> framework; the first that matches wins.
FRAMEWORK_LIBS = (
    (("libtorch_cuda.so", "libtorch_cpu.so", "libtorch.so", "libc10_cuda.so", "libc10.so"), "PyTorch"),
    (("libtensorflow_framework", "libtensorflow_cc", "_pywrap_tensorflow"), "TensorFlow"),
    (("xla_extension", "libxla", "jaxlib", "_jax."), "JAX"),
    (("libggml", "libllama", "ggml"), "ggml"),
    (("libonnxruntime", "onnxruntime_pybind11"), "ONNX Runtime"),
    (("libnvinfer",), "TensorRT"),
    (("libpaddle", "libmxnet"), "Paddle/MXNet"),
    (("libctranslate2",), "CTranslate2"),
    (("exllamav2_ext", "exllamav3"), "exllama"),
    (("libcudnn",), "cuDNN"),
)
# One test rejects most libraries at once (maps can list hundreds).
_FRAMEWORK_PREFIXES = tuple(p for prefixes, _ in FRAMEWORK_LIBS for p in prefixes)


def framework_of(library: str) -> str | None:
    """The framework a library file name (``libtorch_cuda.so``) shows, if any."""
    if not library.startswith(_FRAMEWORK_PREFIXES):
        return None
    return next(name for prefixes, name in FRAMEWORK_LIBS if library.startswith(prefixes))


TRAINABLE = {"PyTorch", "TensorFlow", "JAX", "Paddle/MXNet"}
CUDNN_ONLY = {"cuDNN"}

TRAIN_WORDS = {
    "train", "training", "trainer", "finetune", "finetuning", "pretrain", "pretraining",
    "sft", "dpo", "grpo", "rlhf", "torchrun", "deepspeed", "lightning", "axolotl", "unsloth",
    "autotrain", "torchtune", "llamafactory", "composer", "horovodrun", "colossalai",
}
# --name or -name, alone or as --name=value
_TRAIN_OPTION = re.compile(
    r"^--?(epochs|num_epochs|num-epochs|num_train_epochs|n_epochs|max_epochs|max-epochs|"
    r"learning_rate|learning-rate|lr|do_train|train_file|train-file|train_data|train-data|"
    r"gradient_accumulation_steps|gradient-accumulation-steps|nproc_per_node|nproc-per-node)(=|$)")
_FINE_TUNE = re.compile(r"fine[-_ ]?tun(e|ing)", re.IGNORECASE)
SERVE_WORDS = {
    "serve", "server", "serving", "api", "app", "webui", "chat", "generate", "generation",
    "infer", "inference", "predict", "completion", "completions", "pipeline", "uvicorn",
    "gunicorn", "hypercorn", "gradio", "streamlit", "fastapi", "flask", "openai", "sample",
    "sampling", "demo", "bot",
}
# --name alone or as --name=value
_SERVE_OPTION = re.compile(r"^--(port|host|listen|server[-_]port|server[-_]name)(=|$)")

DESKTOP = {
    "xorg": "Xorg", "x": "Xorg", "xwayland": "Xwayland", "gnome-shell": "GNOME Shell",
    "kwin_wayland": "KWin", "kwin_x11": "KWin", "kwin": "KWin", "kwin_wayland_wrapper": "KWin",
    "plasmashell": "KDE Plasma", "sway": "Sway", "hyprland": "Hyprland", "weston": "Weston",
    "mutter": "Mutter", "wayfire": "Wayfire", "river": "river", "labwc": "labwc", "niri": "niri",
    "cosmic-comp": "COSMIC", "gamescope": "gamescope", "gamescope-wl": "gamescope",
    "xfwm4": "Xfwm", "picom": "picom", "compton": "compton", "cinnamon": "Cinnamon",
    "muffin": "Cinnamon", "marco": "MATE", "budgie-wm": "Budgie", "gala": "Pantheon",
    "enlightenment": "Enlightenment", "xdg-desktop-portal-gnome": "xdg-desktop-portal",
    "xdg-desktop-portal-kde": "xdg-desktop-portal", "xdg-desktop-portal-hyprland": "xdg-desktop-portal",
    "gnome-remote-desktop-daemon": "GNOME Remote Desktop", "sddm-greeter": "SDDM",
    "sddm-greeter-qt6": "SDDM", "gdm-wayland-session": "GDM", "lightdm": "LightDM",
    "nvidia-settings": "nvidia-settings", "krunner": "KDE Plasma", "nautilus": "Files",
    "dolphin": "Dolphin", "kscreenlocker_greet": "KDE Plasma",
    "xdg-desktop-portal-gtk": "xdg-desktop-portal", "waybar": "Waybar",
}
BROWSERS = {
    "chrome": "Chrome", "google-chrome": "Chrome", "chromium": "Chromium",
    "chromium-browser": "Chromium", "brave": "Brave", "brave-browser": "Brave",
    "msedge": "Edge", "microsoft-edge": "Edge", "vivaldi": "Vivaldi", "vivaldi-bin": "Vivaldi",
    "opera": "Opera", "firefox": "Firefox", "firefox-bin": "Firefox", "firefox-esr": "Firefox",
    "librewolf": "LibreWolf", "zen": "Zen", "zen-bin": "Zen", "thunderbird": "Thunderbird",
    "epiphany": "Epiphany", "falkon": "Falkon", "gpu process": "Firefox",
    "web content": "Firefox", "isolated web co": "Firefox", "rdd process": "Firefox",
}
VIDEO_PLAYERS = {
    "mpv": "mpv", "vlc": "VLC", "totem": "Videos", "celluloid": "Celluloid", "kodi": "Kodi",
    "kodi.bin": "Kodi", "haruna": "Haruna", "smplayer": "SMPlayer", "mplayer": "MPlayer",
}
STEAM_CLIENT = {
    "steam", "steamwebhelper", "gldriverquery", "gldriverquery64", "vulkandriverquery",
    "vulkandriverquery64", "steam-runtime-check-requirements", "steam-runtime-launcher-service",
}
WINE_SYSTEM = {
    "wineserver", "services.exe", "winedevice.exe", "plugplay.exe", "svchost.exe",
    "rpcss.exe", "conhost.exe", "start.exe", "steam.exe", "tabtip.exe", "rundll32.exe",
    "winemenubuilder.exe", "wineboot.exe", "cmd.exe", "wine", "wine64", "wine-preloader",
    "wine64-preloader", "explorer.exe", "crashpad_handler.exe", "unitycrashhandler64.exe",
}
_EXE_SUFFIXES = re.compile(
    r"(-Win64-Shipping|-Win32-Shipping|-WinGDK-Shipping|-Linux-Shipping|-Shipping|[-_](dx1[12]|d3d1[12]|"
    r"vulkan|vk|x64|win64|BE|EAC))$",
    re.IGNORECASE,
)
_GAME_NAME = re.compile(r"(-Win64-Shipping|-Shipping|-dx12|-Vulkan)(\.exe)?$|\.exe$", re.IGNORECASE)
_GAME_PATH = re.compile(
    r"(/games/|/lutris/|/heroic/|/\.itch/|/itch/apps/|/gog games/|/usr/games/|/\.local/share/games/)",
    re.IGNORECASE,
)
_GAME_EXE = re.compile(r"\.(x86_64|x86|x64)$|game", re.IGNORECASE)
_UNREAL = re.compile(r"^lib(UE[45]|Unreal)", re.IGNORECASE)
_GODOT = re.compile(r"^libgodot", re.IGNORECASE)
_WINE = re.compile(r"wine|proton", re.IGNORECASE)
GENERAL = {
    "ffmpeg": "video encode/decode (NVENC/NVDEC)", "blender": "3D rendering",
    "obs": "screen recording and streaming (NVENC)", "hashcat": "password cracking",
    "xmrig": "cryptocurrency miner", "t-rex": "cryptocurrency miner",
    "ethminer": "cryptocurrency miner", "lolminer": "cryptocurrency miner",
    "nbminer": "cryptocurrency miner", "gminer": "cryptocurrency miner",
    "miner": "cryptocurrency miner", "trex": "cryptocurrency miner",
    "resolve": "video editing (DaVinci Resolve)", "gpu_burn": "GPU stress test",
    "boinc": "volunteer computing (BOINC)", "handbrakecli": "video transcoding",
    "ghb": "video transcoding", "darktable": "photo processing", "gimp": "image editing",
    "deviceQuery": "CUDA sample", "bandwidthTest": "CUDA sample", "nbody": "CUDA sample",
    "vectorAdd": "CUDA sample", "matrixMul": "CUDA sample", "simpleGL": "CUDA sample",
}


@dataclass(slots=True)
class _View:
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


def _view(f: ProcessFacts) -> _View:
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
    return _View(f, names, lower, python, target, frameworks, signals)


# ---------------------------------------------------------------- Steam

# Steam's own tools live under steamapps/common too; they are not games.
TOOL_DIRS = re.compile(
    r"^(proton[ -].*|proton|steamlinuxruntime.*|steam linux runtime.*|steamworks shared|"
    r"steamvr|steam controller configs)$",
    re.IGNORECASE,
)

_COMMON = re.compile(r"(?:^|/)steamapps/common/([^/]+)", re.IGNORECASE)


def common_dir(path: str | None) -> str | None:
    """``.../steamapps/common/<installdir>/...`` -> ``installdir`` (Windows paths too)."""
    if not path:
        return None
    m = _COMMON.search(path.replace("\\", "/"))
    return m.group(1) if m else None


def is_tool_dir(installdir: str) -> bool:
    return bool(TOOL_DIRS.match(installdir))



def _appid(v: _View) -> tuple[str, str] | None:
    """(app id, where it was seen) from the environment or the parent chain."""
    env = v.f.environ
    for key in ("SteamAppId", "SteamGameId", "STEAM_COMPAT_APP_ID"):
        val = env.get(key, "")
        if val.isdigit() and val != "0":
            return val, f"env {key}"
    compat = env.get("STEAM_COMPAT_DATA_PATH", "")
    m = re.search(r"compatdata/(\d+)/?$", compat)
    if m and m.group(1) != "0":
        return m.group(1), "env STEAM_COMPAT_DATA_PATH"
    for who, cmd in [("cmdline", v.f.cmdline)] + [(f"parent {p.name or base(p.exe)}", p.cmdline) for p in v.f.parents]:
        if "SteamLaunch" in cmd:
            for arg in cmd:
                m = re.match(r"^AppId=(\d+)$", arg, re.IGNORECASE)
                if m and m.group(1) != "0":
                    return m.group(1), f"{who} (SteamLaunch AppId={m.group(1)})"
    return None


def _steam_dir(v: _View) -> tuple[str, str] | None:
    """(installdir, where) for a path under steamapps/common, Steam tools excluded."""
    argv0 = v.f.cmdline[0] if v.f.cmdline else None
    for where, path in (("exe", v.f.exe), ("argv[0]", argv0), ("working folder", v.f.cwd)):
        d = common_dir(path)
        if d and not is_tool_dir(d):
            return d, where
    return None


def _steam_game(v: _View, ctx: Context) -> tuple[str, str, str | None] | None:
    """(label, reason, appid) when the process is a Steam game, else None."""
    appid = _appid(v)
    sdir = _steam_dir(v)
    if appid is None and sdir is None:
        return None
    index = ctx.steam_index()
    if index is not None:
        v.signals.append(f"Steam libraries: {len(index.libraries)} folder(s), {len(index.apps)} app(s)")
    app = index.app(appid[0]) if index and appid else None
    app2 = index.installed(sdir[0]) if index and sdir else None
    if appid:
        v.signals.append(f"Steam app id {appid[0]} from {appid[1]}" + (f" = {app.name}" if app else ""))
    if sdir:
        v.signals.append(f"{sdir[1]} under steamapps/common/{sdir[0]}" + (f" = {app2.name}" if app2 else ""))
    if app and appid:
        return app.name, f"Steam app id {appid[0]} from {appid[1]}", appid[0]
    if app2 and sdir:
        return app2.name, f"{sdir[1]} is under steamapps/common/{sdir[0]} (Steam app {app2.appid})", app2.appid
    if appid and len(appid[0]) > 9:  # a shortcut id: a non-Steam game added to Steam
        return _exe_label(v), f"non-Steam game launched by Steam ({appid[1]})", appid[0]
    if sdir:
        return sdir[0], f"{sdir[1]} is under steamapps/common/{sdir[0]} (no app manifest found)", \
            appid[0] if appid else None
    if appid:
        return (f"Steam app {appid[0]}", f"Steam app id {appid[0]} from {appid[1]} (not in any Steam library found)",
                appid[0])
    return None


def _exe_label(v: _View) -> str:
    argv0 = base(v.f.cmdline[0]) if v.f.cmdline else ""
    for n in (argv0, v.f.name, base(v.f.exe)):
        if n and n.lower().endswith(".exe"):
            return _EXE_SUFFIXES.sub("", n[:-4]) or n
    return argv0 or v.f.name or base(v.f.exe) or "?"


# ---------------------------------------------------------------- built-in rules


def _desktop(v: _View) -> tuple[str, str] | None:
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


def _llm_server(v: _View, ctx: Context) -> tuple[str, str, str] | None:
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


def _script_label(v: _View) -> str:
    if v.target:
        kind, value, _ = v.target
        if kind == "module":
            return value
        if kind == "script":
            return base(value)
        return "python -c"
    for arg in v.f.cmdline[1:]:
        if arg.endswith(".py"):
            return base(arg)
    return v.names[0] if v.names else "?"


def _training(v: _View) -> tuple[list[str], list[str]]:
    """(strong, weak) training signals."""
    strong, weak = [], []
    argv = v.f.cmdline
    own = _words(*(n for n in v.names), v.module, base(v.script))
    hits = own & TRAIN_WORDS
    if hits:
        strong.append(f"program or script name says {', '.join(sorted(hits))!r}")
    if _FINE_TUNE.search(" ".join([v.module, base(v.script)] + v.names)):
        strong.append("script name says 'fine-tune'")
    subcommands = {a for a in v.args[:3] if a in ("train", "finetune", "fit", "pretrain", "sft", "launch")}
    if "launch" in subcommands and not ({"accelerate"} & (own | _words(*argv[:3]))):
        subcommands.discard("launch")
    if subcommands:
        strong.append(f"subcommand {', '.join(sorted(subcommands))!r}")
    opts = [a.split("=")[0] for a in argv if _TRAIN_OPTION.match(a)]
    if opts:
        strong.append(f"training options {', '.join(opts)}")
    for key in ("TORCHELASTIC_RUN_ID", "LOCAL_RANK"):
        if key in v.f.environ:
            strong.append(f"launched by a distributed launcher (env {key})")
            break
    for p in v.f.parents:
        pw = _words(p.name or "", base(p.exe), *(p.cmdline[:4]))
        ph = pw & {"torchrun", "deepspeed", "horovodrun", "accelerate", "lightning", "axolotl",
                   "torchtune", "llamafactory", "composer", "colossalai"}
        if "accelerate" in ph and "launch" not in pw:
            ph.discard("accelerate")
        if ph or (pw & {"run", "launch"} and {"torch", "distributed"} <= pw):
            strong.append(f"parent {p.name or base(p.exe)} is a training launcher")
            break
    rest = _words(*argv[1:]) - own
    if rest & TRAIN_WORDS or _FINE_TUNE.search(" ".join(argv[1:])):
        weak.append("command line mentions " + repr(", ".join(sorted(rest & TRAIN_WORDS)) or "fine-tune"))
    return strong, weak


def _serving(v: _View) -> tuple[list[str], list[str]]:
    strong, weak = [], []
    own = _words(v.module, base(v.script).removesuffix(".py"))
    hits = own & SERVE_WORDS
    if hits:
        strong.append(f"script name says {', '.join(sorted(hits))!r}")
    argv = v.f.cmdline
    servers = _words(*argv[:3]) & {"uvicorn", "gunicorn", "hypercorn", "gradio", "streamlit", "fastapi", "flask"}
    if servers:
        strong.append(f"runs under {', '.join(sorted(servers))}")
    opts = [a.split("=")[0] for a in argv if _SERVE_OPTION.match(a)]
    if opts:
        strong.append(f"listens ({', '.join(opts)})")
    rest = (_words(*argv[1:]) - own) & SERVE_WORDS
    if rest:
        weak.append(f"command line mentions {', '.join(sorted(rest))!r}")
    return strong, weak


def _weak_gaming(v: _View) -> tuple[str, str, str] | None:
    f = v.f
    argv0 = f.cmdline[0] if f.cmdline else ""
    exe_names = [n for n in (base(argv0), f.name or "", base(f.exe)) if n]
    wine = [n for n in exe_names if "wine" in n.lower() or "preloader" in n.lower()]
    wine_env = [k for k in ("WINEPREFIX", "STEAM_COMPAT_DATA_PATH", "WINELOADER") if k in f.environ]
    wine_parent = [p.name or base(p.exe) for p in f.parents
                   if _WINE.search(" ".join([p.name or "", p.exe or ""] + p.cmdline[:2]))]
    under = " under Wine/Proton" if wine or wine_env or wine_parent else ""
    windows = next((n for n in exe_names if _GAME_NAME.search(n) and n.lower() not in WINE_SYSTEM), None)
    if windows and (windows.lower().endswith(".exe") or "shipping" in windows.lower()):
        kind = "Unreal Engine game" if "shipping" in windows.lower() else "Windows executable"
        return _exe_label(v), f"{kind} {windows}{under}", "gaming:windows_exe"
    if "explorer.exe" in {n.lower() for n in exe_names} and under:
        return None
    steam_parent = next((p for p in f.parents if (p.name or "").lower() in ("steam", "reaper")
                         or base(p.exe).lower() == "steam" or any(a.endswith("steam.sh") for a in p.cmdline[:2])),
                        None)
    if steam_parent is not None and not v.python:
        return _exe_label(v), f"native game started by the Steam client (parent {steam_parent.name})", "gaming:steam_child"
    engine = None
    for lib in f.libraries or ():
        b = base(lib)
        if b.startswith("UnityPlayer"):
            engine = f"Unity engine ({b})"
        elif _UNREAL.match(b):
            engine = f"Unreal Engine ({b})"
        elif _GODOT.match(b):
            engine = f"Godot engine ({b})"
        if engine:
            break
    if engine and not v.frameworks.keys() & TRAINABLE:
        return _exe_label(v), f"loaded the {engine}", "gaming:engine"
    if f.exe and _GAME_PATH.search(f.exe) and not v.python:
        return _exe_label(v), f"installed in a games folder ({f.exe})", "gaming:games_folder"
    util = f.gpu_utilization_percent
    pattern = next((n for n in exe_names if _GAME_EXE.search(n)), None)
    if util is not None and util > BUSY_PERCENT and pattern and not v.frameworks and not v.python:
        return (_exe_label(v), f"GPU at {util:g}% and a game-like exe name {pattern} (weak signal)",
                "gaming:busy_heuristic")
    return None


def _unknown_note(f: ProcessFacts) -> str:
    if f.gone:
        return "; the process exited before /proc could be read, so only its name was known"
    missing = [m for m in f.unreadable if m in ("environ", "maps", "exe", "cmdline")]
    if missing:
        return f"; could not read its {', '.join(missing)} (another user's or a container's process?)"
    return ""


def _user_rule(v: _View, ctx: Context, appid: str | None) -> Decision | None:
    f = v.f
    cmd = " ".join(f.cmdline)
    for rule in ctx.rules:
        if rule.exe and not any(rule.exe.search(p) for p in (f.exe, f.cmdline[0] if f.cmdline else None) if p):
            continue
        if rule.name and not any(rule.name.search(n) for n in v.names):
            continue
        if rule.cmdline and not rule.cmdline.search(cmd):
            continue
        if rule.library and not any(rule.library.search(lib) for lib in f.libraries or ()):
            continue
        if rule.appid and rule.appid != appid:
            continue
        default = _script_label(v) if v.python else (base(f.exe) or f.name or "?")
        label = rule.label or default
        return Decision(rule.category, label, f"matched {rule.describe()}", f"user rule #{rule.index}")
    return None


def classify(f: ProcessFacts, ctx: Context | None = None) -> Decision:
    """Decide the category, label and reason of one process."""
    ctx = ctx or Context()
    words = title_words(f)
    if words is not None:
        f = copy.copy(f)
        f.cmdline = words
    v = _view(f)
    note = _unknown_note(f)

    def done(category: str, label: str, reason: str, rule: str) -> Decision:
        v.signals.append(f"decided by {rule}")
        return Decision(category, label or "?", reason + note, rule, v.signals)

    # Steam's app id is needed by user rules too; look it up only when a sign is there.
    steam = _steam_game(v, ctx)
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
    label = _script_label(v)
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
