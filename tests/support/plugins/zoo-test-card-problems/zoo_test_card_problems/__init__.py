"""Plugins whose cards have problems, one entry point each (see pyproject.toml).

- ``partial``: ``partial.yaml`` holds two good cards and, between them, one whose ``mean`` has
  two values: only that card is unavailable;
- ``twice``: defines ``twice_model`` in ``twice.yaml`` and again as a card dict;
- ``unknown``: a valid card whose ``architecture`` no plugin registered.

The builders are registered as dotted strings: listing never imports :mod:`.model` (torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BUILD = "zoo_test_card_problems.model:build"


def card(name: str, architecture: str) -> dict[str, Any]:
    """A small valid card: 3 classes, untrained, an 8x8 exact-size input."""
    return {
        "name": name,
        "family": "problems",
        "description": "A card from the zoo-test-card-problems plugin.",
        "architecture": architecture,
        "license": "MIT",
        "num_params": 12,
        "num_classes": 3,
        "weights": [],
        "preprocessing": {"mean": [0, 0, 0], "std": [1, 1, 1], "input_size": [8, 8],
                          "resize": "exact"},
        "output": {"kind": "tensor", "channels": 3},
        "labels": ["background", "cat", "dog"],
        "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
    }
