"""``twice_model`` in ``twice.yaml`` and again as a card dict: one plugin, one name, twice."""

from __future__ import annotations

from typing import Any

from zoo import hookimpl
from zoo_test_card_problems import BUILD, HERE, card


@hookimpl
def zoo_models() -> list[Any]:
    return [HERE / "twice.yaml", card("twice_model", "twice_arch")]


@hookimpl
def zoo_builders() -> dict[str, Any]:
    return {"twice_arch": BUILD}
