"""TinySegNet: a small encoder-decoder segmenter, scriptable and mobile-friendly.

Two conv-bn-relu blocks at full and half resolution, a 1x1 classifier, and a bilinear upsample
back to the input size. It returns a bare ``[N, C, H, W]`` tensor of logits for any input size
(odd sizes included), which is what its card's ``output: {kind: tensor}`` promises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from zoo.catalog.schema import ModelCard


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinySegNet(nn.Module):
    """``3 -> width`` at full size, ``width -> 2*width`` at half size, 1x1 to classes, upsample."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(3, width)
        self.down = _conv_bn_relu(width, 2 * width, stride=2)
        self.context = _conv_bn_relu(2 * width, 2 * width)
        self.classifier = nn.Conv2d(2 * width, num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        y = self.context(self.down(self.stem(x)))
        y = self.classifier(y)
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def build(card: ModelCard, aux: bool = False) -> nn.Module:
    """zoo's builder contract: a fresh model with ``card.num_classes`` outputs (no aux head)."""
    return TinySegNet(card.num_classes)
