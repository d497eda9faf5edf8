"""Where gpm keeps its files, following the XDG base directory spec."""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    # The spec says relative paths are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def config_home() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "gpm"


def data_home() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "gpm"


def state_home() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / "gpm"


def cache_home() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "gpm"


def default_config_path() -> Path:
    return config_home() / "config.toml"


def default_db_path() -> Path:
    return data_home() / "gpm.db"


def default_archive_dir() -> Path:
    return data_home() / "archive"


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) readable only by the owner.

    GPU process lists and command lines are private: the data directory is
    0700 whatever the umask says.
    """
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
