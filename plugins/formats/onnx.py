"""ONNX (``.onnx``) exporter: ``torch.onnx.export``, ``onnx.checker``, manifest in metadata.

The graph returns the prediction tensor named ``out`` (dict outputs are unwrapped), with
``input`` as its input name. The manifest JSON is stored in ``metadata_props`` under
``zoo_manifest``. Needs ``zoo[onnx]`` (onnx + onnxruntime).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import ExportError
from zoo.export.base import Exporter, ExportOptions, Prepared
from zoo.manifest import EMBEDDED_NAME

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.schema import ModelCard

METADATA_KEY = "zoo_manifest"
OPSET = 17


class OnnxExporter(Exporter):
    """ONNX graph for onnxruntime (server, Android/iOS ORT Mobile, browsers)."""

    name = "onnx"
    suffix = ".onnx"
    description = "ONNX graph for onnxruntime and other ONNX runtimes"
    keeps_dict_output = False
    requires = ("onnx", "onnx")

    def prepare(
        self, model: nn.Module, example: Tensor, card: ModelCard, options: ExportOptions
    ) -> Prepared:
        import onnx
        import torch

        from zoo.export.wrappers import TensorOutput

        wrapped = TensorOutput(model, card.output.key).eval()
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    wrapped, (example,), buffer, dynamo=False, opset_version=OPSET,
                    input_names=["input"], output_names=["out"],
                    dynamic_axes={"input": {2: "height", 3: "width"},
                                  "out": {2: "height", 3: "width"}},
                )
            graph = onnx.load_from_string(buffer.getvalue())
            onnx.checker.check_model(graph)
        except Exception as exc:
            raise ExportError(f"ONNX export failed: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}") from exc
        return Prepared(module=graph, method="trace",
                        optimizations={"onnx.checker": "passed", "opset": str(OPSET),
                                       "dynamic_axes": "height, width"},
                        static_shape=False)

    def save(self, prepared: Prepared, path: Path, extra_files: dict[str, str]) -> None:
        graph = prepared.module
        del graph.metadata_props[:]
        for name, text in sorted(extra_files.items()):
            entry = graph.metadata_props.add()
            entry.key = METADATA_KEY if name == EMBEDDED_NAME else name
            entry.value = text
        path.write_bytes(graph.SerializeToString(deterministic=True))

    def read_embedded(self, path: Path, name: str) -> str | None:
        import onnx

        key = METADATA_KEY if name == EMBEDDED_NAME else name
        try:
            graph = onnx.load(str(path), load_external_data=False)
        except Exception:
            return None
        return next((p.value for p in graph.metadata_props if p.key == key), None)
