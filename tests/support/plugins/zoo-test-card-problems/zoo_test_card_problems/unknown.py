"""A valid card whose architecture no plugin registers."""

from __future__ import annotations

from typing import Any

from zoo import hookimpl
from zoo_test_card_problems import card


@hookimpl
def zoo_models() -> list[Any]:
    return [card("unknown_arch_model", "no_such_builder")]
