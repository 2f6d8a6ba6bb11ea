"""Prints to stdout everywhere it runs: zoo's stdout must stay clean regardless."""

from __future__ import annotations

from typing import Any

from zoo import hookimpl
from zoo_test_unruly import card, conv

print("NOISY: imported")


@hookimpl
def zoo_models() -> list[dict[str, Any]]:
    print("NOISY: zoo_models")
    return [card("noisy_model", "noisy_arch")]


@hookimpl
def zoo_builders() -> dict[str, Any]:
    print("NOISY: zoo_builders")
    return {"noisy_arch": build}


@hookimpl
def zoo_exporters() -> dict[str, Any]:
    print("NOISY: zoo_exporters")
    return {}


def build(card: Any, aux: bool = False) -> Any:
    print("NOISY: building", card.name)
    return conv(card.num_classes)
