"""One-way layering (#14.6): the library never imports the command line.

gpu, classify, llm -> store -> report, telemetry -> daemon -> cli. A library
module that imports ``gpm.cli`` pulls Click and every command's options into
scripts that only want the library, and hides a cycle. Imports inside
functions count too: they are where such cycles used to hide.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The command line itself. gpm.devtools renders a command tree it is given (tools/generate.py
# and `gpm install` pass gpm.cli's), so it is library side.
CLI_SIDE = ("gpm/cli/", "gpm/__main__.py")
# Library files allowed to import gpm.cli: none (an entry here must say why, and goes when it can).
ALLOWED: set[str] = set()


def cli_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of gpm.cli in ``source``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]
        else:
            continue
        found += [(node.lineno, name) for name in names if name == "gpm.cli" or name.startswith("gpm.cli.")][:1]
    return sorted(found)


def test_the_checker_sees_imports_at_any_depth():
    source = ("import os\nfrom gpm import humanize\n"
              "def f():\n    from gpm.cli import COMMANDS\n"
              "class C:\n    def g(self):\n        import gpm.cli.units\n"
              "def h():\n    from gpm import cli\n"
              "def i():\n    return importlib.import_module('gpm.cli.sample')\n")
    assert cli_imports(source) == [(4, "gpm.cli"), (7, "gpm.cli.units"), (9, "gpm.cli"), (11, "gpm.cli.sample")]


def test_no_library_module_imports_the_cli():
    offenders = []
    for path in sorted((REPO / "gpm").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(CLI_SIDE) or rel in ALLOWED:
            continue
        offenders += [f"{rel}:{line} imports {name}" for line, name in cli_imports(path.read_text())]
    assert offenders == [], "move what the library needs out of gpm.cli:\n" + "\n".join(offenders)


def test_the_allow_list_holds_only_files_that_still_need_it():
    """When the report rework lands, its entry must go: the list cannot outlive its reason."""
    for rel in ALLOWED:
        assert cli_imports((REPO / rel).read_text()), f"{rel} no longer imports gpm.cli: remove it from ALLOWED"


def gpm_modules() -> dict[str, Path]:
    """Dotted name -> file of every module in gpm/."""
    out = {}
    for path in sorted((REPO / "gpm").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def private_imports(source: str, modules: set[str]) -> list[tuple[int, str]]:
    """(line, module.name) of every ``from gpm... import _name`` in ``source``, at any depth."""
    return [(node.lineno, f"{node.module}.{alias.name}") for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules
            for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]


def test_the_private_name_checker_sees_them_at_any_depth():
    source = "from gpm.store.samples import GpuIds, _save\ndef f():\n    from gpm.otlp import _quiet, __version__\n"
    assert private_imports(source, {"gpm.store.samples", "gpm.otlp"}) == [(1, "gpm.store.samples._save"),
                                                                           (3, "gpm.otlp._quiet")]


def test_no_module_imports_another_modules_private_name():
    """A name one module needs from another is part of its interface: public, with a docstring (#14.6)."""
    modules = gpm_modules()
    offenders = [f"{path.relative_to(REPO)}:{line} imports {name}" for path in modules.values()
                 for line, name in private_imports(path.read_text(), set(modules))]
    assert offenders == [], "make these names public (with a docstring) or move the code:\n" + "\n".join(offenders)


def top_level_imports(source: str, modules: set[str]) -> set[str]:
    """The gpm modules ``source`` imports when it is loaded: its top-level imports, outside
    ``if TYPE_CHECKING:``. ``from gpm.a import b`` means gpm.a.b when that is a module, else gpm.a.
    A parent package is not counted: Python loads it first, before any cycle can matter."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
                found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                             for a in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])

    visit(ast.parse(source).body)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as [a, b, ..., a], or [] when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)):
            return cycle
    return []


def test_the_cycle_finder_finds_one_and_only_one_that_is_there():
    modules = {"gpm", "gpm.a", "gpm.b", "gpm.c"}
    graph = {"gpm.a": top_level_imports("from gpm import b\n", modules),
             "gpm.b": top_level_imports("import gpm.c\nif TYPE_CHECKING:\n    from gpm.a import X\n", modules),
             "gpm.c": top_level_imports("def f():\n    from gpm import a\n", modules)}
    assert graph == {"gpm.a": {"gpm.b"}, "gpm.b": {"gpm.c"}, "gpm.c": set()}
    assert find_cycle(graph) == []
    graph["gpm.c"] = top_level_imports("try:\n    from gpm.a import f\nexcept ImportError:\n    pass\n", modules)
    assert find_cycle(graph) == ["gpm.a", "gpm.b", "gpm.c", "gpm.a"]


def test_no_import_cycles():
    """gpm's modules, as loaded, form no cycle (#14.4): a cycle works only while every
    import in it stays inside a function, which hides the structure."""
    modules = gpm_modules()
    graph = {name: top_level_imports(path.read_text(), set(modules)) - {name} for name, path in modules.items()}
    assert find_cycle(graph) == []
