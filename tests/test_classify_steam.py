"""Steam libraries from the real sample files: both libraryfolders formats, manifests, caching."""

from __future__ import annotations

import os
import shutil

import pytest

from gpm.classify.process_facts import ProcessFacts
from gpm.classify.rules import Context, classify
from gpm.classify.steam import SteamLibrary, library_paths, parse_manifest, parse_vdf
from gpm.classify.steam_signs import common_dir
from tests.steamtree import STEAM_FIXTURES, install, manifest, new_libraryfolders, old_libraryfolders

MANIFEST = STEAM_FIXTURES / "BoilR__appmanifest_763890.acf"
FOLDERS = STEAM_FIXTURES / "Steam-Library-Tracker__libraryfolders.vdf"
needs_fixtures = pytest.mark.skipif(not MANIFEST.exists() or not FOLDERS.exists(), reason="Steam fixtures absent")


@needs_fixtures
def test_real_manifest_and_library_folders_parse():
    app = parse_manifest(MANIFEST.read_text())
    assert (app.appid, app.name, app.installdir) == ("763890", "Wildermyth", "Wildermyth")
    assert library_paths(parse_vdf(FOLDERS.read_text())) == ["C:\\Program Files (x86)\\Steam", "P:\\SteamLibrary"]
    apps = parse_vdf(FOLDERS.read_text())["libraryfolders"]["1"]["apps"]
    assert apps["228380"] == "34162190013"


def test_old_format_keys_in_any_case_and_comments():
    text = old_libraryfolders(["/mnt/games", "/srv/steam"]).replace('"ContentStatsID"', '"contentstatsid"')
    text = "// written by an old client\n" + text
    assert library_paths(parse_vdf(text)) == ["/mnt/games", "/srv/steam"]
    state = parse_vdf('"appstate" { "AppID" "10" "NAME" "Counter-Strike" "InstallDir" "Half-Life" }')
    assert state["appstate"] == {"appid": "10", "name": "Counter-Strike", "installdir": "Half-Life"}


def test_escaped_quotes_and_truncated_files_do_not_raise():
    assert parse_vdf(r'"a" { "b" "say \"hi\" C:\\x" }') == {"a": {"b": 'say "hi" C:\\x'}}
    assert parse_vdf('"AppState" { "appid" "5" "name" "Hal') == {"appstate": {"appid": "5", "name": "Hal"}}
    assert parse_manifest("not vdf at all") is None


@needs_fixtures
def test_running_exe_and_app_id_map_to_the_game_name(tmp_path):
    """A Steam tree built from the sample files: both ways of recognising Wildermyth."""
    home = tmp_path / "home"
    steam = home / ".local/share/Steam"
    (steam / "steamapps/common/Wildermyth").mkdir(parents=True)
    shutil.copy(MANIFEST, steam / "steamapps/appmanifest_763890.acf")
    shutil.copy(FOLDERS, steam / "steamapps/libraryfolders.vdf")
    lib = SteamLibrary.for_homes([home])
    ctx = Context(steam=lib.index)
    by_exe = classify(ProcessFacts(name="wildermyth", exe=f"{steam}/steamapps/common/Wildermyth/jre/bin/java",
                                   cmdline=["java", "-jar", "wildermyth.jar"]), ctx)
    by_env = classify(ProcessFacts(name="java", exe="/usr/bin/java", environ={"SteamAppId": "763890"}), Context(steam=lib.index))
    assert (by_exe.category, by_exe.label) == ("gaming", "Wildermyth")
    assert (by_env.category, by_env.label) == ("gaming", "Wildermyth")
    assert "Steam app 763890" in by_exe.reason


def test_flatpak_and_extra_libraries_in_both_formats(tmp_path):
    home = tmp_path / "home"
    flatpak = home / ".var/app/com.valvesoftware.Steam/.local/share/Steam"
    install(flatpak, "620", "Portal 2", "Portal 2")
    old_lib, new_lib = tmp_path / "old", tmp_path / "new"
    install(old_lib, "400", "Portal", "Portal")
    install(new_lib, "1145360", "Hades", "Hades")
    (flatpak / "config").mkdir()
    (flatpak / "config/libraryfolders.vdf").write_text(old_libraryfolders([old_lib]))
    extra = tmp_path / "extra"
    install(extra, "70", "Half-Life", "Half-Life")
    (extra / "steamapps/libraryfolders.vdf").write_text(new_libraryfolders([extra, new_lib]))
    index = SteamLibrary.for_homes([home], extra=[extra]).index()
    assert {a: index.app(a).name for a in index.apps} == {
        "620": "Portal 2", "400": "Portal", "70": "Half-Life", "1145360": "Hades"}
    assert index.installed("hades").appid == "1145360"


def test_parsed_once_and_again_only_when_files_change(tmp_path):
    steam = tmp_path / "home/.steam/steam"
    install(steam, "70", "Half-Life", "Half-Life")
    lib = SteamLibrary.for_homes([tmp_path / "home"])
    for _ in range(5):
        assert lib.index().app("70").name == "Half-Life"
    assert lib.parses == 1
    install(steam, "220", "Half-Life 2", "Half-Life 2")
    os.utime(steam / "steamapps", ns=(1, 1))  # a new manifest moves the folder's mtime
    assert lib.index().app("220").name == "Half-Life 2"
    assert lib.parses == 2
    path = steam / "steamapps/appmanifest_70.acf"
    path.write_text(manifest("70", "Half-Life: Source", "Half-Life"))
    os.utime(path, ns=(2, 2))
    assert lib.index().app("70").name == "Half-Life: Source"
    assert lib.parses == 3


def test_steam_tools_under_common_are_not_games():
    assert common_dir("Z:\\home\\me\\Steam\\steamapps\\common\\Elden Ring\\Game\\eldenring.exe") == "Elden Ring"
    proton = classify(ProcessFacts(name="wine64-preloader",
                                   exe="/home/me/.steam/steam/steamapps/common/Proton 9.0/files/bin/wine64-preloader",
                                   cmdline=["C:\\windows\\system32\\winedevice.exe"]))
    assert proton.category != "gaming"
