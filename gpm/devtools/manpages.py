"""Man pages (roff, ``man(7)`` macros) from the Click help.

One page for ``gpm`` and one per subcommand (``gpm-sample.1``; a group's
subcommands are sections of its page). Every page has NAME, SYNOPSIS,
DESCRIPTION, OPTIONS, EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES and SEE
ALSO. The words come from where users already read them: the help text,
the config schema (for every ``[section] key`` a help mentions), the exit
code table in ``gpm.errors`` and the example command lines of
``gpm.devtools.examples``.
"""

from __future__ import annotations

import re

from gpm import __version__
from gpm.config import KEYS, SECTIONS
from gpm.devtools.clitree import Command, Param, paragraphs
from gpm.devtools.examples import EXAMPLES
from gpm.errors import EXIT_CODES

# Variables a command reads that are not configuration keys.
COMMAND_ENVIRONMENT: dict[str, list[tuple[str, str]]] = {
    "daemon": [
        ("NOTIFY_SOCKET", "Set by systemd for Type=notify services: where READY=1, STATUS=, "
                          "WATCHDOG=1, RELOADING=1 and STOPPING=1 are sent (a path, or @abstract)."),
        ("WATCHDOG_USEC", "Set by systemd from WatchdogSec=: the daemon pings at half this period "
                          "while sampling is not stuck."),
        ("WATCHDOG_PID", "The process WATCHDOG_USEC is meant for; ignored when it is another."),
        ("JOURNAL_STREAM", "Set by systemd when stderr goes to the journal: log lines then carry a "
                           "<N> priority prefix and no timestamp."),
    ],
}

COMMON_ENVIRONMENT = [
    ("GPM_DB", "The database, as --db."),
    ("GPM_CONFIG", "The configuration file, as --config."),
    ("GPM_<SECTION>_<KEY>", "Any configuration key, e.g. GPM_SERVICE_POLL_INTERVAL_SECS; "
                            "overrides the file, overridden by flags (see gpm-config(1))."),
    ("XDG_CONFIG_HOME, XDG_DATA_HOME, XDG_STATE_HOME",
     "Base folders of the configuration, the data and the state (defaults ~/.config, "
     "~/.local/share, ~/.local/state)."),
]

FILES = [
    ("$XDG_CONFIG_HOME/gpm/config.toml", "The configuration (`gpm config init` writes an example)."),
    ("$XDG_DATA_HOME/gpm/gpm.db", "The SQLite database (folder 0700, file 0600)."),
]
ARCHIVE_FILE = ("$XDG_DATA_HOME/gpm/archive/", "Parquet files of the default database's archived rows "
                "(another database's: <database>-archive/).")


def escape(text: str) -> str:
    """Plain text -> roff: backslashes, option dashes, `code` in bold, non-ASCII."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"(?<![\w\\])-", r"\\-", text)
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    if text[:1] in (".", "'"):
        text = "\\&" + text
    return text


def _lines(text: str) -> list[str]:
    return [escape(line) if line.strip() else ".sp" for line in text.splitlines()]


def _body(help_text: str) -> list[str]:
    out: list[str] = []
    for verbatim, text in paragraphs(help_text):
        if out:
            out.append(".PP")
        if verbatim:
            out += [".nf", *_lines(text), ".fi"]
        else:
            out.append(escape(text))
    return out


def _option(p: Param) -> list[str]:
    return [".TP", f".B {escape(p.decl)}", escape(p.help or "")]


def _config_keys(text: str) -> list[str]:
    """Dotted config keys named in help text as ``[section] key`` (or ``key, key``)."""
    found: list[str] = []
    for match in re.finditer(r"\[(\w+)\]([^\[).;]*)", text):
        section, tail = match.group(1), match.group(2)
        names = {k.name for k in SECTIONS.get(section, [])}
        for word in re.findall(r"[a-z_]+", tail):
            dotted = f"{section}.{word}"
            if word in names and dotted not in found:
                found.append(dotted)
    return found


def _environment(cmd: Command) -> list[str]:
    entries = list(COMMON_ENVIRONMENT)
    if cmd.path:
        entries += COMMAND_ENVIRONMENT.get(cmd.path[0], [])
    all_help = " ".join(c.help + " " + " ".join(p.help for p in c.params) for c in cmd.walk())
    for dotted in _config_keys(all_help):
        key = KEYS[dotted]
        entries.append((key.env_var, f"[{key.section}] {key.name}: {key.help}"))
    out: list[str] = []
    for name, text in entries:
        out += [".TP", f".B {escape(name)}", escape(text)]
    return out


def _examples(cmd: Command, examples: dict[str, list[tuple[str, str]]]) -> list[str]:
    if cmd.path:
        pairs = examples.get(cmd.path[0], [])
        if not pairs:  # no example: one line per (sub)command, from its help
            pairs = [(c.name, c.short_help) for c in cmd.walk() if not c.subcommands]
    else:
        pairs = [lines[0] for name, lines in sorted(examples.items()) if lines]
    out: list[str] = []
    for line, comment in pairs:
        if comment:
            out += [".TP", f".B {escape(line)}", escape(comment)]
        else:
            out += [".PP", f".B {escape(line)}"] if out else [f".B {escape(line)}"]
    return out


def _subcommand_section(sub: Command) -> list[str]:
    out = [f'.SS "{escape(sub.name)}"', *_body(sub.help or sub.short_help)]
    for p in sub.options:
        if p.name != "help":
            out += _option(p)
    return out


def _synopsis(cmd: Command) -> list[str]:
    out = [".SY gpm", "[\\fIGLOBAL OPTIONS\\fR]"] if cmd.path else [".SY gpm"]
    for part in cmd.path:
        out.append(f".B {part}")
    out.append("[\\fIOPTIONS\\fR]")
    if cmd.subcommands:
        out.append("\\fICOMMAND\\fR")
    for a in cmd.arguments:
        out.append(f"\\fI{escape(a.metavar)}\\fR")
    return out + [".YS"]


def page_name(cmd: Command) -> str:
    return "-".join(["gpm", *cmd.path])


def man_page(cmd: Command, root: Command, examples: dict[str, list[tuple[str, str]]], date: str) -> str:
    name = page_name(cmd)
    lines = [
        ".\\\" Generated from the Click help by `python tools/generate.py`; do not edit.",
        f'.TH {name.upper()} 1 {date} "gpm {__version__}" "gpm manual"',
        ".SH NAME",
        f"{escape(name)} \\- {escape(cmd.short_help.rstrip('.'))}",
        ".SH SYNOPSIS",
        *_synopsis(cmd),
        ".SH DESCRIPTION",
        *_body(cmd.help),
        ".SH OPTIONS",
    ]
    for p in cmd.options:
        lines += _option(p)
    if cmd.path:
        lines += [".PP", "Global options (before or after the command) are described in", ".BR gpm (1)."]
    if cmd.subcommands:
        lines.append(".SH COMMANDS")
        if cmd.path:
            for sub in cmd.subcommands:
                lines += _subcommand_section(sub)
        else:
            for sub in cmd.subcommands:
                lines += [".TP", f".BR {page_name(sub)} (1)", escape(sub.short_help)]
    lines.append(".SH EXIT STATUS")
    for code, text in EXIT_CODES.items():
        lines += [".TP", f".B {code}", escape(text)]
    lines += [".SH ENVIRONMENT", *_environment(cmd)]
    files = list(FILES)
    if "archive" in (cmd.help + " ".join(cmd.path)).lower():
        files.append(ARCHIVE_FILE)
    lines.append(".SH FILES")
    for path, text in files:
        lines += [".TP", f".I {escape(path)}", escape(text)]
    lines += [".SH EXAMPLES", *_examples(cmd, examples)]
    others = [page_name(c) for c in [root, *root.subcommands] if c is not cmd]
    lines += [".SH SEE ALSO", ",\n".join(f".BR {n} (1)" for n in others)]
    return "\n".join(lines) + "\n"


def man_pages(root: Command, date: str) -> dict[str, str]:
    """File name -> page, for gpm and each subcommand."""
    return {f"{page_name(c)}.1": man_page(c, root, EXAMPLES, date) for c in [root, *root.subcommands]}
