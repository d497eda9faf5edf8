"""Shell completion scripts (bash, zsh, fish) from the command tree.

Static scripts: pressing TAB never starts Python. Subcommands, options and
choices are written out; GPU indexes and Ollama model names (options named
in ``clitree.GPU_PARAMS``/``MODEL_PARAMS``) are looked up when completed,
cheaply: the GPU count from /proc/driver/nvidia/gpus (nvidia-smi when that is
absent) and the models from `ollama list`.
"""

from __future__ import annotations

import re
import shlex

from gpm.devtools.clitree import Command, Param

HEADER = "Generated from the Click app by `python tools/generate.py`; do not edit."

GPUS_SH = ("{ n=$(ls /proc/driver/nvidia/gpus 2>/dev/null | wc -l); "
           "if [ \"$n\" -gt 0 ]; then seq 0 $((n - 1)); "
           "else nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null; fi; }")
MODELS_SH = "ollama list 2>/dev/null | awk 'NR > 1 {print $1}'"


def _key(cmd: Command) -> str:
    return " ".join(cmd.path)


def _all_opts(p: Param) -> list[str]:
    return [*p.opts, *p.secondary_opts]


def _describe(p: Param) -> str:
    """The option's help without Click's trailing "  [default: ...]" note."""
    return re.sub(r"\s{2,}\[[^\]]*\]$", "", p.help or "").strip() or p.name


# --- bash -------------------------------------------------------------------
def bash(root: Command) -> str:
    subs, opts, takes, values = [], [], [], []
    for cmd in root.walk():
        k = _key(cmd)
        if cmd.subcommands:
            subs.append(f'        "{k}") echo "{" ".join(s.path[-1] for s in cmd.subcommands)}" ;;')
        flat = [o for p in cmd.options for o in _all_opts(p)]
        opts.append(f'        "{k}") echo "{" ".join(flat)}" ;;')
        valued = [o for p in cmd.options if p.takes_value for o in p.opts]
        if valued:
            takes.append(f'        "{k}") echo "{" ".join(valued)}" ;;')
        for p in cmd.params:
            action = _bash_action(p)
            if action is None:
                continue
            labels = p.opts if not p.is_argument else ["@arg"]
            for o in labels:
                values.append(f'        "{k}|{o}") {action} ;;')
    return f"""# bash completion for gpm. {HEADER}
# Install: copy to /usr/share/bash-completion/completions/gpm (or
# ~/.local/share/bash-completion/completions/gpm).

_gpm_subcommands() {{
    case "$1" in
{chr(10).join(subs)}
    esac
}}

_gpm_options() {{
    case "$1" in
{chr(10).join(opts)}
    esac
}}

_gpm_takes_value() {{
    case "$1" in
{chr(10).join(takes)}
    esac
}}

_gpm_values() {{
    local cur=$3
    case "$1|$2" in
{chr(10).join(values)}
        *) COMPREPLY=() ;;
    esac
}}

_gpm_gpus() {GPUS_SH}

_gpm_models() {{ {MODELS_SH}; }}

_gpm() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local path="" i w skip=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        if ((skip)); then skip=0; continue; fi
        case "$w" in
            -*=*) ;;
            -*) [[ " $(_gpm_takes_value "$path") " == *" $w "* ]] && skip=1 ;;
            *) [[ " $(_gpm_subcommands "$path") " == *" $w "* ]] && path="${{path:+$path }}$w" ;;
        esac
    done
    COMPREPLY=()
    if [[ " $(_gpm_takes_value "$path") " == *" $prev "* ]]; then
        _gpm_values "$path" "$prev" "$cur"
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_gpm_options "$path")" -- "$cur"))
        return
    fi
    local subs
    subs=$(_gpm_subcommands "$path")
    if [[ -n $subs ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
    else
        _gpm_values "$path" "@arg" "$cur"
    fi
}}

complete -o default -F _gpm gpm
"""


def _bash_action(p: Param) -> str | None:
    if p.value_kind == "choice":
        return f'COMPREPLY=($(compgen -W "{" ".join(p.choices)}" -- "$cur"))'
    if p.value_kind == "file":
        return 'COMPREPLY=($(compgen -f -- "$cur"))'
    if p.value_kind == "dir":
        return 'COMPREPLY=($(compgen -d -- "$cur"))'
    if p.value_kind == "gpu":
        return 'COMPREPLY=($(compgen -W "$(_gpm_gpus)" -- "$cur"))'
    if p.value_kind == "model":
        return 'COMPREPLY=($(compgen -W "$(_gpm_models)" -- "$cur"))'
    return None


# --- zsh --------------------------------------------------------------------
def _zsh_text(text: str) -> str:
    """Help text safe inside '[...]' of a single-quoted _arguments spec."""
    text = text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]").replace(":", "\\:")
    return text.replace("'", "'\\''")


def _zsh_action(p: Param) -> str:
    if p.value_kind == "choice":
        return "(" + " ".join(p.choices) + ")"
    return {"file": "_files", "dir": "_files -/", "gpu": "_gpm_gpus", "model": "_gpm_models"}.get(
        p.value_kind or "", " ")


def _zsh_specs(cmd: Command) -> list[str]:
    specs = []
    for p in cmd.options:
        names = _all_opts(p)
        exclusive = "" if p.repeatable or len(names) < 2 else "(" + " ".join(names) + ")"
        star = "*" if p.repeatable else ""
        help_text = _zsh_text(_describe(p))
        for name in names:
            suffix = ""
            if p.takes_value:
                suffix = ("=" if name.startswith("--") else "+") + \
                    f"[{help_text}]:{p.name.replace('_', ' ')}:{_zsh_action(p)}"
            else:
                suffix = f"[{help_text}]"
            specs.append(f"'{exclusive}{star}{name}{suffix}'")
    for a in cmd.arguments:
        specs.append(f"'{'*' if a.repeatable else ''}:{a.name.replace('_', ' ')}:{_zsh_action(a)}'")
    return specs


def _zsh_function(cmd: Command) -> str:
    fname = "_gpm" + "".join("_" + part.replace("-", "_") for part in cmd.path)
    specs = _zsh_specs(cmd)
    if not cmd.subcommands:
        body = "    _arguments -s \\\n        " + " \\\n        ".join(specs or ["'*: :'"])
        return f"{fname}() {{\n{body}\n}}\n"
    described = "\n".join(
        f"        {shlex.quote(s.path[-1] + ':' + s.short_help.replace(':', chr(92) + ':'))}"
        for s in cmd.subcommands)
    cases = "\n".join(
        f"            {s.path[-1]}) {fname}_{s.path[-1].replace('-', '_')} ;;" for s in cmd.subcommands)
    return f"""{fname}() {{
    local curcontext="$curcontext" state line
    typeset -A opt_args
    _arguments -C -s \\
        {"".join(spec + " " + chr(92) + chr(10) + "        " for spec in specs)}'1: :->command' \\
        '*:: :->args'
    case $state in
    command)
        local -a commands
        commands=(
{described}
        )
        _describe -t commands 'gpm command' commands
        ;;
    args)
        case $line[1] in
{cases}
        esac
        ;;
    esac
}}
"""


def zsh(root: Command) -> str:
    functions = "\n".join(_zsh_function(c) for c in root.walk())
    return f"""#compdef gpm
# zsh completion for gpm. {HEADER}
# Install: copy as _gpm into a folder of $fpath (e.g. /usr/share/zsh/vendor-completions).

_gpm_gpus() {{
    local -a gpus
    gpus=(${{(f)"$({GPUS_SH} )"}})
    _describe -t gpus 'GPU index' gpus
}}

_gpm_models() {{
    local -a models
    models=(${{(f)"$({MODELS_SH})"}})
    _describe -t models 'Ollama model' models
}}

{functions}
_gpm "$@"
"""


# --- fish -------------------------------------------------------------------
def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish(root: Command) -> str:
    lines = [
        f"# fish completion for gpm. {HEADER}",
        "# Install: copy to ~/.config/fish/completions/gpm.fish (or /usr/share/fish/vendor_completions.d).",
        "",
        "function __gpm_subcommands",
        "    switch \"$argv[1]\"",
    ]
    for cmd in root.walk():
        if cmd.subcommands:
            lines += [f"        case {_fish_quote(_key(cmd))}",
                      "            printf '%s\\n' " + " ".join(s.path[-1] for s in cmd.subcommands)]
    valued = sorted({o for c in root.walk() for p in c.options if p.takes_value for o in p.opts})
    lines += [
        "    end",
        "end",
        "",
        "# The subcommand path typed so far: '', 'config', 'config show'...",
        "function __gpm_path",
        "    set -l path",
        "    set -l skip 0",
        "    for t in (commandline -opc)[2..-1]",
        "        if test $skip = 1",
        "            set skip 0",
        "            continue",
        "        end",
        "        switch $t",
        "            case '-*=*'",
        "            case '-*'",
        f"                contains -- $t {' '.join(valued)}; and set skip 1",
        "            case '*'",
        "                if contains -- $t (__gpm_subcommands \"$path\")",
        "                    set path (string join ' ' -- $path $t)",
        "                end",
        "        end",
        "    end",
        "    echo \"$path\"",
        "end",
        "",
        "function __gpm_at",
        "    set -l p (__gpm_path)",
        "    test \"$p\" = \"$argv[1]\"",
        "end",
        "",
        "function __gpm_gpus",
        "    set -l n (count /proc/driver/nvidia/gpus/*)",
        "    if test $n -gt 0",
        "        seq 0 (math $n - 1)",
        "    else",
        "        nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null",
        "    end",
        "end",
        "",
        "function __gpm_models",
        f"    {MODELS_SH}",
        "end",
        "",
        "complete -c gpm -f",
    ]
    for cmd in root.walk():
        cond = f"-n '__gpm_at \"{_key(cmd)}\"'"
        for s in cmd.subcommands:
            lines.append(f"complete -c gpm {cond} -a {s.path[-1]} -d {_fish_quote(s.short_help)}")
        for p in cmd.options:
            parts = [f"complete -c gpm {cond}"]
            for o in _all_opts(p):
                parts.append(f"-s {o[1:]}" if not o.startswith("--") else f"-l {o[2:]}")
            if p.takes_value:
                parts.append(_fish_value(p))
            parts.append(f"-d {_fish_quote(_describe(p))}")
            lines.append(" ".join(parts))
        for a in cmd.arguments:
            lines.append(f"complete -c gpm {cond} {_fish_value(a)}")
    return "\n".join(lines) + "\n"


def _fish_value(p: Param) -> str:
    if p.value_kind == "choice":
        return f"-x -a {_fish_quote(' '.join(p.choices))}"
    if p.value_kind in ("file", "dir"):
        return "-r -F"
    if p.value_kind == "gpu":
        return "-x -a '(__gpm_gpus)'"
    if p.value_kind == "model":
        return "-x -a '(__gpm_models)'"
    return "-x"


def scripts(root: Command) -> dict[str, str]:
    """File name in completions/ -> script."""
    return {"gpm.bash": bash(root), "_gpm": zsh(root), "gpm.fish": fish(root)}
