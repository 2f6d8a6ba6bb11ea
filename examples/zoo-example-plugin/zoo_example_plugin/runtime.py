"""How a device loads ``.traced.pt`` artifacts. zoo runs this file's source in an isolated
process that has neither zoo nor this plugin, so it imports only its runtime: torch."""

from __future__ import annotations

from typing import Any

REQUIRES = ("torch",)


def load(path: str, options: dict[str, Any]) -> Any:
    import torch

    return torch.jit.load(path, map_location="cpu")
