"""Long text through the user's pager, as git does: ``$PAGER``, else ``less -FRX``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

DEFAULT_PAGER = "less -FRX"


def pager_command(env: dict[str, str] | None = None) -> str | None:
    """The pager to run, or None: ``PAGER`` empty or ``cat`` means no pager (git's rule)."""
    env = os.environ if env is None else env
    command = env.get("PAGER", DEFAULT_PAGER).strip()
    if not command or command == "cat":
        return None
    words = shlex.split(command)
    return command if words and shutil.which(words[0]) else None


def echo_paged(text: str) -> None:
    """Print ``text``; on a terminal it does not fit, through the pager.

    Only for a terminal: piped or redirected output is never paged. A pager
    that cannot start, or quits early (``q`` in less), loses nothing else.
    """
    stream = sys.stdout
    command = pager_command() if stream.isatty() else None
    if command is None or text.count("\n") < shutil.get_terminal_size().lines:
        stream.write(text)
        stream.flush()
        return
    env = dict(os.environ)
    env.setdefault("LESS", "FRX")
    stream.flush()
    pager = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, env=env)
    try:
        pager.communicate(text.encode(stream.encoding or "utf-8", errors="replace"))
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    pager.wait()
