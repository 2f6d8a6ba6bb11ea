"""LiteRT runtime: ``ai_edge_litert``'s ``Interpreter`` (XNNPACK on the CPU), as an Android or
iOS app's LiteRT interpreter runs a ``.tflite`` model.

A quantized input (int8 models) is fed as ``round(x / scale) + zero_point`` with the scale and
zero point stored in the model's input tensor; a quantized output is dequantized the same way.
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


def _dequantize(array: Any, detail: dict[str, Any]) -> Any:
    import numpy as np

    if detail["dtype"] == np.float32:
        return array
    scale, zero_point = detail["quantization"]
    return (array.astype(np.float32) - zero_point) * scale


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
        out = _dequantize(interpreter.get_tensor(target["index"]).copy(), target)
        return torch.from_numpy(out)

    return run


def read_embedded(path: str) -> str | None:
    """The ``manifest.json`` associated file (a ZIP appended to the flatbuffer)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read("manifest.json").decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError):
        return None
