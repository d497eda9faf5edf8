"""Every SQL write lives in gpm/store/ (#14.5), and gpm.llm stays below the store.

Read from the source with ``ast``: a statement passed to ``execute``,
``executemany`` or ``executescript`` (directly, or through a name or
attribute the module assigns it to) that writes (INSERT, UPDATE, DELETE,
REPLACE, CREATE, DROP, ALTER) is allowed only in ``gpm/store/``, where the
schema migrations live too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

GPM = REPO / "gpm"

# Files outside gpm/store/ that still write, each with why. Not a way out:
# a file listed here that no longer writes fails the test, so the list shrinks.
ALLOWED = {
    # The weekly summaries: the report's rollup is being reworked in another
    # branch of #14.1 (one rollup, written by one function in gpm/store/);
    # these writes go with it.
    "gpm/report/summaries.py",
}

_WRITE = re.compile(r"^\s*(?:INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)
# A write after a common table expression: WITH x AS (...) INSERT ...
_WRITE_AFTER_CTE = re.compile(r"^\s*WITH\b.*\)\s*(?:INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE | re.DOTALL)
_EXECUTE = {"execute", "executemany", "executescript"}


def _text(node: ast.AST) -> str | None:
    """The SQL a literal, f-string, concatenation or %-format spells (placeholders as ``?``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "?" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        left, right = _text(node.left), _text(node.right)
        if isinstance(node.op, ast.Mod):
            return left
        if left is not None or right is not None:
            return (left or "?") + (right or "?")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _text(node.func.value)
    return None


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return "." + node.attr
    return None


def sql_writes(source: str) -> list[tuple[int, str]]:
    """(line, statement) of each write statement handed to execute*() in ``source``."""
    tree = ast.parse(source)
    assigned: dict[str, list[str]] = {}  # name or .attr -> every string assigned to it
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
            targets = [node.target]
        text = _text(node.value) if targets else None
        for target in targets:
            if text is not None and _name(target) is not None:
                assigned.setdefault(_name(target), []).append(text)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _EXECUTE and node.args):
            continue
        arg = node.args[0]
        texts = [_text(arg)] if _text(arg) is not None else assigned.get(_name(arg) or "", [])
        for text in texts:
            statements = text.split(";") if node.func.attr == "executescript" else [text]
            if any(_WRITE.match(s) or _WRITE_AFTER_CTE.match(s) for s in statements):
                found.append((node.lineno, " ".join(text.split())[:60]))
    return sorted(found)


def writes_outside_store() -> dict[str, list[tuple[int, str]]]:
    out = {}
    for path in sorted(GPM.rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith("gpm/store/"):
            continue
        writes = sql_writes(path.read_text(encoding="utf-8"))
        if writes:
            out[relative] = writes
    return out


def test_the_detector_sees_each_way_a_write_reaches_execute():
    source = '''
_INSERT = "INSERT INTO t (a) VALUES (?)"
class Log:
    def __init__(self, conn):
        self._sql = (f"UPDATE {TABLE} SET a = ? "
                     "WHERE id = ?")
    def save(self, conn, rows):
        conn.execute(_INSERT, (1,))
        conn.execute(self._sql, (2, 3))
        conn.executemany("  insert or replace into t values (?)", rows)
        conn.executescript("PRAGMA foo; DROP TABLE t")
        sql = "SELECT a FROM t"
        sql += " WHERE a = ?"
        conn.execute(sql, (4,))
        conn.execute("WITH x AS (SELECT 1) DELETE FROM t WHERE a IN x")
        conn.execute("SELECT replace(name, ?, ?) FROM t", ("a", "b"))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
'''
    assert [line for line, _ in sql_writes(source)] == [8, 9, 10, 11, 15]


def test_no_sql_write_outside_gpm_store():
    found = writes_outside_store()
    outside = {path: writes for path, writes in found.items() if path not in ALLOWED}
    assert outside == {}, ("SQL writes belong in gpm/store/ (a save_* there, called by this module's "
                           f"caller): {outside}")
    stale = sorted(ALLOWED - set(found))
    assert stale == [], f"these files no longer write: remove them from ALLOWED: {stale}"


def test_llm_does_not_import_the_store():
    """gpu, classify, llm -> store: gpm.llm hands rows and polls to callables it is given."""
    imports = []
    for path in sorted((GPM / "llm").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            imports += [f"{path.name}: {n}" for n in names if n == "gpm.store" or n.startswith("gpm.store.")]
    assert imports == []
