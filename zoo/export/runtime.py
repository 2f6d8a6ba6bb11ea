"""Runtime modules: the self-contained loaders formats declare (``Exporter.runtime``).

The same module serves ``zoo run --artifact`` (imported here, in-process) and ``zoo verify``
(its source text is sent to an isolated child process; see :mod:`zoo.export.isolated`).
Reading its ``REQUIRES`` never imports it: the source is parsed.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.errors import PluginError


@functools.cache
def runtime_source(module: str) -> str:
    """The source text of runtime module ``module`` (dotted name), without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise PluginError(f"runtime module {module!r} cannot be found: {exc}") from exc
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise PluginError(f"runtime module {module!r} is not a Python source file")
    return Path(spec.origin).read_text(encoding="utf-8")


@functools.cache
def runtime_requires(module: str) -> tuple[str, ...]:
    """The module's ``REQUIRES`` tuple of import names, read from its source."""
    tree = ast.parse(runtime_source(module))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "REQUIRES" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            return tuple(str(v) for v in value)
    return ()


def load_in_process(module: str, path: Path, options: dict[str, Any]) -> Callable[..., Any]:
    """``module.load(path, options)`` in this process (``zoo run --artifact``)."""
    mod = importlib.import_module(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        return mod.load(str(path), options)
