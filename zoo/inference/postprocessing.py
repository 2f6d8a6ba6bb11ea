"""Model output in, pictures and numbers out: label maps, colours, overlays, class shares.

The output contract (a dict read at ``output.key``, or a bare tensor; ``channels``) comes from
the card or the artifact's manifest, the colours from its ``palette``/``palettes``. ``zoo run``
and apps share these functions. Sizes are ``(height, width)``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from zoo.catalog.schema import OutputContract
from zoo.errors import UsageError
from zoo.inference.preprocessing import check_image_size, image_limits, image_size, rgb_array

if TYPE_CHECKING:
    from zoo.inference.preprocessing import ImageLike


def output_of(source: Any) -> OutputContract:
    """The :class:`~zoo.OutputContract` of a card, a manifest, the contract itself, or any of
    them as a JSON dict (a manifest's ``output`` is the artifact's contract: a pte, onnx or
    tflite export of a dict-output model returns a bare tensor, and only the manifest says so)."""
    if isinstance(source, OutputContract):
        return source
    if isinstance(source, Mapping):
        data = source.get("output")
        data = data if data is not None else (source if "kind" in source else None)
        if isinstance(data, Mapping):
            return OutputContract.model_validate(dict(data))
        raise TypeError("the dict is not a zoo manifest, card or output contract: it has no "
                        "'output'")
    contract = getattr(source, "output", None)
    if isinstance(contract, OutputContract):
        return contract
    raise TypeError(
        f"expected a ModelCard, Manifest or OutputContract, got {type(source).__name__}"
    )


def _tensor(value: Any) -> Any:
    """numpy arrays (what ONNX Runtime and LiteRT return) as tensors; anything else as is."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return value


def select(output: Any, contract: OutputContract) -> torch.Tensor:
    """The prediction tensor in a model's raw ``output``, read the way the contract says.
    Tensors and numpy arrays are accepted, and for a bare-tensor contract a one-item list or
    tuple (what some runtimes return for one output)."""
    if contract.kind == "tensor" and isinstance(output, list | tuple) and len(output) == 1:
        output = output[0]
    if contract.kind == "dict":
        if not isinstance(output, Mapping):
            raise UsageError(
                f"the model returned a {type(output).__name__}, but its contract is a dict "
                f"read at {contract.key!r}"
            )
        if contract.key not in output:
            raise UsageError(
                f"the model's output has keys {sorted(output)}, not {contract.key!r} as its "
                "contract says"
            )
        tensor = output[contract.key]
    else:
        if isinstance(output, Mapping):
            raise UsageError(
                f"the model returned a dict with keys {sorted(output)}, but its contract is "
                "a bare tensor"
            )
        tensor = output
    tensor = _tensor(tensor)
    if not isinstance(tensor, torch.Tensor):
        raise UsageError(f"the model's prediction is a {type(tensor).__name__}, not a tensor "
                         "or numpy array")
    return tensor


def label_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned type that holds every class index (uint8 up to 256 classes)."""
    if num_classes <= 256:
        return np.dtype(np.uint8)
    if num_classes <= 65536:
        return np.dtype(np.uint16)
    raise UsageError(f"{num_classes} classes do not fit a 16-bit label map")


def _size_of(size: tuple[int, int] | ImageLike) -> tuple[int, int]:
    """``(height, width)`` of a size or an image, within the image limits (a label map that
    size is allocated next); a path's size comes from its header, nothing is decoded."""
    if isinstance(size, tuple | list) and len(size) == 2:
        if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size):
            raise UsageError(f"size must be (height, width) in whole pixels, got {size!r}")
        height, width = int(size[0]), int(size[1])
    elif isinstance(size, Image.Image):
        width, height = size.size  # Pillow's order is (width, height)
    elif isinstance(size, np.ndarray):
        height, width = int(size.shape[0]), int(size.shape[1])
    elif isinstance(size, str | Path):
        return image_size(size)
    else:
        raise TypeError(f"size must be (height, width) or an image, got {type(size).__name__}")
    check_image_size(height, width, "the requested size", image_limits())
    return height, width


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an ``[h, w]`` label map to ``size = (H, W)``.

    Each output pixel takes the label under its centre (half-pixel centres, like Pillow's
    NEAREST), so class indices are never blended into classes that were not predicted.
    """
    h, w = labels.shape
    height, width = size
    if (h, w) == (height, width):
        return labels
    return labels.index_select(0, _centres(h, height)).index_select(1, _centres(w, width))


def _centres(source: int, target: int) -> torch.Tensor:
    """For each of ``target`` pixels, the source pixel under its centre."""
    centre = (torch.arange(target, dtype=torch.float64) + 0.5) * (source / target)
    return centre.long().clamp_(max=source - 1)


def postprocess(
    output: Any, card: Any, size: tuple[int, int] | ImageLike | None = None
) -> np.ndarray:
    """The label map of a model's raw ``output``: an ``(H, W)`` array of class indices.

    ``output`` is what the model or runtime returned (a dict or a bare tensor or numpy array
    of ``[1, C, h, w]`` or ``[C, h, w]``); ``card`` (a card, a manifest, an OutputContract, or
    the JSON dict of a manifest) says where the
    prediction is and how many channels it has. The argmax over C is taken (the first index
    wins a tie) and, with ``size`` (``(height, width)`` or the original image itself), the map
    is resized back with nearest neighbour. The dtype is :func:`label_dtype`'s.
    """
    contract = output_of(card)
    tensor = select(output, contract).detach()
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise UsageError(
                f"postprocess takes one image at a time; the output has a batch of "
                f"{tensor.shape[0]} (index it: output[i:i+1])"
            )
        tensor = tensor[0]
    if tensor.dim() != 3:
        raise UsageError(f"expected a [1, C, H, W] or [C, H, W] output, got {list(tensor.shape)}")
    if tensor.shape[0] != contract.channels:
        raise UsageError(
            f"the output has {tensor.shape[0]} channels but the contract says {contract.channels}"
        )
    labels = tensor.argmax(dim=0)
    if size is not None:
        labels = resize_labels(labels, _size_of(size))
    return labels.numpy().astype(label_dtype(contract.channels))


def palette_of(source: Any) -> Sequence[Sequence[int]]:
    """The default palette of a card or manifest (typed or a JSON dict), or ``source`` itself
    when it already is a list of ``[r, g, b]``."""
    if isinstance(source, Mapping):
        model = source.get("model")
        found = model.get("palette") if isinstance(model, Mapping) else source.get("palette")
        if found is None:
            raise TypeError("the dict is not a zoo manifest or card: it has no palette")
        return list(found)
    model = getattr(source, "model", None)
    for holder in (source, model):
        found = getattr(holder, "palette", None)
        if found is not None and not callable(found):
            return list(found)
    return source


def colorize(labels: np.ndarray | torch.Tensor, palette: Any) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB picture: each pixel the palette colour of its class.

    ``palette`` is one ``[r, g, b]`` per class, e.g. ``card.palette`` or
    ``card.palette_named("seed_app")``, or a card or manifest (typed or its JSON dict), whose
    default palette is used.
    """
    table = np.asarray(palette_of(palette), dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 3 or not ((table >= 0) & (table <= 255)).all():
        raise UsageError("a palette is a list of [r, g, b] colours, each 0..255")
    index = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if index.size and int(index.max()) >= len(table):
        raise UsageError(
            f"label {int(index.max())} has no colour: the palette has {len(table)} colours"
        )
    return table.astype(np.uint8)[index]


def overlay(image: ImageLike, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` blended with a colour map: ``(1 - alpha) * image + alpha * colors``, uint8."""
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"overlay alpha must be within 0..1, got {alpha}")
    base = rgb_array(image).astype(np.float32)
    if base.shape != colors.shape:
        raise UsageError(
            f"the image is {base.shape[0]}x{base.shape[1]} (HxW) but the colour map is "
            f"{colors.shape[0]}x{colors.shape[1]}; postprocess with size=image"
        )
    blend = (1.0 - alpha) * base + alpha * colors.astype(np.float32)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ClassShare:
    """One class present in a label map."""

    index: int
    label: str
    pixels: int
    share: float

    def as_dict(self) -> dict[str, Any]:
        return {"class": self.index, "label": self.label, "pixels": self.pixels,
                "share": self.share}


def class_shares(labels: np.ndarray, names: Sequence[str]) -> list[ClassShare]:
    """The classes present in ``labels``, most pixels first (then by index)."""
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64), minlength=len(names))
    total = int(counts.sum()) or 1
    present = [i for i in range(len(counts)) if counts[i]]
    present.sort(key=lambda i: (-int(counts[i]), i))
    return [
        ClassShare(i, names[i] if i < len(names) else f"class_{i}", int(counts[i]),
                   int(counts[i]) / total)
        for i in present
    ]


def label_image(labels: np.ndarray) -> Image.Image:
    """The label map as a Pillow image holding the class index per pixel: mode ``L`` for
    uint8 maps, ``I;16`` for uint16 (more than 256 classes)."""
    array = np.ascontiguousarray(labels)
    if array.dtype not in (np.uint8, np.uint16):
        array = array.astype(label_dtype(int(array.max(initial=0)) + 1))
    return Image.fromarray(array)


def png_bytes(picture: Image.Image | np.ndarray) -> bytes:
    """PNG-encode a Pillow image or a uint8 ``(H, W)``/``(H, W, 3)`` array (deterministic)."""
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
