"""Cards whose builders break the builder contract in every way a plugin can."""

from __future__ import annotations

import sys
from typing import Any

from zoo import hookimpl
from zoo_test_unruly import card


@hookimpl
def zoo_models() -> list[dict[str, Any]]:
    return [
        card("builder_returns_none", "returns_none"),
        card("builder_raises", "raises"),
        card("builder_exits", "exits"),
        card("builder_module_exits", "module_exits"),
    ]


@hookimpl
def zoo_builders() -> dict[str, Any]:
    return {
        "returns_none": "zoo_test_unruly.builders:returns_none",
        "raises": "zoo_test_unruly.builders:raises",
        "exits": "zoo_test_unruly.builders:exits",
        "module_exits": "zoo_test_unruly.exits_on_import:build",
    }


def returns_none(card: Any, aux: bool = False) -> None:
    return None


def raises(card: Any, aux: bool = False) -> Any:
    raise ValueError("this builder needs a config file that is not there")


def exits(card: Any, aux: bool = False) -> Any:
    sys.exit(3)
