"""Build Steam install trees in temp folders, in Steam's own file formats."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import FIXTURES

STEAM_FIXTURES = FIXTURES / "steam"


def manifest(appid: str, name: str, installdir: str) -> str:
    return (
        '"AppState"\n{\n'
        f'\t"appid"\t\t"{appid}"\n\t"universe"\t\t"1"\n\t"name"\t\t"{name}"\n'
        f'\t"StateFlags"\t\t"4"\n\t"installdir"\t\t"{installdir}"\n'
        '\t"LastUpdated"\t\t"1700000000"\n\t"SizeOnDisk"\t\t"1000"\n}\n'
    )


def new_libraryfolders(paths: list[Path]) -> str:
    """The block format of current Steam clients."""
    blocks = "".join(
        f'\t"{i}"\n\t{{\n\t\t"path"\t\t"{p}"\n\t\t"label"\t\t""\n\t\t"apps"\n\t\t{{\n\t\t}}\n\t}}\n'
        for i, p in enumerate(paths)
    )
    return f'"libraryfolders"\n{{\n{blocks}}}\n'


def old_libraryfolders(paths: list[Path]) -> str:
    """The numbered-string format of older clients (keys in another case)."""
    entries = "".join(f'\t"{i}"\t\t"{p}"\n' for i, p in enumerate(paths, start=1))
    return ('"LibraryFolders"\n{\n\t"TimeNextStatsReport"\t\t"1651783287"\n'
            f'\t"ContentStatsID"\t\t"-4711"\n{entries}}}\n')


def install(library: Path, appid: str, name: str, installdir: str, text: str | None = None) -> Path:
    """Put an app manifest (and its game folder) into ``library``; return the folder."""
    steamapps = library / "steamapps"
    game = steamapps / "common" / installdir
    game.mkdir(parents=True, exist_ok=True)
    (steamapps / f"appmanifest_{appid}.acf").write_text(text or manifest(appid, name, installdir))
    return game
