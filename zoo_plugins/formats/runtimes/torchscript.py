"""TorchScript runtime: ``torch.jit.load``, as LibTorch loads a ``.pt`` archive."""

from __future__ import annotations

from typing import Any

REQUIRES = ("torch",)


def load(path: str, options: dict[str, Any]) -> Any:
    import torch

    if options.get("engine"):  # int8: the quantized engine it was made for
        torch.backends.quantized.engine = options["engine"]
    return torch.jit.load(path, map_location="cpu")
