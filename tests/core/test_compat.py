"""Old module paths after the move to packages by stage: each gives the very module object of
its new home, and the public ``zoo.registry()`` stays a function."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from zoo._compat import MOVED


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_an_old_path_is_the_new_module(old: str, new: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(new)


def test_old_from_imports_and_the_registry_function() -> None:
    code = """
import json, zoo
import zoo.registry
from zoo.schema import ModelCard
from zoo.manifest import Manifest
from zoo.weights import UNTRAINED, resolve_weights
from zoo.runner import Predictor
import zoo.catalog.schema, zoo.export.manifest, zoo.weights.resolve
print(json.dumps([callable(zoo.registry), ModelCard is zoo.catalog.schema.ModelCard,
                  Manifest is zoo.export.manifest.Manifest,
                  resolve_weights is zoo.weights.resolve.resolve_weights,
                  UNTRAINED is zoo.weights.resolve.UNTRAINED,
                  zoo.catalog.schema.__spec__.name,
                  len(zoo.registry().names()) > 0]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert json.loads(out) == [True, True, True, True, True, "zoo.catalog.schema", True]


def test_an_unknown_old_path_is_still_an_import_error() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("zoo.no_such_module")


def test_the_compiled_registry_stamp_covers_the_name_rules(tmp_path: Path) -> None:
    """A change to zoo/_core/names.py (the regexes and limits cards are checked with) must
    recompile cached cards: the stamp hashed the old zoo/_names.py shim instead."""
    copy = tmp_path / "zoo"
    shutil.copytree(ROOT / "zoo", copy, ignore=shutil.ignore_patterns("__pycache__"))
    code = "import json; from zoo.catalog.compiled import stamp; print(stamp()['code'])"

    def stamp_of(root: Path) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, cwd=root, env={"PYTHONPATH": str(root),
                                                        "PATH": "/usr/bin:/bin"}).stdout
    before = stamp_of(tmp_path)
    with (copy / "_core" / "names.py").open("a") as f:
        f.write("\n# a change to the name rules\n")
    assert stamp_of(tmp_path) != before
