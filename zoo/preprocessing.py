"""Image in, model input out: the card's preprocessing, applied the same way for every caller.

``zoo run``, ``zoo.preprocess`` and an app's own Python code share this one implementation, so
the facts (colour order, scale, mean/std, resize policy, [height, width]) come from the card or
the manifest and never from constants copied into an app. Sizes are always ``(height, width)``;
Pillow's ``image.size`` is ``(width, height)``, and that difference is handled here, once.

This module imports numpy, torch and Pillow; ``import zoo`` loads it only when
``zoo.preprocess`` is first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from zoo.errors import UsageError
from zoo.schema import Preprocessing

if TYPE_CHECKING:
    from typing import TypeAlias

    from zoo.manifest import Manifest, ModelFacts
    from zoo.schema import ModelCard

    #: What :func:`preprocess` accepts: an image file, a Pillow image, or an HWC RGB array.
    ImageLike: TypeAlias = str | Path | Image.Image | np.ndarray
    #: Where the preprocessing facts come from.
    PreprocessingSource: TypeAlias = ModelCard | Manifest | ModelFacts | Preprocessing

_TORCH_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}


def preprocessing_of(source: Any) -> Preprocessing:
    """The :class:`~zoo.Preprocessing` of a card, a manifest (``model.preprocessing``), the
    manifest's ``model`` facts, or a ``Preprocessing`` itself."""
    if isinstance(source, Preprocessing):
        return source
    model = getattr(source, "model", None)  # a Manifest keeps it under model.preprocessing
    for holder in (source, model):
        pre = getattr(holder, "preprocessing", None)
        if isinstance(pre, Preprocessing):
            return pre
    raise TypeError(
        f"expected a ModelCard, Manifest or Preprocessing, got {type(source).__name__}"
    )


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB, upright (EXIF orientation applied, as a phone shows it).

    An unreadable or non-image file is a :class:`~zoo.UsageError` naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise UsageError(f"{path}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise UsageError(f"{path}: cannot read the image: {exc}") from None
    return image if image.mode == "RGB" else image.convert("RGB")


def rgb_array(image: ImageLike) -> np.ndarray:
    """``image`` as an ``(height, width, 3)`` RGB array (uint8, or float in 0..255).

    An ndarray is taken as HWC in RGB order; a 2-D array is grey, a 4th channel is dropped.
    """
    if isinstance(image, str | Path):
        image = load_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a path, PIL image or ndarray, got {type(image).__name__}")
    array = image
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(
            f"an image array must be (height, width, 3) RGB, got shape {tuple(image.shape)}"
        )
    return array[:, :, :3]


def input_size_for(height: int, width: int, source: Any) -> tuple[int, int]:
    """The ``(height, width)`` the model gets for an image of ``height`` x ``width``.

    ``none`` keeps it; ``exact`` is the card's ``input_size``; ``shorter_side`` scales the
    shorter edge to ``resize_size`` and keeps the aspect ratio (torchvision's rule: the longer
    edge is truncated, ``int(size * long / short)``).
    """
    pre = preprocessing_of(source)
    if pre.resize == "exact":
        return int(pre.input_size[0]), int(pre.input_size[1])
    if pre.resize == "shorter_side":
        assert pre.resize_size is not None  # the schema requires it
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = pre.resize_size, int(pre.resize_size * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    return height, width


def _resize(
    x: torch.Tensor, size: tuple[int, int], pre: Preprocessing, eight_bit: bool
) -> torch.Tensor:
    mode = _TORCH_MODES[pre.interpolation]
    smooth = mode != "nearest"
    y = F.interpolate(
        x[None], size=size, mode=mode,
        align_corners=False if smooth else None,
        antialias=pre.antialias and smooth,
    )[0]
    if eight_bit:  # as torchvision does for uint8 images, and a device does for 8-bit bitmaps
        y = y.round_().clamp_(0, 255)
    return y


def preprocess(image: ImageLike, card: PreprocessingSource) -> torch.Tensor:
    """The model input for ``image``: a contiguous float32 ``[1, 3, H, W]`` tensor.

    Steps, all from ``card.preprocessing`` (or a manifest's ``model.preprocessing``): read the
    pixels as RGB; reorder to BGR if ``color_order`` says so; resize per ``resize`` (8-bit
    values are rounded back to 8 bits, like a resized bitmap); divide by ``scale_divisor``;
    subtract ``mean`` and divide by ``std`` per channel. ``H, W`` come from
    :func:`input_size_for`; map the prediction back with ``postprocess(..., size=image)``.
    """
    pre = preprocessing_of(card)
    pixels = rgb_array(image)
    height, width = pixels.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"the image is empty ({height}x{width})")
    eight_bit = pixels.dtype == np.uint8
    x = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)  # a writable copy
    if pre.color_order == "BGR":
        x = x.flip(0)
    size = input_size_for(height, width, pre)
    if size != (height, width):
        x = _resize(x, size, pre, eight_bit)
    x = x / pre.scale_divisor
    mean = torch.tensor(pre.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(pre.std, dtype=torch.float32)[:, None, None]
    return ((x - mean) / std).unsqueeze(0).contiguous()
