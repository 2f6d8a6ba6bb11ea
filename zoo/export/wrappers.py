"""Small modules that adapt a model's output for formats that only return tensors."""

from __future__ import annotations

from torch import Tensor, nn


class TensorOutput(nn.Module):
    """Return ``model(x)[key]`` for dict outputs, the tensor itself otherwise."""

    def __init__(self, model: nn.Module, key: str | None) -> None:
        super().__init__()
        self.model = model
        self.key = key
        # Set the flag only: .eval() recurses, and PT2E-converted graphs refuse .eval().
        self.training = False

    def forward(self, x: Tensor) -> Tensor:
        result = self.model(x)
        if isinstance(result, dict):
            return result[self.key]
        return result
