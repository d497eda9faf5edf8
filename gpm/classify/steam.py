"""Steam libraries: which game is installed where, and what each app id is called.

Steam keeps a list of library folders in ``libraryfolders.vdf`` (KeyValues
text) and, in each library's ``steamapps``, one ``appmanifest_<appid>.acf``
per installed app with its ``name`` and ``installdir`` (the folder under
``steamapps/common``). Two formats of ``libraryfolders.vdf`` exist: the old
``"LibraryFolders" { "1" "/path" }`` and the newer block form
``"libraryfolders" { "0" { "path" "/path" "apps" {...} } }``. Key case varies
between Steam versions, so keys are compared case-insensitively.

``SteamLibrary`` parses everything once and re-parses only when one of the
files it read (or a ``steamapps`` folder, whose mtime changes when a manifest
is added or removed) changes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

_TOKEN = re.compile(r'\s+|//[^\n]*|"((?:[^"\\]|\\.)*)"?|([{}])|([^\s{}"]+)')
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}



def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), text)


def parse_vdf(text: str) -> dict:
    """Valve KeyValues text -> nested dicts with lower-cased keys.

    Tolerant by design (a half-written file yields what could be read):
    comments, ``[$WIN32]`` conditionals and unquoted tokens are accepted, and
    a later duplicate key replaces an earlier one.
    """
    root: dict = {}
    stack = [root]
    key: str | None = None
    for m in _TOKEN.finditer(text):
        quoted, brace, bare = m.groups()
        if brace == "{":
            child: dict = {}
            if key is not None:
                stack[-1][key.lower()] = child
            stack.append(child)
            key = None
        elif brace == "}":
            if len(stack) > 1:
                stack.pop()
            key = None
        elif quoted is not None or bare is not None:
            token = _unescape(quoted) if quoted is not None else bare
            if bare is not None and bare.startswith("[$"):
                continue  # platform conditional after a value
            if key is None:
                key = token
            else:
                stack[-1][key.lower()] = token
                key = None
    return root


def library_paths(vdf: dict) -> list[str]:
    """Library folder paths from a parsed ``libraryfolders.vdf`` (either format)."""
    top = vdf.get("libraryfolders")
    if not isinstance(top, dict):
        return []
    out = []
    for k, v in top.items():
        if not k.isdigit():
            continue  # "timenextstatsreport", "contentstatsid" in the old format
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict) and isinstance(v.get("path"), str):
            out.append(v["path"])
    return out


@dataclass(frozen=True)
class SteamApp:
    appid: str
    name: str
    installdir: str
    library: str  # the steamapps folder holding its manifest


def parse_manifest(text: str, library: str = "") -> SteamApp | None:
    state = parse_vdf(text).get("appstate")
    if not isinstance(state, dict):
        return None
    appid = state.get("appid")
    if not isinstance(appid, str) or not re.fullmatch(r"[0-9]+", appid):
        return None  # isdigit() passes '²' and other digits no SteamAppId holds
    name = state.get("name") if isinstance(state.get("name"), str) else ""
    installdir = state.get("installdir") if isinstance(state.get("installdir"), str) else ""
    return SteamApp(appid=appid, name=name or installdir or f"Steam app {appid}",
                    installdir=installdir, library=library)


@dataclass
class SteamIndex:
    """App id and install folder -> app, for every library found."""

    apps: dict[str, SteamApp] = field(default_factory=dict)
    by_installdir: dict[str, SteamApp] = field(default_factory=dict)
    libraries: list[str] = field(default_factory=list)

    def add(self, app: SteamApp) -> None:
        self.apps[app.appid] = app
        if app.installdir:
            self.by_installdir[app.installdir.lower()] = app

    def app(self, appid: str | int | None) -> SteamApp | None:
        return None if appid is None else self.apps.get(str(appid))

    def installed(self, installdir: str) -> SteamApp | None:
        return self.by_installdir.get(installdir.lower())


def default_roots(homes: Iterable[str | os.PathLike]) -> list[Path]:
    """Where Steam installs itself: native, Debian's ~/.steam links, Flatpak."""
    roots = []
    for home in homes:
        h = Path(home)
        roots += [
            h / ".steam/steam", h / ".steam/root", h / ".local/share/Steam",
            h / ".var/app/com.valvesoftware.Steam/.local/share/Steam",
            h / ".var/app/com.valvesoftware.Steam/data/Steam",
            h / ".var/app/com.valvesoftware.Steam/.steam/steam",
        ]
    return roots


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except (OSError, ValueError):  # ValueError: a NUL in a path read from a user's vdf (#12.2)
        return None


class SteamLibrary:
    """Finds and caches Steam libraries under ``roots`` and ``extra`` folders.

    ``extra`` (``[classify] steam_paths``) may name a Steam install, a library
    folder (holding ``steamapps``) or a ``steamapps`` folder itself.
    """

    def __init__(self, roots: Iterable[str | os.PathLike] = (), extra: Iterable[str | os.PathLike] = ()):
        self.roots = [Path(r).expanduser() for r in roots]
        self.extra = [Path(e).expanduser() for e in extra]
        self._index: SteamIndex | None = None
        self._watched: dict[Path, int | None] = {}
        self.parses = 0  # how many times the files were read (for tests, benchmarks)

    @classmethod
    def for_homes(cls, homes: Iterable[str | os.PathLike], extra=()) -> "SteamLibrary":
        return cls(default_roots(homes), extra)

    def _changed(self) -> bool:
        return any(_mtime(p) != m for p, m in self._watched.items())

    def index(self) -> SteamIndex:
        """The current index, re-parsed only when a file it depends on changed."""
        if self._index is None or self._changed():
            self._index, self._watched = self._build()
            self.parses += 1
        return self._index

    def _build(self) -> tuple[SteamIndex, dict[Path, int | None]]:
        watched: dict[Path, int | None] = {}
        steamapps: list[Path] = []

        def watch(p: Path) -> bool:
            m = _mtime(p)
            watched[p] = m
            return m is not None

        def add_library(folder: Path) -> None:
            sa = folder if folder.name.lower() == "steamapps" else folder / "steamapps"
            if watch(sa) and sa not in steamapps:
                steamapps.append(sa)
                for vdf in (sa / "libraryfolders.vdf",):
                    read_folders(vdf)

        def read_folders(vdf: Path) -> None:
            if not watch(vdf):
                return
            try:
                text = vdf.read_text(encoding="utf-8", errors="replace")
            except OSError:
                return
            for path in library_paths(parse_vdf(text)):
                if path.startswith("/"):
                    add_library(Path(path))

        for root in self.roots + self.extra:
            if not watch(root):
                continue
            add_library(root)
            read_folders(root / "config" / "libraryfolders.vdf")
            if (root / "libraryfolders.vdf").exists():
                read_folders(root / "libraryfolders.vdf")
        index = SteamIndex(libraries=[str(s) for s in steamapps])
        seen: set[str] = set()
        for sa in steamapps:
            try:
                real = os.path.realpath(sa)
                if real in seen:
                    continue
                seen.add(real)
                names = sorted(n for n in os.listdir(sa) if n.startswith("appmanifest_") and n.endswith(".acf"))
            except OSError:
                continue
            for n in names:
                path = sa / n
                try:
                    text = path.read_text(encoding="utf-8", errors="replace")
                    watched[path] = os.stat(path).st_mtime_ns
                except OSError:
                    continue
                app = parse_manifest(text, str(sa))
                if app is not None:
                    index.add(app)
        return index, watched
