"""The Click app as plain data: commands, options, arguments and help.

Man pages and shell completions are generated from this one walk of
``gpm.cli.cli``, so a command registered with ``cli.add_command`` appears in
both after regenerating.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import click

# Options (by parameter name) whose values are completed dynamically.
GPU_PARAMS = {"gpu", "gpus", "gpu_index", "gpu_indexes"}
MODEL_PARAMS = {"model", "models", "model_name"}


@dataclass
class Param:
    """One option or argument, with what its value is for completion."""

    name: str
    opts: list[str]  # "-n", "--count" (options); [] for arguments
    secondary_opts: list[str]  # "--no-x" of a "--x/--no-x" flag
    help: str
    decl: str  # "-n, --count INTEGER RANGE", as --help shows it
    takes_value: bool
    repeatable: bool  # count options and multiple=True
    metavar: str
    value_kind: str | None  # "choice", "file", "dir", "gpu", "model" or None
    choices: list[str]
    envvar: str | None
    is_argument: bool = False


@dataclass
class Command:
    path: list[str]  # ["config", "show"]; [] for gpm itself
    short_help: str
    help: str
    params: list[Param]
    subcommands: list["Command"] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " ".join(["gpm", *self.path])

    @property
    def options(self) -> list[Param]:
        return [p for p in self.params if not p.is_argument]

    @property
    def arguments(self) -> list[Param]:
        return [p for p in self.params if p.is_argument]

    def walk(self):
        yield self
        for sub in self.subcommands:
            yield from sub.walk()


def _value_kind(param: click.Parameter) -> tuple[str | None, list[str]]:
    t = param.type
    if isinstance(t, click.Choice):
        return "choice", [str(c) for c in t.choices]
    if param.name in GPU_PARAMS:
        return "gpu", []
    if param.name in MODEL_PARAMS:
        return "model", []
    if isinstance(t, (click.Path, click.File)):
        if isinstance(t, click.Path) and not t.file_okay:
            return "dir", []
        return "file", []
    return None, []


def _param(param: click.Parameter, ctx: click.Context) -> Param:
    kind, choices = _value_kind(param)
    is_flag = isinstance(param, click.Option) and (param.is_flag or param.count)
    record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
    metavar = param.make_metavar(ctx) if not is_flag else ""
    return Param(
        name=param.name or "",
        opts=list(param.opts) if isinstance(param, click.Option) else [],
        secondary_opts=list(param.secondary_opts) if isinstance(param, click.Option) else [],
        help=record[1] if record else "",
        decl=record[0] if record else metavar,
        takes_value=not is_flag,
        repeatable=bool(getattr(param, "count", False) or getattr(param, "multiple", False)),
        metavar=metavar,
        value_kind=None if is_flag else kind,
        choices=choices,
        envvar=param.envvar if isinstance(param.envvar, str) else None,
        is_argument=isinstance(param, click.Argument),
    )


def _command(cmd: click.Command, path: list[str], parent: click.Context | None, short: str) -> Command:
    # make_context would apply context_settings (-h); a bare Context must be given them.
    ctx = click.Context(cmd, info_name=path[-1] if path else "gpm", parent=parent, **cmd.context_settings)
    params = [_param(p, ctx) for p in cmd.get_params(ctx) if not getattr(p, "hidden", False)]
    node = Command(path, short or cmd.get_short_help_str(limit=90), inspect_help(cmd), params)
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            node.subcommands.append(_command(sub, [*path, name], ctx, ""))
    return node


def inspect_help(cmd: click.Command) -> str:
    import inspect

    return inspect.cleandoc(cmd.help or "")


def load(root: click.Group) -> Command:
    """The whole command tree under ``root``, gpm's root group (``gpm.cli.cli``)."""
    return _command(root, [], None, "a GPU and local-LLM monitor")


def paragraphs(help_text: str) -> list[tuple[bool, str]]:
    """Click help -> [(verbatim, text)]; a ``\\b`` paragraph keeps its lines."""
    out = []
    for block in re.split(r"\n\s*\n", help_text.strip()):
        if block.startswith("\b"):
            out.append((True, block[1:].strip("\n")))
        elif block.strip():
            out.append((False, " ".join(line.strip() for line in block.splitlines())))
    return out
