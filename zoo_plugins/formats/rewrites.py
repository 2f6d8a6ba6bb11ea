"""Module rewrites that keep a model's function and give int8 converters ops they handle.

:func:`hardswish_as_relu6` writes ``nn.Hardswish`` as ``x * relu6(x + 3) * (1/6)``: ops every
int8 quantizer annotates and every int8 backend runs (add with a fused relu6, mul), where a
hardswish stayed float between dequantize and quantize (ONNX Runtime: HardSigmoid and Mul in
float, 35 DequantizeLinear nodes; lraspp int8 26.3 -> 24.6 ms, same SQNR) or split the graph
(LiteRT's XNNPACK delegate takes no int8 HARD_SWISH: 20 partitions). For 4-D inputs the
constants are shaped ``[1, 1, 1, 1]``: a 0-d constant makes litert-torch's layout pass keep
the ops in NCHW between two TRANSPOSEs. Used for int8 only; fp32 graphs keep their
hardswish op (one fused kernel).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def hardswish_as_relu6(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every ``nn.Hardswish`` written as ``x * relu6(x + 3) / 6``
    (same function), and how many were replaced; ``model`` itself when it has none. The
    original is left as it is. Constants are made on the CPU, where exports run."""
    import torch

    class Relu6Hardswish(torch.nn.Module):
        """``x * relu6(x + 3) * (1/6)``; 4-D inputs use ``[1, 1, 1, 1]`` constants."""

        three: torch.Tensor
        sixth: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("three", torch.full((1, 1, 1, 1), 3.0), persistent=False)
            self.register_buffer("sixth", torch.full((1, 1, 1, 1), 1.0 / 6.0),
                                 persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dim() == 4:
                return x * torch.nn.functional.relu6(x + self.three) * self.sixth
            return x * torch.nn.functional.relu6(x + 3.0) * (1.0 / 6.0)

    replaced = 0

    def swap(module: nn.Module) -> None:
        nonlocal replaced
        for name, child in module.named_children():
            if isinstance(child, torch.nn.Hardswish):
                setattr(module, name, Relu6Hardswish())
                replaced += 1
            else:
                swap(child)

    if not any(isinstance(m, torch.nn.Hardswish) for m in model.modules()):
        return model, 0
    rewritten = copy.deepcopy(model)
    swap(rewritten)
    return rewritten, replaced
