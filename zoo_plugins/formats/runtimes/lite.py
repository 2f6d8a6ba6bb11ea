"""Lite-interpreter runtime: ``_load_for_lite_interpreter``, as PyTorch Mobile loads a ``.ptl``."""

from __future__ import annotations

from typing import Any

REQUIRES = ("torch",)


def load(path: str, options: dict[str, Any]) -> Any:
    import torch
    from torch.jit.mobile import _load_for_lite_interpreter

    if options.get("engine"):
        torch.backends.quantized.engine = options["engine"]
    return _load_for_lite_interpreter(path)
