"""Image in, model input out: the card's preprocessing, applied the same way for every caller.

``zoo run``, ``zoo.preprocess`` and an app's own Python code share this one implementation, so
the facts (colour order, scale, mean/std, resize policy, [height, width]) come from the card or
the manifest and never from constants copied into an app. Sizes are always ``(height, width)``;
Pillow's ``image.size`` is ``(width, height)``, and that difference is handled here, once.

Images are bytes from outside: sizes are bounded *before* anything is decoded (Pillow reads
only the header on open). An image may have at most ``ZOO_MAX_IMAGE_PIXELS`` pixels (default
89,478,485, Pillow's own limit) and a longer-to-shorter side ratio of at most
``ZOO_MAX_IMAGE_ASPECT`` (default 20); the keyword arguments ``max_pixels``/``max_aspect`` of
:func:`preprocess`, :func:`load_image` and :func:`rgb_array` override both. Files larger than
:attr:`ImageLimits.max_file_bytes` are refused unread, only common raster formats are opened
(:data:`IMAGE_FORMATS`), and Pillow's decompression-bomb warning and error never escape: a file
over a limit is an :class:`ImageLimitError` naming the limit and how to raise it.

This module imports numpy, torch and Pillow; ``import zoo`` loads it only when
``zoo.preprocess`` is first used.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from zoo.catalog.schema import Preprocessing
from zoo.errors import UsageError

if TYPE_CHECKING:
    from typing import TypeAlias

    from zoo.catalog.schema import ModelCard
    from zoo.export.manifest import Manifest, ModelFacts

    #: What :func:`preprocess` accepts: an image file, a Pillow image, or an HWC RGB array.
    ImageLike: TypeAlias = str | Path | Image.Image | np.ndarray
    #: Where the preprocessing facts come from.
    PreprocessingSource: TypeAlias = (ModelCard | Manifest | ModelFacts | Preprocessing
                                      | Mapping[str, Any])

_TORCH_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}

MAX_PIXELS_ENV = "ZOO_MAX_IMAGE_PIXELS"
MAX_ASPECT_ENV = "ZOO_MAX_IMAGE_ASPECT"
#: Pillow's own default ``Image.MAX_IMAGE_PIXELS`` (a 24-bit image of 256 MiB).
DEFAULT_MAX_PIXELS = 89_478_485
#: Longest side over shortest side; panoramas stay well inside it.
DEFAULT_MAX_ASPECT = 20.0
#: A file may hold this many bytes per allowed pixel (16-bit RGBA and float RGB fit).
FILE_BYTES_PER_PIXEL = 12
#: Pillow format ids zoo opens: the raster formats cameras, phones and datasets use. Vector
#: and document formats (EPS runs Ghostscript) and exotic ones are refused unread.
#: (AVIF and HEIF where a Pillow plugin provides them.)
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "TIFF", "WEBP", "PPM", "JPEG2000",
                 "AVIF", "HEIF", "TGA")


class ImageLimitError(UsageError):
    """An image over a size limit (pixels, aspect ratio, file size); nothing was decoded."""


@dataclass(frozen=True)
class ImageLimits:
    """The bounds every image must fit before it is decoded."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect: float = DEFAULT_MAX_ASPECT

    @property
    def max_file_bytes(self) -> int:
        """The largest image file read at all: :data:`FILE_BYTES_PER_PIXEL` per pixel."""
        return FILE_BYTES_PER_PIXEL * self.max_pixels


def _env_number(name: str, kind: type[int] | type[float], low: float) -> float | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = kind(text.replace("_", ""))
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < low:
        what = "a whole number of pixels" if kind is int else "a number"
        raise UsageError(f"{name}={text!r} is not {what} >= {low:g}; fix or unset it")
    return value


def image_limits(max_pixels: int | None = None, max_aspect: float | None = None) -> ImageLimits:
    """The limits in force: the arguments, else ``ZOO_MAX_IMAGE_PIXELS`` /
    ``ZOO_MAX_IMAGE_ASPECT``, else the defaults. A bad value is a :class:`~zoo.UsageError`."""
    if max_pixels is None:
        max_pixels = int(_env_number(MAX_PIXELS_ENV, int, 1) or DEFAULT_MAX_PIXELS)
    elif isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise UsageError(f"max_pixels must be a positive whole number, got {max_pixels!r}")
    if max_aspect is None:
        max_aspect = float(_env_number(MAX_ASPECT_ENV, float, 1) or DEFAULT_MAX_ASPECT)
    elif (isinstance(max_aspect, bool) or not isinstance(max_aspect, int | float)
          or not math.isfinite(max_aspect) or max_aspect < 1):
        raise UsageError(f"max_aspect must be a number >= 1, got {max_aspect!r}")
    return ImageLimits(max_pixels=max_pixels, max_aspect=float(max_aspect))


def check_image_size(height: int, width: int, what: str, limits: ImageLimits) -> None:
    """Raise :class:`ImageLimitError` when an image of ``height`` x ``width`` is over the
    pixel or aspect-ratio limit (``what`` names it in the message)."""
    if height <= 0 or width <= 0:
        raise UsageError(f"{what}: the image is empty ({height}x{width} pixels, HxW)")
    pixels = height * width
    if pixels > limits.max_pixels:
        raise ImageLimitError(
            f"{what}: {height}x{width} pixels (HxW) is {pixels:,} pixels, more than the limit "
            f"of {limits.max_pixels:,}; if you trust the image, raise it with "
            f"{MAX_PIXELS_ENV}=N (or max_pixels=N in Python)"
        )
    aspect = max(height, width) / min(height, width)
    if aspect > limits.max_aspect:
        raise ImageLimitError(
            f"{what}: {height}x{width} pixels (HxW) has an aspect ratio of "
            f"{f'{aspect:,.1f}'.removesuffix('.0')}:1, "
            f"more than the limit of {limits.max_aspect:g}:1; if you mean it, raise it with "
            f"{MAX_ASPECT_ENV}=N (or max_aspect=N in Python)"
        )


def _check_file(path: Path, limits: ImageLimits) -> None:
    """A regular file within the byte limit, or a :class:`~zoo.UsageError` naming it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the image: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{path}: is a folder, not an image")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{path}: is not a regular file (a pipe, socket or device); "
                         "save the image to a file")
    if info.st_size > limits.max_file_bytes:
        raise ImageLimitError(
            f"{path}: the file has {info.st_size:,} bytes, more than an image within the pixel "
            f"limit needs ({limits.max_file_bytes:,} for {limits.max_pixels:,} pixels); if you "
            f"trust it, raise {MAX_PIXELS_ENV} (or max_pixels= in Python)"
        )


_PILLOW_LIMIT = threading.Lock()


@contextlib.contextmanager
def _pillow_bounds(limits: ImageLimits) -> Iterator[None]:
    """Pillow's bomb warning silenced (zoo checks sizes itself); its hard limit (twice
    ``Image.MAX_IMAGE_PIXELS``) lifted to ``limits`` only when the caller raised them above it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        pillow = Image.MAX_IMAGE_PIXELS
        if pillow is None or limits.max_pixels <= 2 * pillow:
            yield
            return
        with _PILLOW_LIMIT:
            Image.MAX_IMAGE_PIXELS = limits.max_pixels
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = pillow


def _bomb_error(what: str, exc: Exception, limits: ImageLimits) -> ImageLimitError:
    """Pillow's DecompressionBombError (only for sizes over zoo's limit) as zoo's error."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow allows"
    return ImageLimitError(
        f"{what}: {size}, more than the limit of {limits.max_pixels:,}; if you trust the "
        f"image, raise it with {MAX_PIXELS_ENV}=N (or max_pixels=N in Python)"
    )


def _formats() -> list[str]:
    """The :data:`IMAGE_FORMATS` this Pillow can open (asking for others is a KeyError)."""
    Image.init()
    return [f for f in IMAGE_FORMATS if f in Image.OPEN]


@contextlib.contextmanager
def _open_checked(path: Path, limits: ImageLimits) -> Iterator[Image.Image]:
    """Open ``path`` lazily (header only) and check its size against ``limits``."""
    _check_file(path, limits)
    try:
        with _pillow_bounds(limits), Image.open(path, formats=_formats()) as opened:
            width, height = opened.size  # Pillow's order is (width, height)
            check_image_size(height, width, str(path), limits)
            yield opened
    except Image.DecompressionBombError as exc:
        raise _bomb_error(str(path), exc, limits) from None
    except UnidentifiedImageError:
        raise UsageError(f"{path}: not an image zoo reads ({', '.join(_formats())})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        raise UsageError(f"{path}: cannot read the image: {' '.join(str(exc).split())}") from None


def image_size(path: str | Path, *, max_pixels: int | None = None,
               max_aspect: float | None = None) -> tuple[int, int]:
    """The ``(height, width)`` of an image file, read from its header and checked against the
    limits without decoding any pixels (``zoo run`` checks every input with it first)."""
    with _open_checked(Path(path), image_limits(max_pixels, max_aspect)) as opened:
        width, height = opened.size
    return height, width


def preprocessing_of(source: Any) -> Preprocessing:
    """The :class:`~zoo.Preprocessing` of a card, a manifest (``model.preprocessing``), the
    manifest's ``model`` facts, a ``Preprocessing`` itself, or any of them as the JSON dict
    an app reads (a manifest file, a card from ``zoo info --json``)."""
    if isinstance(source, Preprocessing):
        return source
    if isinstance(source, Mapping):
        model = source.get("model")
        data = model.get("preprocessing") if isinstance(model, Mapping) else None
        data = data if data is not None else source.get("preprocessing")
        if data is None and {"mean", "std", "color_order"} <= set(source):
            data = source
        if isinstance(data, Mapping):
            export = source.get("export")
            shape = export.get("input_shape") if isinstance(export, Mapping) else None
            return _exported_size(Preprocessing.model_validate(dict(data)), shape)
        raise TypeError("the dict is not a zoo manifest, card or preprocessing: it has no "
                        "'model.preprocessing' or 'preprocessing'")
    export = getattr(source, "export", None)  # a typed Manifest
    pre = getattr(getattr(source, "model", None), "preprocessing", None)
    if export is not None and isinstance(pre, Preprocessing):
        return _exported_size(pre, getattr(export, "input_shape", None))
    model = getattr(source, "model", None)  # a Manifest keeps it under model.preprocessing
    for holder in (source, model):
        pre = getattr(holder, "preprocessing", None)
        if isinstance(pre, Preprocessing):
            return pre
    raise TypeError(
        f"expected a ModelCard, Manifest or Preprocessing, got {type(source).__name__}"
    )


def _exported_size(pre: Preprocessing, shape: Any) -> Preprocessing:
    """A manifest's preprocessing: with ``resize: exact``, the size the artifact was exported
    at (``export.input_shape``, e.g. ``--input-size 64x96``), not the card's default."""
    if pre.resize != "exact" or not isinstance(shape, list | tuple) or len(shape) != 4:
        return pre
    size = (int(shape[2]), int(shape[3]))
    return pre if size == tuple(pre.input_size) else pre.model_copy(update={"input_size": size})


def load_image(path: str | Path, *, max_pixels: int | None = None,
               max_aspect: float | None = None) -> Image.Image:
    """Open an image file as RGB, upright (EXIF orientation applied, as a phone shows it).

    The size is checked against the limits (see the module docs) before any pixel is decoded.
    An unreadable, non-image or over-limit file is a :class:`~zoo.UsageError` naming the file
    (:class:`ImageLimitError` for a limit, with the way to raise it).
    """
    path = Path(path)
    limits = image_limits(max_pixels, max_aspect)
    with _open_checked(path, limits) as opened:  # Pillow's bounds hold for the block too
        opened.load()
        image = ImageOps.exif_transpose(opened)
    return image if image.mode == "RGB" else image.convert("RGB")


def rgb_array(image: ImageLike, *, max_pixels: int | None = None,
              max_aspect: float | None = None) -> np.ndarray:
    """``image`` as an ``(height, width, 3)`` RGB array (uint8, or float in 0..255).

    An ndarray is taken as HWC in RGB order; a 2-D array is grey, a 4th channel is dropped.
    Every kind of input is checked against the size limits before it is converted.
    """
    limits = image_limits(max_pixels, max_aspect)
    if isinstance(image, str | Path):
        image = load_image(image, max_pixels=limits.max_pixels, max_aspect=limits.max_aspect)
    if isinstance(image, Image.Image):
        width, height = image.size
        check_image_size(height, width, "the image", limits)
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a path, PIL image or ndarray, got {type(image).__name__}")
    array = image
    if array.ndim in (2, 3) and 0 not in array.shape[:2]:
        check_image_size(int(array.shape[0]), int(array.shape[1]), "the image array", limits)
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


def preprocess(image: ImageLike, card: PreprocessingSource, *, max_pixels: int | None = None,
               max_aspect: float | None = None, as_numpy: bool = False) -> Any:
    """The model input for ``image``: a contiguous float32 ``[1, 3, H, W]`` tensor (a numpy
    array with ``as_numpy=True``, what ONNX Runtime and LiteRT take).

    ``card`` is a card, a manifest (typed, or the JSON dict read from a ``.manifest.json``) or
    a ``Preprocessing``.

    Steps, all from ``card.preprocessing`` (or a manifest's ``model.preprocessing``): read the
    pixels as RGB; reorder to BGR if ``color_order`` says so; resize per ``resize`` (8-bit
    values are rounded back to 8 bits, like a resized bitmap); divide by ``scale_divisor``;
    subtract ``mean`` and divide by ``std`` per channel. ``H, W`` come from
    :func:`input_size_for`; map the prediction back with ``postprocess(..., size=image)``.

    The image, and the model input it resizes to, must fit the size limits (``max_pixels``,
    ``max_aspect``, else ``ZOO_MAX_IMAGE_PIXELS`` / ``ZOO_MAX_IMAGE_ASPECT``); they are
    checked before any pixel is decoded or copied (:class:`ImageLimitError`).
    """
    pre = preprocessing_of(card)
    limits = image_limits(max_pixels, max_aspect)
    pixels = rgb_array(image, max_pixels=limits.max_pixels, max_aspect=limits.max_aspect)
    height, width = pixels.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"the image is empty ({height}x{width})")
    size = input_size_for(height, width, pre)
    if pre.resize == "shorter_side" and size[0] * size[1] > limits.max_pixels:  # the image
        # decides this size (an "exact" size is the card's, "none" the checked image's)
        raise ImageLimitError(
            f"the model input for a {height}x{width} image would be {size[0]}x{size[1]} "
            f"pixels (HxW), more than the limit of {limits.max_pixels:,}; raise it with "
            f"{MAX_PIXELS_ENV}=N (or max_pixels=N in Python)"
        )
    eight_bit = pixels.dtype == np.uint8
    x = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)  # a writable copy
    if pre.color_order == "BGR":
        x = x.flip(0)
    if size != (height, width):
        x = _resize(x, size, pre, eight_bit)
    x = x / pre.scale_divisor
    mean = torch.tensor(pre.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(pre.std, dtype=torch.float32)[:, None, None]
    x = ((x - mean) / std).unsqueeze(0).contiguous()
    return np.ascontiguousarray(x.numpy()) if as_numpy else x
