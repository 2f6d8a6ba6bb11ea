"""The seed's single-convolution segmenter: 3 -> C classes, 3x3 kernel, ReLU; bare tensor out.

Module names follow seed 003 exactly (``conv_layer1`` = ``Sequential(Conv2d, ReLU)``), so a
checkpoint saved from the tutorial's own ``SingleConvolution`` (keys ``conv_layer1.0.weight``
and ``conv_layer1.0.bias``) loads unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from zoo.catalog.schema import ModelCard


class SingleConvolution(nn.Module):
    """``Conv2d(3, num_classes, 3, padding=1)`` then ``ReLU``: 644 parameters for 23 classes."""

    def __init__(self, num_classes: int = 23) -> None:
        super().__init__()
        self.conv_layer1 = nn.Sequential(
            nn.Conv2d(3, num_classes, kernel_size=3, padding=1), nn.ReLU()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_layer1(x)


def build(card: ModelCard, aux: bool = False) -> nn.Module:
    """Build for ``card`` (``aux`` is ignored: there is no auxiliary head)."""
    return SingleConvolution(card.num_classes)
