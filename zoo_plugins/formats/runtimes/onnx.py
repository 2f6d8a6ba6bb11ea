"""ONNX runtime: ``onnxruntime.InferenceSession`` on the CPU provider.

``options["threads"]`` sets the intra-op thread count. Worker threads do not spin between
runs (``session.intra_op.allow_spinning`` 0): spinning threads would steal the CPU from
whatever runs next in the same process (``zoo run``'s other work, a benchmark's eager pass).
"""

from __future__ import annotations

from typing import Any

REQUIRES = ("onnxruntime", "torch")


def load(path: str, options: dict[str, Any]) -> Any:
    import onnxruntime
    import torch

    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = int(options.get("threads", 1) or 1)
    settings.inter_op_num_threads = 1
    settings.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(path, settings, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
