"""Build torchvision segmentation models from a card, without downloading anything."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from zoo.catalog.schema import ModelCard

_HAS_AUX = {"deeplabv3", "fcn"}


def build(card: ModelCard, aux: bool = False) -> nn.Module:
    """``torchvision.models.segmentation.<architecture>`` with random init and no downloads."""
    from torchvision.models import segmentation

    factory = getattr(segmentation, card.architecture)
    kwargs: dict[str, object] = {
        "weights": None,
        "weights_backbone": None,
        "num_classes": card.num_classes,
    }
    if card.family in _HAS_AUX:
        kwargs["aux_loss"] = aux
    return factory(**kwargs)
