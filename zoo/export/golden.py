"""Golden inputs and output summaries: the parity check's data, shared by export and verify.

This file must stay self-contained (standard library and torch only): ``zoo verify`` sends its
*source* to an isolated child process that imports neither zoo nor torchvision, the way a
device runtime sees the artifact.

Two golden inputs are recorded for every export (see docs/manifest.md for the recipes):

* ``noise``: uniform [0, 1) pixels from a seeded ``torch.Generator``, then the card's mean/std;
* ``scene``: a procedural outdoor scene with natural-image structure (sky and ground
  gradients, a horizon, a dozen flat-shaded objects with hard edges, low-frequency texture),
  rendered to 8-bit pixels, then the card's scale and mean/std. Cameras see edges and smooth
  regions, not noise; quantized or reordered programs can agree on noise and diverge on it.

A summary keeps what the check needs and stays small: shape, the largest magnitude, sampled
values, per-channel means, the argmax histogram and the argmax on a sub-grid of pixels, the
count of non-finite values, and a sha256 of the float32 output bytes.
"""

from __future__ import annotations

import base64
import hashlib
import math
import zlib
from typing import Any

SAMPLE_COUNT = 256
GRID_CELLS = 4096  # at most this many pixels in the argmax grid
SCENE_OBJECTS = 12


def noise_pixels(seed: int, shape: list[int]) -> Any:
    """Uniform [0, 1) float32 pixels, NCHW."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(shape, generator=gen, dtype=torch.float32)


def scene_pixels(seed: int, height: int, width: int) -> Any:
    """The procedural scene as a uint8 ``[3, H, W]`` tensor (deterministic on every CPU)."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(int(seed))

    def rand(*size: int) -> Any:
        return torch.rand(size, generator=gen, dtype=torch.float32)

    ys = torch.arange(height, dtype=torch.float32)[:, None] / max(1, height - 1)
    xs = torch.arange(width, dtype=torch.float32)[None, :] / max(1, width - 1)
    sky_top, sky_low = rand(3) * 0.4 + 0.5, rand(3) * 0.3 + 0.6
    ground_near, ground_far = rand(3) * 0.5, rand(3) * 0.4 + 0.2
    horizon = 0.35 + 0.2 * float(rand(1))
    t_sky = (ys / horizon).clamp(0, 1)
    t_ground = ((ys - horizon) / (1 - horizon)).clamp(0, 1)
    sky = sky_top[:, None, None] * (1 - t_sky) + sky_low[:, None, None] * t_sky
    ground = ground_far[:, None, None] * (1 - t_ground) + ground_near[:, None, None] * t_ground
    img = torch.where(ys < horizon, sky, ground).expand(3, height, width).clone()
    for i in range(SCENE_OBJECTS):
        cy, cx, ry, rx = (float(v) for v in rand(4))
        cy = horizon + (cy - 0.3) * 0.8
        ry, rx = 0.05 + ry * 0.25, 0.04 + rx * 0.2
        colour = rand(3)
        if i % 2:  # ellipse
            mask = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
        else:  # box
            mask = ((ys - cy).abs() <= ry) & ((xs - cx).abs() <= rx)
        shade = 0.75 + 0.25 * (1 - ((ys - cy) / ry).clamp(-1, 1)) / 2
        img = torch.where(mask, colour[:, None, None] * shade, img)
    coarse = rand(1, 3, max(2, height // 16), max(2, width // 16))
    texture = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    img = img + 0.12 * (texture - 0.5) + 0.03 * (rand(3, height, width) - 0.5)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def golden_input(spec: dict[str, Any]) -> Any:
    """The normalised float32 ``[1, 3, H, W]`` input a golden spec describes."""
    import torch

    mean = torch.tensor(spec["mean"], dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(spec["std"], dtype=torch.float32)[None, :, None, None]
    kind = spec.get("kind", "noise")
    if kind == "noise":
        x = noise_pixels(spec["seed"], spec["shape"])
    elif kind == "scene":
        _, _, h, w = spec["shape"]
        x = scene_pixels(spec["seed"], h, w)[None].to(torch.float32) / float(spec["scale"])
    else:
        raise ValueError(f"unknown golden input kind {kind!r}")
    return (x - mean) / std


def select_output(result: Any, key: str | None) -> Any:
    """The prediction tensor of a model's result: ``result[key]`` for dicts, else the tensor
    (the first item of a list or tuple). Numpy arrays, what ONNX Runtime and LiteRT return,
    become tensors; anything else is a TypeError naming what a runtime must return."""
    if isinstance(result, dict):
        if key is None or key not in result:
            raise KeyError(f"output has keys {sorted(result)}, expected {key!r}")
        pred = result[key]
    elif isinstance(result, list | tuple):
        pred = result[0] if result else None
    else:
        pred = result
    import torch

    if type(pred).__module__ == "numpy" and hasattr(pred, "shape"):
        import numpy

        return torch.from_numpy(numpy.ascontiguousarray(pred))
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"the runtime module's load() returned a callable whose prediction is "
                        f"a {type(pred).__name__}; it must be a torch.Tensor or a numpy array "
                        "(or a dict or list of them)")
    return pred


def sample_indices(shape: list[int], seed: int) -> list[list[int]]:
    """Deterministic output positions to record, as [n, c, h, w] lists."""
    import torch

    gen = torch.Generator().manual_seed(int(seed) + 1)
    numel = math.prod(shape)
    flat = torch.randint(0, max(1, numel), (SAMPLE_COUNT,), generator=gen).tolist()
    out = []
    for f in flat:
        idx = []
        for s in reversed(shape):
            idx.append(f % s)
            f //= s
        out.append(list(reversed(idx)))
    return out


def grid_stride(height: int, width: int) -> list[int]:
    """Row and column step of the argmax grid (at most GRID_CELLS pixels)."""
    step = 1
    while math.ceil(height / step) * math.ceil(width / step) > GRID_CELLS:
        step += 1
    return [step, step]


def encode_labels(labels: Any) -> str:
    """A 2-D label tensor as base64(zlib(uint16 little-endian bytes))."""
    import torch

    data = labels.to(torch.int32).flatten().tolist()
    raw = b"".join(int(v).to_bytes(2, "little") for v in data)
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def decode_labels(text: str, count: int) -> list[int]:
    """Inverse of :func:`encode_labels` (bounded: at most ``count`` labels)."""
    raw = zlib.decompressobj().decompress(base64.b64decode(text, validate=True), 2 * count)
    return [int.from_bytes(raw[i:i + 2], "little") for i in range(0, len(raw) - 1, 2)]


def summarize(output: Any, seed: int) -> dict[str, Any]:
    """The summary of one prediction tensor ``[1, C, H, W]`` (see the module docstring)."""
    import torch

    out = output.detach().to(torch.float32).contiguous()
    shape = list(out.shape)
    finite = torch.isfinite(out)
    non_finite = int(out.numel() - int(finite.sum()))
    safe = torch.where(finite, out, torch.zeros_like(out))
    samples = [{"index": i, "value": float(safe[tuple(i)])} for i in sample_indices(shape, seed)]
    summary: dict[str, Any] = {
        "shape": shape,
        "non_finite": non_finite,
        "abs_max": float(safe.abs().max()) if out.numel() else 0.0,
        "samples": samples,
        "sha256": hashlib.sha256(out.numpy().tobytes()).hexdigest(),
    }
    if out.dim() == 4 and out.numel():
        channels = shape[1]
        summary["channel_means"] = safe.transpose(0, 1).reshape(channels, -1).mean(1).tolist()
        labels = safe.argmax(dim=1)[0]
        summary["argmax_histogram"] = torch.bincount(labels.flatten(),
                                                     minlength=channels).tolist()
        stride = grid_stride(shape[2], shape[3])
        summary["argmax_grid"] = {"stride": stride,
                                  "labels": encode_labels(labels[::stride[0], ::stride[1]])}
    return summary


def sqnr_db(reference: list[float], actual: list[float]) -> float:
    """10 log10(signal / noise) over paired values (999 when identical)."""
    signal = sum(r * r for r in reference)
    noise = sum((r - a) ** 2 for r, a in zip(reference, actual, strict=True))
    if noise == 0:
        return 999.0
    if signal == 0:
        return -999.0
    return round(10 * math.log10(signal / noise), 2)


def compare(expected: dict[str, Any], actual: dict[str, Any], limits: dict[str, Any]) -> dict:
    """The verdict for one golden case. ``limits``: atol, rtol, min_argmax_agreement and
    optionally min_sqnr_db. Every problem is listed; ``ok`` only when there is none."""
    problems: list[str] = []
    result: dict[str, Any] = {"ok": False, "max_abs_diff": None, "argmax_agreement": None,
                              "sqnr_db": None, "bit_exact": False, "problems": problems}
    if actual.get("non_finite"):
        problems.append(f"{actual['non_finite']} non-finite values (NaN or Inf) in the output")
    if expected["shape"] != actual["shape"]:
        problems.append(f"output shape {actual['shape']} != expected {expected['shape']}")
        return result
    limit = limits["atol"] + limits["rtol"] * float(expected.get("abs_max", 0.0))
    pairs = [(e["value"], a["value"]) for e, a in
             zip(expected["samples"], actual["samples"], strict=True)]
    means = list(zip(expected.get("channel_means", []), actual.get("channel_means", []),
                     strict=True))
    worst = max((abs(r - g) for r, g in pairs + means), default=0.0)
    over = [(r, g) for r, g in pairs + means if not abs(r - g) <= limit]  # NaN counts as over
    for ref, got in over[:3]:
        problems.append(f"value {got:.6g} differs from {ref:.6g} by {abs(ref - got):.3g} "
                        f"(limit {limit:.3g})")
    if len(over) > 3:
        problems.append(f"... {len(over) - 3} more values out of tolerance")
    result.update(max_abs_diff=worst, limit=limit,
                  bit_exact=expected["sha256"] == actual["sha256"])
    if "argmax_grid" in expected and "argmax_grid" in actual:
        agreement = argmax_agreement(expected, actual)
        result["argmax_agreement"] = agreement
        if agreement < limits["min_argmax_agreement"]:
            problems.append(f"argmax agreement {agreement:.2%} < required "
                            f"{limits['min_argmax_agreement']:.2%}")
    sqnr = sqnr_db([r for r, _ in pairs], [g for _, g in pairs])
    result["sqnr_db"] = sqnr
    if limits.get("min_sqnr_db") is not None and sqnr < limits["min_sqnr_db"]:
        problems.append(f"SQNR {sqnr} dB < required {limits['min_sqnr_db']} dB")
    result["ok"] = not problems
    return result


def argmax_agreement(expected: dict[str, Any], actual: dict[str, Any]) -> float:
    """Share of grid pixels whose argmax matches."""
    grid = expected["argmax_grid"]
    if actual["argmax_grid"]["stride"] != grid["stride"]:
        return 0.0
    h, w = expected["shape"][2], expected["shape"][3]
    sy, sx = grid["stride"]
    count = math.ceil(h / sy) * math.ceil(w / sx)
    ref = decode_labels(grid["labels"], count)
    got = decode_labels(actual["argmax_grid"]["labels"], count)
    if len(ref) != count or len(got) != count:
        return 0.0
    return sum(a == b for a, b in zip(ref, got, strict=True)) / count
