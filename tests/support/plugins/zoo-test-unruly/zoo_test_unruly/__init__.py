"""Plugins that misbehave, one entry point each (see pyproject.toml).

- ``noisy``: prints to stdout at import, in every hook and in its builder;
- ``exits_on_import``: calls ``sys.exit(0)`` when imported;
- ``exits_in_hook``: calls ``sys.exit(0)`` in ``zoo_models``;
- ``builders``: builders that return ``None``, raise, call ``sys.exit()``, or whose module
  calls ``sys.exit()`` when imported.
"""

from __future__ import annotations

from typing import Any


def card(name: str, architecture: str) -> dict[str, Any]:
    """A small valid card: 3 classes, untrained, an 8x8 exact-size input."""
    return {
        "name": name,
        "family": "unruly",
        "description": "A card from the zoo-test-unruly plugin.",
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


def conv(num_classes: int) -> Any:
    """A 1x1 convolution with ``num_classes`` outputs (12 parameters for 3 classes)."""
    import torch

    return torch.nn.Conv2d(3, num_classes, 1)
