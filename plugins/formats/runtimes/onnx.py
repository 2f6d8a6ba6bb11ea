"""ONNX runtime: ``onnxruntime.InferenceSession`` on the CPU provider."""

from __future__ import annotations

from typing import Any

REQUIRES = ("onnxruntime", "torch")


def load(path: str, options: dict[str, Any]) -> Any:
    import onnxruntime
    import torch

    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = int(options.get("threads", 1) or 1)
    session = onnxruntime.InferenceSession(path, settings, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
