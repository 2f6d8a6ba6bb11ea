"""Guard rails of the layout (ARCHITECTURE.md): the command line is the only place that sees
argparse, ``zoo/_core`` imports nothing else from zoo, and modules and classes stay small."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

ZOO = ROOT / "zoo"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(ZOO.rglob("*.py"))]


def _imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_only_the_command_line_sees_argparse() -> None:
    offenders = []
    for path, tree in _modules():
        rel = path.relative_to(ZOO).as_posix()
        if rel.startswith("cli/") or rel == "__main__.py":
            continue
        bad = {m for m in _imports(tree) if m == "argparse" or m == "zoo.cli"
               or m.startswith("zoo.cli.")}
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert offenders == []


def test_core_imports_nothing_else_from_zoo() -> None:
    offenders = []
    for path, tree in _modules():
        rel = path.relative_to(ZOO).as_posix()
        if not rel.startswith("_core/"):
            continue
        bad = {m for m in _imports(tree) if m.startswith("zoo.") and not
               m.startswith("zoo._core")}
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert offenders == []


def test_modules_and_classes_stay_small() -> None:
    big = []
    for path, tree in _modules():
        rel = path.relative_to(ZOO).as_posix()
        lines = path.read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            big.append(f"{rel}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    big.append(f"{rel}:{node.name}: {size} lines")
    assert big == []
