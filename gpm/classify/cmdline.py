"""Reading a process's command line: program names, options, model arguments.

Pure helpers shared by the classifier's rules; none of them knows a category.
"""

from __future__ import annotations

import re

from gpm.classify.process_facts import ProcessFacts
from gpm.classify.redact import MASK

_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_PYTHON = re.compile(r"(python[0-9.]*|pythonw|pypy[0-9.]*)(\.exe)?$", re.IGNORECASE)


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


def words(*texts: str) -> set[str]:
    """The lower-case words of ``texts``: runs of letters and digits (``train_llama.py`` -> train, llama, py)."""
    out: set[str] = set()
    for t in texts:
        out.update(w for w in _WORD_SPLIT.split(t.lower()) if w)
    return out
