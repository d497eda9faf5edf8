"""systemd units and crontab lines that run gpm, for ``gpm install``.

The units name the absolute path of the running gpm (or of its Python with
``-m gpm`` when gpm runs from a checkout), so what was tested on the command
line is exactly what systemd or cron starts. Two ways to run gpm:

- ``gpm.service``: the daemon (``Type=notify``, watchdog, reload on SIGHUP);
- timers (``--timers``): ``gpm sample`` every minute, ``gpm archive`` daily,
  ``gpm report`` weekly, for machines that prefer one-shot runs; the archive
  and report timers also suit a daemon that has archiving switched off.

The weekly report (timer or crontab line) covers the last finished ISO week
and goes to its own dated file, ``reports/report-2026-W48.txt`` beside the
database, so reports (and ``weekly_summaries``) accumulate week after week
and a rerun in the same week rewrites the same file (#13.9). With ``[report]
weekly_html = true`` the same run also writes ``report-2026-W48.html`` beside
it (#16).

System units keep their data in /var/lib/gpm (``StateDirectory=``) and read
/etc/gpm/config.toml; user units use the user's usual XDG folders.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from gpm import paths
from gpm.config import Config
from gpm.devtools import completions, manpages
from gpm.devtools.clitree import Command

SAMPLE_COUNT = 6  # gpm-sample runs every minute: 6 samples 10 s apart fill it
SAMPLE_INTERVAL_SECS = 10
WATCHDOG_SECS = 60  # > the database busy timeout (30 s) a sample may wait out
REPORT_NAME = "reports/report-{week}.txt"  # beside the database; gpm report fills in {week}
MKDIR = "/bin/mkdir"  # where coreutils puts it on merged and unmerged /usr alike
SYSTEM_DATA_DIR = Path("/var/lib/gpm")
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


def gpm_command() -> list[str]:
    """How to start this very gpm: its console script, or ``python -m gpm``."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "gpm" and argv0.is_file():
        return [str(argv0.resolve())]
    script = Path(sys.executable).parent / "gpm"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(Path(sys.executable).absolute()), "-m", "gpm"]


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


@dataclass
class Setup:
    """Where the generated units and lines point: command, options, data folders."""

    command: list[str]
    global_args: list[str]  # --config/--db given to `gpm install`, carried over
    user: bool
    data_dirs: list[Path]  # must stay writable under ProtectSystem=strict
    report_path: Path
    weekly_html: bool = False  # [report] weekly_html: the html report beside the text one

    @classmethod
    def from_config(cls, cfg: Config, *, user: bool, config_path: str | None = None,
                    db_path: str | None = None) -> "Setup":
        global_args: list[str] = []
        if config_path:
            global_args += ["--config", str(Path(config_path).expanduser().absolute())]
        if db_path:
            global_args += ["--db", str(Path(db_path).expanduser().absolute())]
        if user:
            dirs = [cfg.db_path.parent, cfg.archive_dir, Path(paths.state_home())]
            report = cfg.db_path.parent / REPORT_NAME
        else:
            db = Path(db_path).expanduser().absolute() if db_path else SYSTEM_DATA_DIR / "gpm.db"
            dirs = [SYSTEM_DATA_DIR, db.parent]
            report = db.parent / REPORT_NAME
        unique: list[Path] = []
        for d in dirs:
            d = d.absolute()
            if d not in unique:
                unique.append(d)
        return cls(gpm_command(), global_args, user, unique, report, bool(cfg["report.weekly_html"]))

    def argv(self, *args: str) -> list[str]:
        return [*self.command, *self.global_args, *args]


def _systemd_word(word: str) -> str:
    """Quote one ExecStart= argument (specifiers escaped, spaces quoted)."""
    word = word.replace("%", "%%")
    if any(c in word for c in " \t\"'\\;$"):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def _exec(setup: Setup, *args: str) -> str:
    return " ".join(_systemd_word(w) for w in setup.argv(*args))


def _hardening(setup: Setup) -> list[str]:
    lines = [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ]
    if not setup.user:
        # the gpm executable may live in a home folder: readable, not writable
        lines.append("ProtectHome=read-only")
    lines += [f"ReadWritePaths=-{_systemd_word(str(d))}" for d in setup.data_dirs]
    lines += [
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "UMask=0077",
        "StateDirectory=gpm",
        "StateDirectoryMode=0700",
    ]
    # /dev/nvidia* must stay visible: no PrivateDevices= or DevicePolicy=.
    return lines


def _environment(setup: Setup) -> list[str]:
    lines = []
    if setup.command[1:2] == ["-m"]:
        lines.append(f"Environment={_systemd_word('PYTHONPATH=' + _package_root())}")
    if not setup.user:
        lines.append("Environment=XDG_CONFIG_HOME=/etc XDG_DATA_HOME=/var/lib XDG_STATE_HOME=/var/lib")
    return lines


def _header(name: str) -> list[str]:
    return [
        f"# Generated by `gpm install systemd`; change it with `systemctl edit {name}`",
        "# (a drop-in survives regeneration).",
    ]


def _oneshot(setup: Setup, name: str, description: str, doc: str, *args: str,
             folder: Path | None = None, then: list[list[str]] | None = None) -> str:
    """A one-shot service running ``gpm ARGS``, after creating ``folder`` when
    given; each of ``then`` runs after it, once it succeeded."""
    pre = [f"ExecStartPre={MKDIR} -p {_systemd_word(str(folder))}"] if folder else []
    starts = [f"ExecStart={_exec(setup, *run)}" for run in [list(args), *(then or [])]]
    lines = _header(name) + [
        "[Unit]",
        f"Description={description}",
        f"Documentation=man:{doc}(1)",
        "",
        "[Service]",
        "Type=oneshot",
        *pre,
        *starts,
        *_environment(setup),
        "Nice=10",
        "IOSchedulingClass=idle",
        *_hardening(setup),
    ]
    return "\n".join(lines) + "\n"


def _timer(name: str, description: str, calendar: str, *, persistent: bool, spread: str | None,
           accuracy: str) -> str:
    lines = _header(name) + [
        "[Unit]",
        f"Description={description}",
        "",
        "[Timer]",
        f"OnCalendar={calendar}",
        f"AccuracySec={accuracy}",
    ]
    if persistent:
        lines.append("Persistent=yes")
    if spread:
        lines.append(f"RandomizedDelaySec={spread}")
    lines += ["", "[Install]", "WantedBy=timers.target"]
    return "\n".join(lines) + "\n"


_REPORT_ARGS = ("report", "--week", "last", "--output")  # then the path with {week}


def report_runs(setup: Setup) -> list[list[str]]:
    """The weekly report's gpm arguments: the text file, then the html one when asked for."""
    runs = [[*_REPORT_ARGS, str(setup.report_path)]]
    if setup.weekly_html:
        runs.append(["report", "--week", "last", "--format", "html", "--output",
                     str(setup.report_path.with_suffix(".html"))])
    return runs


def systemd_units(setup: Setup, *, timers: bool) -> dict[str, str]:
    """File name -> content, the daemon's unit first."""
    wanted_by = "default.target" if setup.user else "multi-user.target"
    daemon = _header("gpm.service") + [
        "[Unit]",
        "Description=gpm GPU and local-LLM monitor",
        "Documentation=man:gpm-daemon(1)",
        "After=network.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={_exec(setup, 'daemon')}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        *_environment(setup),
        "Restart=on-failure",
        "RestartSec=5s",
        # exit 2: the configuration is wrong; restarting will not fix it
        "RestartPreventExitStatus=2",
        f"WatchdogSec={WATCHDOG_SECS}s",
        "TimeoutStopSec=10s",
        *_hardening(setup),
        "",
        "[Install]",
        f"WantedBy={wanted_by}",
    ]
    units = {"gpm.service": "\n".join(daemon) + "\n"}
    if timers:
        units["gpm-sample.service"] = _oneshot(
            setup, "gpm-sample.service", "gpm: sample every GPU", "gpm-sample",
            "sample", "--count", str(SAMPLE_COUNT), "--interval", str(SAMPLE_INTERVAL_SECS))
        units["gpm-sample.timer"] = _timer(
            "gpm-sample.timer", "gpm: sample every GPU every minute", "*-*-* *:*:00",
            persistent=False, spread=None, accuracy="1s")
        units["gpm-archive.service"] = _oneshot(
            setup, "gpm-archive.service", "gpm: archive old rows to Parquet", "gpm-archive", "archive")
        units["gpm-archive.timer"] = _timer(
            "gpm-archive.timer", "gpm: archive old rows daily", "daily",
            persistent=True, spread="30min", accuracy="1min")
        units["gpm-report.service"] = _oneshot(
            setup, "gpm-report.service", "gpm: report the last finished week into its own file", "gpm-report",
            *report_runs(setup)[0], folder=setup.report_path.parent, then=report_runs(setup)[1:])
        units["gpm-report.timer"] = _timer(
            "gpm-report.timer", "gpm: weekly report, Mondays", "weekly",
            persistent=True, spread="30min", accuracy="1min")
    return units


def render_units(units: dict[str, str]) -> str:
    """Every unit introduced by a ``# NAME`` line, for printing."""
    return "\n".join(f"# {name}\n{text}" for name, text in units.items())


def unit_dir(user: bool) -> Path:
    if user:
        return Path(paths.config_home()).parent / "systemd" / "user"
    return SYSTEM_UNIT_DIR


def write_units(units: dict[str, str], directory: Path) -> list[tuple[Path, bool]]:
    """Write each unit atomically; [(path, changed)]."""
    return write_files({directory / name: text for name, text in units.items()})


def write_files(files: dict[Path, str]) -> list[tuple[Path, bool]]:
    """Write each file atomically (mode 0644, folders created); [(path, changed)].

    A file whose content is already right is left alone, so reinstalling is
    idempotent and says "unchanged".
    """
    results = []
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            results.append((path, False))
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        results.append((path, True))
    return results


# --- completions and man pages ------------------------------------------------
# pip installs neither, so `gpm install completions|man` renders them from the
# running gpm (the same generator as the repository's completions/ and man/)
# and puts them where each shell and man(1) look.
SHELLS = ("bash", "zsh", "fish")
_COMPLETION_NAMES = {"bash": "gpm.bash", "zsh": "_gpm", "fish": "gpm.fish"}
SYSTEM_SHARE = Path("/usr/local/share")


def _xdg_base(gpm_folder: str) -> Path:
    """$XDG_DATA_HOME or $XDG_CONFIG_HOME itself (``paths`` gives its gpm folder)."""
    return Path(gpm_folder).parent


def completion_paths(system: bool) -> dict[str, Path]:
    """Where each shell loads completions from by itself (zsh: see ``zsh_hint``)."""
    if system:
        return {
            "bash": SYSTEM_SHARE / "bash-completion/completions/gpm",
            "zsh": SYSTEM_SHARE / "zsh/site-functions/_gpm",
            "fish": SYSTEM_SHARE / "fish/vendor_completions.d/gpm.fish",
        }
    data = _xdg_base(paths.data_home())
    user_dir = os.environ.get("BASH_COMPLETION_USER_DIR", "").split(":")[0]
    bash_dir = Path(user_dir) if os.path.isabs(user_dir) else data / "bash-completion"
    return {
        "bash": bash_dir / "completions/gpm",
        "zsh": data / "zsh/site-functions/_gpm",
        "fish": _xdg_base(paths.config_home()) / "fish/completions/gpm.fish",
    }


def zsh_hint(path: Path) -> str | None:
    """The ~/.zshrc line zsh needs to find ``_gpm`` (None for a folder zsh already searches)."""
    if path.parent == SYSTEM_SHARE / "zsh/site-functions":
        return None
    return f"fpath=({path.parent} $fpath)   # in ~/.zshrc, before compinit"


def completion_files(shells: tuple[str, ...], system: bool, root: Command) -> dict[Path, str]:
    """Completion scripts of the command tree ``root`` for ``shells``, by where they go."""
    scripts = completions.scripts(root)
    targets = completion_paths(system)
    return {targets[shell]: scripts[_COMPLETION_NAMES[shell]] for shell in shells}


def man_dir(system: bool) -> Path:
    return (SYSTEM_SHARE if system else _xdg_base(paths.data_home())) / "man/man1"


def man_files(system: bool, root: Command) -> dict[Path, str]:
    """The man pages of the command tree ``root``, by where they go."""
    folder = man_dir(system)
    pages = manpages.man_pages(root, date.today().isoformat())
    return {folder / name: page for name, page in pages.items()}


def manpath_hint(folder: Path) -> str | None:
    """The shell line that makes ``man gpm`` find ``folder``, or None when it already does.

    Asks ``manpath`` (man-db) when present; without it, a MANPATH line is
    always given, since there is no way to know.
    """
    root = folder.parent
    if shutil.which("manpath"):
        try:
            found = subprocess.run(["manpath", "-q"], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            found = ""
        if str(root) in found.strip().split(":"):
            return None
    # Unset, MANPATH becomes "ROOT:", and the empty part after ":" keeps man's defaults.
    return f'export MANPATH="{root}:$MANPATH"   # in ~/.bashrc or ~/.zshrc'


def cron_lines(setup: Setup) -> str:
    """Crontab lines equivalent to the timers (and the daemon, commented)."""

    env = f"PYTHONPATH={shlex.quote(_package_root())} " if setup.command[1:2] == ["-m"] else ""

    def cmd(*args: str) -> str:
        # cron hands the line to /bin/sh; an unescaped % starts stdin there.
        return env + " ".join(shlex.quote(w) for w in setup.argv(*args)).replace("%", "\\%")

    lines = [
        "# gpm: generated by `gpm install cron`; add with `crontab -e`, or",
        "# (crontab -l; gpm install cron) | crontab -",
        f"# sample every GPU each minute: {SAMPLE_COUNT} samples {SAMPLE_INTERVAL_SECS} s apart",
        f"* * * * * {cmd('sample', '--count', str(SAMPLE_COUNT), '--interval', str(SAMPLE_INTERVAL_SECS))}",
    ]
    folder = shlex.quote(str(setup.report_path.parent)).replace("%", "\\%")
    lines += ["# archive rows older than [storage] retention_days to Parquet, daily",
              f"17 3 * * * {cmd('archive')}",
              f"# report the last finished ISO week into its own file{' (and html)' if setup.weekly_html else ''}, Mondays",
              f"23 6 * * 1 mkdir -p {folder} && {' && '.join(cmd(*args) for args in report_runs(setup))}"]
    lines += ["# or, instead of the sample line, run the daemon from boot:",
              f"# @reboot {cmd('daemon')}"]
    return "\n".join(lines) + "\n"
