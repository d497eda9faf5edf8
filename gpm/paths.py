"""Where gpm keeps its files, following the XDG base directory spec.

Strings, as sqlite3, the configuration's values and the messages that name
them use; callers that want a ``Path`` wrap one.
"""

from __future__ import annotations

import os


def _xdg(var: str, fallback: str) -> str:
    value = os.environ.get(var, "")
    # The spec says relative paths are invalid and must be ignored.
    if value and os.path.isabs(value):
        return value
    return os.path.join(os.path.expanduser("~"), fallback)


def config_home() -> str:
    return os.path.join(_xdg("XDG_CONFIG_HOME", ".config"), "gpm")


def data_home() -> str:
    return os.path.join(_xdg("XDG_DATA_HOME", ".local/share"), "gpm")


def state_home() -> str:
    return os.path.join(_xdg("XDG_STATE_HOME", ".local/state"), "gpm")


def cache_home() -> str:
    return os.path.join(_xdg("XDG_CACHE_HOME", ".cache"), "gpm")


def default_config_path() -> str:
    return os.path.join(config_home(), "config.toml")


def default_db_path() -> str:
    return os.path.join(data_home(), "gpm.db")


def default_archive_dir(db_file: str | None = None) -> str:
    """The default database's archive folder is ``$XDG_DATA_HOME/gpm/archive``;
    any other database's sits beside it as ``<database>-archive`` (like
    SQLite's ``-wal``), so that two databases never share one by default (#12.3).
    """
    if db_file is None or os.path.realpath(db_file) == os.path.realpath(default_db_path()):
        return os.path.join(data_home(), "archive")
    return os.path.abspath(db_file) + "-archive"


def ensure_private_dir(path: str | os.PathLike) -> None:
    """Create ``path`` (and parents) readable only by the owner.

    GPU process lists and command lines are private: the data directory is
    0700 whatever the umask says.
    """
    if not os.path.exists(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
