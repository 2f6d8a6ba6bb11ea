"""Strict YAML reading: syntax errors and duplicate keys name the file and the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from zoo.errors import CardError

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_Loader):  # type: ignore[misc, valid-type]
    """A safe loader that refuses duplicate mapping keys instead of keeping the last one."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_yaml(path: Path) -> Any:
    """Parse ``path``; raise :class:`CardError` as ``FILE:LINE:COL: problem`` on any error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CardError(f"cannot read registry file {path}: {exc.strerror or exc}") from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise CardError(f"{where}: YAML syntax error: {problem}") from exc
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: YAML error: {exc}") from exc
