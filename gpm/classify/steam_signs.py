"""Steam signs of a process: an app id in its environment or parent chain, or a
path under ``steamapps/common/<installdir>``, looked up in the Steam libraries.
"""

from __future__ import annotations

import re
from typing import Callable

from gpm.classify.cmdline import base
from gpm.classify.process_view import ProcessView
from gpm.classify.steam import SteamIndex

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
    """Whether a folder under steamapps/common is one of Steam's own tools (Proton, runtimes)."""
    return bool(TOOL_DIRS.match(installdir))


def steam_appid(v: ProcessView) -> tuple[str, str] | None:
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


def steam_dir(v: ProcessView) -> tuple[str, str] | None:
    """(installdir, where) for a path under steamapps/common, Steam tools excluded."""
    argv0 = v.f.cmdline[0] if v.f.cmdline else None
    for where, path in (("exe", v.f.exe), ("argv[0]", argv0), ("working folder", v.f.cwd)):
        d = common_dir(path)
        if d and not is_tool_dir(d):
            return d, where
    return None


def steam_game(v: ProcessView, steam_index: Callable[[], SteamIndex | None]) -> tuple[str, str, str | None] | None:
    """(label, reason, appid) when the process is a Steam game, else None.

    ``steam_index`` is called only when the process shows a Steam sign, so a
    machine without games never scans for Steam libraries.
    """
    appid = steam_appid(v)
    sdir = steam_dir(v)
    if appid is None and sdir is None:
        return None
    index = steam_index()
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
        return v.exe_label(), f"non-Steam game launched by Steam ({appid[1]})", appid[0]
    if sdir:
        return sdir[0], f"{sdir[1]} is under steamapps/common/{sdir[0]} (no app manifest found)", \
            appid[0] if appid else None
    if appid:
        return (f"Steam app {appid[0]}", f"Steam app id {appid[0]} from {appid[1]} (not in any Steam library found)",
                appid[0])
    return None

