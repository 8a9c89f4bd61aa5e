"""One data-access design (issue 20): SQL lives in :mod:`keel.meta`, as SQL text run through
:mod:`keel.meta.dbapi`; the layers above call meta methods.

So no module outside ``keel.meta`` (the services, the server, the sdk, the CLI, and the
layers below: core, objects, integrations...) imports SQLAlchemy, ``keel.meta.schema`` (the
Table definitions, for migrations and tests) or the stdlib ``sqlite3`` driver, nor holds a
SQL statement; and the meta modules that took the SQL the services held import no
SQLAlchemy when they are imported.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "keel"
FORBIDDEN = ("sqlalchemy", "keel.meta.schema", "sqlite3")
# A statement in a string: what SQL text looks like (keywords in capitals, as keel writes SQL).
SQL = re.compile(
    r"\bSELECT\b[\s\S]+\bFROM\b|\bINSERT\s+(OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\bCREATE\s+(TEMP\s+|TEMPORARY\s+)?(TABLE|INDEX)\b|\bPRAGMA\s+\w+|\bON\s+CONFLICT\b"
)
# The meta modules that took the SQL of the services (issue 20 part 1).
META_MODULES = (
    "keel.meta.data_state",
    "keel.meta.datasets",
    "keel.meta.imports",
    "keel.meta.logged_models",
    "keel.meta.mlflow",
    "keel.meta.mlflow_artifacts",
    "keel.meta.mlflow_datasets",
    "keel.meta.mlflow_prompts",
    "keel.meta.sqlite_files",
)


def _modules() -> list[Path]:
    """Every module of keel outside ``keel.meta``."""
    return sorted(path for path in SRC.rglob("*.py") if path.relative_to(SRC).parts[0] != "meta")


def test_the_check_reads_every_layer() -> None:
    read = {path.relative_to(SRC).parts[0] for path in _modules()}
    assert {"services", "server", "sdk", "cli", "core", "objects", "integrations"} <= read
    assert "meta" not in read


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``tree``, at any depth (inside functions too);
    ``from keel.meta import schema`` counts as ``keel.meta.schema``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _forbidden(node.module):
                found.append((node.lineno, node.module))
            else:
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def _sql_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, text)`` of string constants (docstrings aside) that read as SQL statements."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and SQL.search(node.value)
    ]


def test_no_module_outside_meta_imports_a_sql_library() -> None:
    found = []
    for path in _modules():
        for line, module in _imported(ast.parse(path.read_text(), str(path))):
            if _forbidden(module):
                found.append(f"{path.relative_to(SRC.parent)}:{line} imports {module}")
    assert not found, "SQL lives in keel.meta; call a meta method instead:\n" + "\n".join(found)


def test_no_module_outside_meta_holds_sql() -> None:
    found = []
    for path in _modules():
        for line, text in _sql_strings(ast.parse(path.read_text(), str(path))):
            found.append(f"{path.relative_to(SRC.parent)}:{line}: {' '.join(text.split())[:80]}")
    assert not found, "SQL lives in keel.meta; move these statements there:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("import sqlalchemy as sa", True),
        ("def f():\n    from sqlalchemy import select", True),
        ("from keel.meta.schema import runs", True),
        ("from keel.meta import schema", True),
        ("import sqlite3", True),
        ("from keel.meta import mlflow", False),
        ("import keel.meta.engine", False),
    ],
)
def test_the_import_check_sees_every_form(source: str, caught: bool) -> None:
    assert any(_forbidden(module) for _line, module in _imported(ast.parse(source))) is caught


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ('q = "SELECT id FROM runs WHERE run_id = ?"', True),
        ('q = f"SELECT id FROM runs WHERE x IN ({marks})"', True),
        ('q = ("SELECT r.run_id, l.entity_id "\n     "FROM lineage l")', True),
        ('q = "INSERT OR IGNORE INTO objects (oid) VALUES (?)"', True),
        ('q = "UPDATE runs SET name = ? WHERE id = ?"', True),
        ('q = "DELETE FROM tags WHERE run_pk = ?"', True),
        ('q = "PRAGMA journal_mode=WAL"', True),
        ('def f():\n    """Reads with one SELECT of a few rows FROM the counters."""', False),
        ('msg = "select a run from the list"', False),
        ('msg = "Update the prompt, then set its alias"', False),
    ],
)
def test_the_sql_check_sees_statements_not_words(source: str, caught: bool) -> None:
    assert bool(_sql_strings(ast.parse(source))) is caught


def test_the_meta_modules_that_took_the_services_sql_import_no_sqlalchemy() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {META_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "found = sorted(m for m in sys.modules if m == 'sqlalchemy' or m.startswith('sqlalchemy.'))\n"
        "assert not found, found[:5]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
