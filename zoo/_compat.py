"""Old import paths, kept working after the move to packages by pipeline stage.

One table maps each old module path to its new home. ``import zoo.schema`` (or ``from
zoo.manifest import Manifest``) then returns the very module object that ``zoo.catalog.schema``
is, so attributes, ``isinstance`` checks and monkeypatching agree whichever path a plugin
uses. New code imports the new paths; ARCHITECTURE.md lists them.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from types import ModuleType

#: old module path -> where it lives now
MOVED = {
    "zoo.schema": "zoo.catalog.schema",
    "zoo.registry": "zoo.catalog.registry",
    "zoo.registry_cache": "zoo.catalog.compiled",
    "zoo.yamlio": "zoo.catalog.yamlio",
    "zoo.plugins": "zoo.catalog.plugins",
    "zoo.distributions": "zoo.catalog.distributions",
    "zoo.hookspecs": "zoo.catalog.hookspecs",
    "zoo.download": "zoo.weights.download",
    "zoo.watchdog": "zoo.weights.watchdog",
    "zoo.urls": "zoo.weights.urls",
    "zoo.cache": "zoo.weights.cache",
    "zoo.cache_housekeeping": "zoo.weights.housekeeping",
    "zoo.build": "zoo.export.build",
    "zoo.manifest": "zoo.export.manifest",
    "zoo.preprocessing": "zoo.inference.preprocessing",
    "zoo.postprocessing": "zoo.inference.postprocessing",
    "zoo.runner": "zoo.inference.predictor",
    "zoo.store.local": "zoo.store.export_folder",
    "zoo.artifact_cache": "zoo.export.cache",
    "zoo.fsutil": "zoo._core.fs",
    "zoo._names": "zoo._core.names",
}


class _AliasLoader:  # the loader protocol, without importlib.abc (10 ms of imports)
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the import system set the alias's spec; put it back


class _AliasFinder:  # a meta path finder (the protocol: find_spec)
    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))  # type: ignore[arg-type]


def install() -> None:
    """Let the old paths import (idempotent). An old path whose last name is also a public
    attribute of its package (``zoo.registry``, the function) is registered at once when its
    new module is already loaded: importing it then never rebinds that attribute to a
    module (the import system sets a package attribute only when it loads a module)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
    for old, new in MOVED.items():
        parent, _, child = old.rpartition(".")
        package = sys.modules.get(parent)
        if package is not None and new in sys.modules and \
                isinstance(getattr(package, child, None), type(install)):
            sys.modules.setdefault(old, sys.modules[new])
