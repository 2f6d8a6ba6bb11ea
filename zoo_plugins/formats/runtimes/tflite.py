"""LiteRT runtime: ``ai_edge_litert``'s ``Interpreter`` (XNNPACK on the CPU), as an Android or
iOS app's LiteRT interpreter runs a ``.tflite`` model.

A quantized input (int8 models) is fed as ``round(x / scale) + zero_point`` with the scale and
zero point stored in the model's input tensor; a quantized output is dequantized the same way.

The output is read once from the interpreter's own buffer into a fresh float32 array the
caller owns, with numpy on the calling thread: ``get_tensor`` plus a copy made two fresh
22.7 MB arrays per call for lraspp at 520x520, and torch's two-thread ops straight after
``invoke`` compete with XNNPACK's still-spinning workers (lraspp int8: 27 ms per call before,
18 ms after; ``invoke`` alone 14 ms).
"""

from __future__ import annotations

from typing import Any

REQUIRES = ("ai_edge_litert", "numpy", "torch")


def _quantize(array: Any, detail: dict[str, Any]) -> Any:
    import numpy as np

    dtype = detail["dtype"]
    if dtype == np.float32:
        return array.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(array / scale) + zero_point, info.min, info.max).astype(dtype)


def _owned_float32(view: Any, detail: dict[str, Any]) -> Any:
    """A new float32 array from the interpreter's output ``view``: copied, or dequantized as
    ``(q - zero_point) * scale``, in one pass plus one in-place multiply."""
    import numpy as np

    out = np.empty(view.shape, np.float32)
    if detail["dtype"] == np.float32:
        np.copyto(out, view)
        return out
    scale, zero_point = detail["quantization"]
    if not scale:
        raise ValueError(f"the model's output is {np.dtype(detail['dtype']).name} without a "
                         "scale: it cannot be turned into logits")
    np.subtract(view, np.float32(zero_point), out=out, dtype=np.float32)
    out *= np.float32(scale)
    return out


def load(path: str, options: dict[str, Any]) -> Any:
    import torch
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=int(options.get("threads", 1) or 1))
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    target = interpreter.get_output_details()[0]

    def run(x: Any) -> Any:
        interpreter.set_tensor(source["index"], _quantize(x.detach().numpy(), source))
        interpreter.invoke()
        return torch.from_numpy(_owned_float32(interpreter.tensor(target["index"])(), target))

    return run


def read_embedded(path: str) -> str | None:
    """The ``manifest.json`` associated file (a ZIP appended to the flatbuffer)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read("manifest.json").decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError):
        return None
