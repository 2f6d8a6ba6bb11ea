"""int8 quantization: calibration data, FX (TorchScript/lite), PT2E (ExecuTorch, LiteRT), fidelity.

Calibration uses a folder of images (``--calibrate DIR``, preprocessed by the card) or, when
none is given, a documented synthetic set that the manifest flags: ``SYNTHETIC_COUNT`` smooth
random colour fields (uniform noise at 1/16 resolution, upsampled bilinearly, plus a little
fine noise), seeded, normalised with the card's mean/std. Real images calibrate better;
synthetic ones only make the export possible without data.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo._core.fs import sha256_file
from zoo.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.catalog.schema import ModelCard

SYNTHETIC_COUNT = 8
SYNTHETIC_SEED = 1234
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
ENGINES = ("qnnpack", "x86")
SQNR_IDENTICAL = 999.0  # reported when int8 and fp32 agree exactly (JSON has no infinity)


def synthetic_batches(card: ModelCard, size: tuple[int, int]) -> list[Tensor]:
    """Seeded smooth random images, normalised like real inputs."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(SYNTHETIC_SEED)
    h, w = size
    mean = torch.tensor(card.preprocessing.mean)[None, :, None, None]
    std = torch.tensor(card.preprocessing.std)[None, :, None, None]
    scale = card.preprocessing.scale_divisor / 255.0  # pixel units the card expects
    batches = []
    for _ in range(SYNTHETIC_COUNT):
        coarse = torch.rand(1, 3, max(2, h // 16), max(2, w // 16), generator=gen)
        img = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        img = (img + 0.05 * torch.rand(1, 3, h, w, generator=gen)).clamp(0, 1) / scale
        batches.append((img - mean) / std)
    return batches


def image_batches(card: ModelCard, folder: Path, size: tuple[int, int]) -> list[Tensor]:
    """Every image in ``folder``, preprocessed by the card and resized to ``size``."""
    import torch.nn.functional as F

    if not folder.is_dir():
        raise UsageError(f"--calibrate {folder}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"--calibrate {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    from zoo.inference.preprocessing import load_image, preprocess

    batches = []
    for file in files:
        try:
            x = preprocess(load_image(file), card)  # bounded before decoding
        except UsageError as exc:
            raise UsageError(f"--calibrate: {exc}") from None
        batches.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
    return batches


def folder_fingerprint(folder: Path) -> dict[str, str]:
    """Name and content hash of a calibration folder: it shapes the artifact's cache key."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        digest.update(file.name.encode() + b"\0" + sha256_file(file).encode() + b"\0")
    return {"folder": folder.name, "sha256": digest.hexdigest()}


def calibration(
    card: ModelCard, size: tuple[int, int], folder: Path | None
) -> tuple[list[Tensor], dict[str, Any]]:
    """Calibration batches and the facts the manifest records about them."""
    if folder is None:
        batches = synthetic_batches(card, size)
        return batches, {"source": "synthetic", "images": len(batches), "seed": SYNTHETIC_SEED,
                         "warning": "calibrated on synthetic images; pass --calibrate DIR "
                         "with real images for better int8 accuracy"}
    batches = image_batches(card, folder, size)
    return batches, {"source": "images", "images": len(batches), "folder": folder.name}


def _prediction(result: Any, key: str | None) -> Tensor:
    return result[key] if isinstance(result, dict) else result


def fidelity(reference: nn.Module, candidate: Any, batches: list[Tensor], key: str | None,
             candidate_key: str | None = None) -> dict[str, float]:
    """SQNR (dB) of the candidate's logits against the reference, and argmax agreement."""
    import torch

    signal = noise = 0.0
    agree = total = 0
    with torch.no_grad():
        for x in batches:
            ref = _prediction(reference(x), key).float()
            got = _prediction(candidate(x), candidate_key if candidate_key else key).float()
            signal += float((ref**2).sum())
            noise += float(((ref - got) ** 2).sum())
            agree += int((ref.argmax(1) == got.argmax(1)).sum())
            total += ref.argmax(1).numel()
    sqnr = SQNR_IDENTICAL if noise == 0 else 10 * math.log10(signal / noise)
    return {"sqnr_db": round(sqnr, 2), "argmax_agreement": round(agree / max(total, 1), 4)}


def quantize_fx(model: nn.Module, batches: list[Tensor], engine: str) -> nn.Module:
    """Post-training static int8 with FX graph mode for the given quantized engine."""
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if engine not in torch.backends.quantized.supported_engines:
        raise UsageError(f"quantized engine {engine!r} is not in this torch build "
                         f"({', '.join(torch.backends.quantized.supported_engines)})")
    torch.backends.quantized.engine = engine
    prepared = prepare_fx(model.eval(), get_default_qconfig_mapping(engine),
                          example_inputs=(batches[0],))
    with torch.no_grad():
        for x in batches:
            prepared(x)
    converted = convert_fx(prepared).eval()
    # FX copies forward()'s annotations into generated code; string annotations (modules with
    # `from __future__ import annotations`) come out as names TorchScript cannot resolve,
    # which would force a traced, shape-fixed export. Tensors need no annotation.
    for node in converted.graph.nodes:
        node.type = None
    converted.recompile()
    return converted


def quantize_pt2e(
    model: nn.Module, batches: list[Tensor], dynamic_shapes: dict[str, Any] | None = None, *,
    quantizer: Any = None, fold_quantize: bool = True,
) -> nn.Module:
    """PT2E static int8: capture with ``torch.export``, insert ``quantizer``'s observers,
    calibrate on ``batches``, convert. The default quantizer is ExecuTorch's XNNPACK one
    (symmetric, per-channel weights); LiteRT passes litert-torch's ``PT2EQuantizer`` and
    ``fold_quantize=False`` (its converter folds the weights itself)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if quantizer is None:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )

        config = get_symmetric_quantization_config(is_per_channel=True)
        quantizer = XNNPACKQuantizer().set_global(config)
    graph = torch.export.export(model, (batches[0],), dynamic_shapes=dynamic_shapes).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in batches:
            prepared(x)
    return convert_pt2e(prepared, fold_quantize=fold_quantize)
