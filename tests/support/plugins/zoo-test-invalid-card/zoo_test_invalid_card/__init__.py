"""A plugin whose second card has 3 classes but only 2 palette colours.

zoo must disable that card only (its valid first card stays listed), name the bad model and
the rule in ``zoo plugins`` and ``zoo info``, and keep every other plugin working.
"""

from typing import Any

from zoo import hookimpl


def _card(name: str, palette: list[list[int]]) -> dict[str, Any]:
    return {
        "name": name,
        "family": "test",
        "description": "A card from the zoo-test-invalid-card plugin.",
        "architecture": "test_arch",
        "license": "MIT",
        "num_params": 12,
        "num_classes": 3,
        "preprocessing": {"mean": [0, 0, 0], "std": [1, 1, 1], "input_size": [8, 8]},
        "output": {"kind": "tensor", "channels": 3},
        "labels": ["background", "cat", "dog"],
        "palette": palette,
    }


@hookimpl
def zoo_builders() -> dict[str, str]:
    return {"test_arch": "zoo_test_invalid_card.model:build"}


@hookimpl
def zoo_models() -> list[dict[str, Any]]:
    return [
        _card("invalid_plugin_good_card", [[0, 0, 0], [255, 0, 0], [0, 255, 0]]),
        _card("invalid_plugin_bad_card", [[0, 0, 0], [255, 0, 0]]),
    ]
