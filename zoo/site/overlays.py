"""Colour overlays for model pages: the procedural golden scene (and ``--images``) through the
eager model, with the card's preprocessing and palette.

Only weights already in this machine's weights cache are used (the site build never
downloads); a card without cached weights gets a one-line reason instead of pictures. torch is
imported only when some card has cached weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError

if TYPE_CHECKING:
    from zoo.catalog.registry import Registry
    from zoo.catalog.schema import ModelCard
    from zoo.weights.resolve import ResolvedWeights

ALPHA = 0.5
#: the scene seed of every export's golden 'scene' case (zoo.export.golden_runs.GOLDEN_SEEDS)
SCENE_SEED = 1


@dataclass
class Picture:
    """One overlaid image: what it is, its files (site-relative) and the classes present."""

    title: str
    image: str
    overlay: str
    classes: list[tuple[int, str, float]]  # (index, label, share), most pixels first


@dataclass
class Overlays:
    """The overlays of one model, or why there are none."""

    pictures: list[Picture] = field(default_factory=list)
    reason: str | None = None
    weights: str = ""


def cached_weights(card: ModelCard) -> tuple[ResolvedWeights | None, str | None]:
    """The card's default weights if this machine's weights cache holds them (never a
    download), else (None, why not)."""
    if card.default_weights is None:
        return None, "the card has no published weights"
    from zoo.weights.policy import DownloadPolicy
    from zoo.weights.resolve import resolve_weights

    try:
        return resolve_weights(card, None, DownloadPolicy(offline=True, progress="never")), None
    except ZooError:
        return None, (f"its weights are not in this machine's weights cache (`zoo fetch "
                      f"{card.name}` downloads them; then build the site again)")


def scene(height: int, width: int) -> Any:
    """The golden scene as an ``(H, W, 3)`` uint8 array (zoo.export.golden's recipe)."""
    from zoo.export.golden import scene_pixels

    return scene_pixels(SCENE_SEED, height, width).permute(1, 2, 0).contiguous().numpy()


def render(card: ModelCard, weights: ResolvedWeights, images: Sequence[tuple[str, Any]],
           out_dir: Path, prefix: str, registry: Registry | None = None) -> Overlays:
    """Run the eager model on the golden scene and on ``images`` ((title, HWC uint8) pairs);
    write ``out_dir/<prefix>.<n>.png`` and ``...overlay.png``; paths returned are relative to
    ``out_dir``'s parent (the site's top folder)."""
    import torch

    from zoo.inference.postprocessing import class_shares, colorize, overlay, png_bytes
    from zoo.inference.predictor import eager_predictor

    height, width = card.preprocessing.input_size
    inputs = [("golden scene", scene(height, width)), *images]
    result = Overlays(weights=weights.source)
    torch.manual_seed(0)
    with eager_predictor(card, weights, registry) as predictor:
        for n, (title, pixels) in enumerate(inputs):
            labels = predictor.predict(pixels)
            colours = colorize(labels, card.palette)
            base = f"{prefix}.{n}"
            (out_dir / f"{base}.png").write_bytes(png_bytes(pixels))
            (out_dir / f"{base}.overlay.png").write_bytes(
                png_bytes(overlay(pixels, colours, ALPHA)))
            shares = [(s.index, s.label, s.share) for s in class_shares(labels, card.labels)]
            result.pictures.append(Picture(title, f"{out_dir.name}/{base}.png",
                                           f"{out_dir.name}/{base}.overlay.png", shares))
    return result


def load_images(paths: Sequence[Path]) -> list[tuple[str, Any]]:
    """``--images`` as (file name, RGB array), checked against zoo's image limits (a bad
    file is a UsageError naming it)."""
    import numpy as np

    from zoo.inference.preprocessing import load_image

    return [(Path(p).name, np.asarray(load_image(p))) for p in paths]
