"""ExecuTorch (``.pte``) exporter: ``torch.export`` + XNNPACK partitioner.

ExecuTorch programs return tensors, not dicts, so the model is wrapped to return the card's
prediction tensor; the manifest states that contract. The manifest is embedded as a constant
method ``zoo_manifest`` returning the JSON as a uint8 tensor. int8 is PT2E static quantization
with ExecuTorch's XNNPACK quantizer, made on the eager model before capture. Needs
``zoo[executorch]``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ExportError
from zoo.export.base import Exporter, ExportOptions, Finding, Prepared
from zoo.export.manifest import EMBEDDED_NAME

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.catalog.schema import ModelCard
    from zoo.export.manifest import Manifest

MANIFEST_METHOD = "zoo_manifest"
#: The flatbuffer file identifier of an ExecuTorch program (bytes 4..8 of a ``.pte``).
PTE_IDENTIFIER = b"ET12"


def dynamic_shapes(options: ExportOptions) -> dict[str, Any] | None:
    """``torch.export`` dynamic shapes for ``--dynamic-size MIN:MAX`` (None: static)."""
    if not options.dynamic_size:
        return None
    import torch

    low, high = options.dynamic_size
    height = torch.export.Dim("height", min=low, max=high)
    width = torch.export.Dim("width", min=low, max=high)
    return {"x": {2: height, 3: width}}


def xnnpack_partitioner() -> Any:
    """The XNNPACK partitioner used for every program (see benchmarks/formats.py for the
    options tried against eager latency)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return XnnpackPartitioner()


class PteExporter(Exporter):
    """ExecuTorch program lowered to XNNPACK (iOS/Android/embedded ExecuTorch runtime)."""

    name = "pte"
    suffix = ".pte"
    description = "ExecuTorch program, XNNPACK-delegated (the lite interpreter's successor)"
    precisions = ("fp32", "int8")
    keeps_dict_output = False
    fixed_input_size = True
    dynamic_size = True
    requires = (("executorch", "executorch"),)
    runtime = "zoo_plugins.formats.runtimes.pte"
    quantizes_eager_model = True

    def quantize(
        self, model: nn.Module, batches: list[Tensor], card: ModelCard, options: ExportOptions
    ) -> tuple[Any, dict[str, Any]]:
        from zoo.export.quantize import quantize_pt2e
        from zoo.export.wrappers import TensorOutput

        quantized = quantize_pt2e(TensorOutput(model, card.output.key), batches,
                                  dynamic_shapes(options))
        return quantized, {"method": "pt2e", "quantizer": "XNNPACKQuantizer",
                           "granularity": "symmetric, per-channel weights"}

    def prepare(
        self, model: nn.Module, example: Tensor, card: ModelCard, options: ExportOptions,
        calibration: list[Tensor] | None = None,
    ) -> Prepared:
        import torch

        from zoo.export.wrappers import TensorOutput

        wrapped = TensorOutput(model, card.output.key)
        dynamic = options.dynamic_size
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.export(wrapped, (example,),
                                              dynamic_shapes=dynamic_shapes(options))
        except Exception as exc:
            hint = " (try another --dynamic-size range)" if dynamic else ""
            raise ExportError(f"torch.export failed{hint}: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}") from exc
        optimizations = {"torch.export": "applied", "xnnpack_partitioner": "applied"}
        optimizations["dynamic_size"] = f"{dynamic[0]}..{dynamic[1]}" if dynamic else "static"
        # The golden input uses the export size: always inside a --dynamic-size range.
        return Prepared(module=program, method="export", optimizations=optimizations,
                        static_shape=True)

    def save(self, prepared: Prepared, path: Path, embedded: dict[str, str]) -> None:
        import torch
        from executorch.exir import to_edge_transform_and_lower

        constants = {}
        if EMBEDDED_NAME in embedded:
            data = bytearray(embedded[EMBEDDED_NAME].encode("utf-8"))
            constants[MANIFEST_METHOD] = torch.frombuffer(data, dtype=torch.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = to_edge_transform_and_lower(
                prepared.module, partitioner=[xnnpack_partitioner()],
                constant_methods=constants,
            ).to_executorch()
        path.write_bytes(program.buffer)

    def read_embedded(self, path: Path) -> str | None:
        """Always None here: reading the ``zoo_manifest`` method means loading the program,
        and ExecuTorch aborts the whole process on a corrupt file. ``zoo verify`` reads it in
        its isolated child instead, through the runtime module's ``read_embedded``
        (:mod:`zoo_plugins.formats.runtimes.pte`)."""
        return None

    def inspect(self, path: Path, manifest: Manifest) -> list[Finding]:
        """The container's flatbuffer identifier (``ET12``), read without loading it."""
        try:
            with path.open("rb") as fh:
                head = fh.read(8)
        except OSError as exc:
            return [Finding("container", False, f"cannot read the program: {exc}")]
        ok = head[4:8] == PTE_IDENTIFIER
        return [Finding("container", ok, "ExecuTorch program (ET12)" if ok else
                        f"not an ExecuTorch program (identifier {head[4:8]!r})")]
