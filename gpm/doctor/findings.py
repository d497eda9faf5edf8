"""What ``gpm doctor``'s checks look at (``Setup``) and what they say (``Finding``),
with the words every check shares: sizes, durations, errors and settings on one line."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gpm.config import Config

OK, NOTE, PROBLEM, FIXED = "ok", "note", "problem", "fixed"

# Free space below the larger of these, for the data or the archive folder, is
# a problem: the database grows by a few MiB a day per GPU, and `gpm archive`
# (or a VACUUM) needs about the database's size again while it works.
MIN_FREE_BYTES = 1024**3
# A job lock held longer than this is probably a stuck run (`gpm archive` of
# months of backlog takes minutes, not hours).
LOCK_HELD_TOO_LONG_SECS = 2 * 3600


@dataclass
class Finding:
    """One line of the verdict: a check's outcome, and for a problem what to do."""

    check: str
    status: str  # ok, note, problem, fixed
    message: str
    advice: str = ""
    path: str | None = None
    # The safe repair `--fix` performs; returns what it did, in words.
    repair: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    fix: str | None = None  # what the repair does, in words (shown before it runs)

    def to_json(self) -> dict:
        return {"check": self.check, "status": self.status, "message": self.message,
                "advice": self.advice or None, "path": self.path, "fix": self.fix}


@dataclass
class Setup:
    """What the checks look at; tests and scripts build one without Click."""

    cfg: Config
    db_path: Path
    archive_dir: Path
    host: str
    now: Callable[[], float] = time.time
    min_free_bytes: int = MIN_FREE_BYTES
    lock_held_too_long_secs: float = LOCK_HELD_TOO_LONG_SECS

    @classmethod
    def from_config(cls, cfg: Config, **kwargs) -> "Setup":
        return cls(cfg=cfg, db_path=cfg.db_path, archive_dir=cfg.archive_dir, host=cfg.hostname, **kwargs)


def where_set(cfg: Config, dotted: str) -> str:
    """``[section] key = 'value' (where it was set)``, so the advice says which setting to change."""
    section, name = dotted.split(".")
    return f"[{section}] {name} = {cfg[dotted]!r} ({cfg.source(dotted)})"


def one_line(err: BaseException) -> str:
    """An error's message on one line (its type's name when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__


def size_text(n: float) -> str:
    """``12.3 MiB``, or ``4.5 GiB`` from a GiB on."""
    return f"{n / 1024**2:.1f} MiB" if n < 1024**3 else f"{n / 1024**3:.1f} GiB"


def duration_text(seconds: float) -> str:
    """``3m 07s``, or ``2h 05m`` from an hour on."""
    minutes = int(seconds) // 60
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {int(seconds) % 60:02d}s"
