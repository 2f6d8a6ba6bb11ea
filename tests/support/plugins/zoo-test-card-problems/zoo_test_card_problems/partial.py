"""Two good cards and one bad one (``mean`` of length 2) in one YAML file."""

from __future__ import annotations

from typing import Any

from zoo import hookimpl
from zoo_test_card_problems import BUILD, HERE


@hookimpl
def zoo_models() -> list[Any]:
    return [HERE / "partial.yaml"]


@hookimpl
def zoo_builders() -> dict[str, Any]:
    return {"partial_arch": BUILD}
