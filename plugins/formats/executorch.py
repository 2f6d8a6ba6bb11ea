"""ExecuTorch (``.pte``) exporter: ``torch.export`` + XNNPACK partitioner.

ExecuTorch programs return tensors, not dicts, so the model is wrapped to return the card's
prediction tensor; the manifest states that contract. The manifest is embedded as a constant
method ``zoo_manifest`` returning the JSON as a uint8 tensor. Needs ``zoo[executorch]``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ExportError
from zoo.export.base import Exporter, ExportOptions, Prepared
from zoo.export.quantize import quantize_pt2e
from zoo.manifest import EMBEDDED_NAME

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.schema import ModelCard

MANIFEST_METHOD = "zoo_manifest"


def dynamic_shapes(options: ExportOptions) -> dict[str, Any] | None:
    """``torch.export`` dynamic shapes for ``--dynamic-size MIN:MAX`` (None: static)."""
    dynamic = options.extra.get("dynamic_size")
    if not dynamic:
        return None
    import torch

    low, high = dynamic
    height = torch.export.Dim("height", min=low, max=high)
    width = torch.export.Dim("width", min=low, max=high)
    return {"x": {2: height, 3: width}}


class PteExporter(Exporter):
    """ExecuTorch program lowered to XNNPACK (iOS/Android/embedded ExecuTorch runtime)."""

    name = "pte"
    suffix = ".pte"
    description = "ExecuTorch program, XNNPACK-delegated (the lite interpreter's successor)"
    keeps_dict_output = False
    quantize_schemes = ("int8",)
    requires = ("executorch", "executorch")

    golden_at_export_size = True

    def quantize(
        self, model: nn.Module, batches: list[Tensor], card: ModelCard, options: ExportOptions
    ) -> tuple[Any, dict[str, Any]]:
        from zoo.export.wrappers import TensorOutput

        quantized = quantize_pt2e(TensorOutput(model, card.output.key), batches,
                                  dynamic_shapes(options))
        return quantized, {"method": "pt2e", "quantizer": "XNNPACKQuantizer",
                           "granularity": "symmetric, per-channel weights"}

    def prepare(
        self, model: nn.Module, example: Tensor, card: ModelCard, options: ExportOptions
    ) -> Prepared:
        import torch

        from zoo.export.wrappers import TensorOutput

        wrapped = TensorOutput(model, card.output.key)
        dynamic = options.extra.get("dynamic_size")
        shapes = dynamic_shapes(options)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.export(wrapped, (example,), dynamic_shapes=shapes)
        except Exception as exc:
            hint = " (try another --dynamic-size range)" if dynamic else ""
            raise ExportError(f"torch.export failed{hint}: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}") from exc
        optimizations = {"torch.export": "applied", "xnnpack_partitioner": "applied"}
        optimizations["dynamic_size"] = f"{dynamic[0]}..{dynamic[1]}" if dynamic else "static"
        # The golden input uses the export size: always inside a --dynamic-size range.
        return Prepared(module=program, method="export", optimizations=optimizations,
                        static_shape=True)

    def save(self, prepared: Prepared, path: Path, extra_files: dict[str, str]) -> None:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        constants = {}
        if EMBEDDED_NAME in extra_files:
            data = bytearray(extra_files[EMBEDDED_NAME].encode("utf-8"))
            constants[MANIFEST_METHOD] = torch.frombuffer(data, dtype=torch.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = to_edge_transform_and_lower(
                prepared.module, partitioner=[XnnpackPartitioner()], constant_methods=constants
            ).to_executorch()
        path.write_bytes(program.buffer)

    def read_embedded(self, path: Path, name: str) -> str | None:
        if name != EMBEDDED_NAME:
            return None
        try:
            from executorch.runtime import Runtime

            program = Runtime.get().load_program(str(path))
            if MANIFEST_METHOD not in program.method_names:
                return None
            data = program.load_method(MANIFEST_METHOD).execute([])[0]
            return bytes(data.numpy().tobytes()).decode("utf-8")
        except Exception:  # a damaged program simply has no readable manifest
            return None


def manifest_from_program(path: Path) -> dict[str, Any] | None:
    """The manifest embedded in a ``.pte`` file, parsed (apps in Python can use this)."""
    text = PteExporter().read_embedded(path, EMBEDDED_NAME)
    return json.loads(text) if text else None
