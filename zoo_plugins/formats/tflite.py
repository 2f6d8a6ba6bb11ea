"""LiteRT (``.tflite``) exporter: ``litert-torch`` conversion, run by ``ai-edge-litert``.

* **Graph.** The model is wrapped to return the card's prediction tensor and converted by
  ``litert_torch.convert`` at the export size (``fixed_input_size``: LiteRT's converter
  specialises the resize ops to the input size). Input ``[1, 3, H, W]`` NCHW like the card,
  output ``[1, C, H, W]`` float32 logits.
* **int8.** PT2E static quantization with litert-torch's ``PT2EQuantizer`` (symmetric,
  per-channel weights, int8 activations) calibrated on the pipeline's calibration batches,
  then converted with its ``QuantConfig``; hardswish is rewritten and the adds its
  annotators miss are quantized so XNNPACK runs the whole graph (:mod:`.litert_int8`). The
  input is int8, and so is the output when the last op is quantized (lraspp's is): scale
  and zero point are in the tensors, the runtime module quantizes the float input and
  dequantizes the output, and an int8 output's arg-max is already the label map. Golden
  outputs are recorded from the artifact (``golden_from_artifact``) and fidelity to fp32 is
  recorded apart.
* **Manifest.** Stored as an *associated file*: a ZIP archive (entries stored, not
  compressed, fixed timestamps) appended to the flatbuffer, the way TFLite Support packs
  associated files. LiteRT ignores the bytes after the flatbuffer; any ZIP reader (Python's
  ``zipfile``, Android's ``MetadataExtractor``/``ZipFile``) reads ``manifest.json`` back
  without running the model. The flatbuffer itself is left byte-for-byte as converted
  (rewriting it with the Python flatbuffers API would lose the 16-byte weight alignment).
Needs ``zoo[litert]``.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ExportError
from zoo.export.base import Exporter, ExportOptions, Finding, Prepared
from zoo.export.containers import (
    ContainerError,
    ZipEntry,
    ZipLimits,
    check_zip,
    read_zip_entry,
)
from zoo.export.manifest import EMBEDDED_NAME

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.catalog.schema import ModelCard
    from zoo.export.manifest import Manifest

TFLITE_IDENTIFIER = b"TFL3"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
MAX_EMBEDDED_BYTES = 16 * 1024 * 1024
#: The appended ZIP holds a few small text files (the manifest and its companions).
EMBEDDED_LIMITS = ZipLimits(max_entries=64, max_entry_size=MAX_EMBEDDED_BYTES,
                            max_total_size=4 * MAX_EMBEDDED_BYTES)
#: TFLite TensorType values (schema.fbs) for the types this exporter writes.
TENSOR_TYPES = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 9: "INT8"}


class TFLiteExporter(Exporter):
    """LiteRT flatbuffer for Android/iOS/embedded LiteRT (formerly TensorFlow Lite)."""

    name = "tflite"
    suffix = ".tflite"
    description = "LiteRT (TensorFlow Lite) flatbuffer for Android, iOS and microcontrollers"
    precisions = ("fp32", "int8")
    keeps_dict_output = False
    fixed_input_size = True
    requires = (("litert_torch", "litert"), ("ai_edge_litert", "litert"))
    runtime = "zoo_plugins.formats.runtimes.tflite"

    def prepare(
        self, model: nn.Module, example: Tensor, card: ModelCard, options: ExportOptions,
        calibration: list[Tensor] | None = None,
    ) -> Prepared:
        import torch

        from zoo.export.wrappers import TensorOutput
        from zoo_plugins.formats._quiet import quiet_output

        wrapped = TensorOutput(model, card.output.key)
        optimizations = {"litert_torch.convert": "applied",
                         "input_size": f"fixed {example.shape[2]}x{example.shape[3]}"}
        try:
            with quiet_output(), warnings.catch_warnings(), _no_progress():
                warnings.simplefilter("ignore")
                if options.precision == "int8":
                    if not calibration:
                        raise ExportError("LiteRT int8 needs calibration batches (none given)")
                    edge, notes = _convert_int8(wrapped, calibration)
                    optimizations.update(notes)
                else:
                    with torch.no_grad():
                        edge = _litert().convert(wrapped.eval(), (example,))
                flatbuffer = bytes(edge.model_content())
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"LiteRT conversion failed: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}") from exc
        if flatbuffer[4:8] != TFLITE_IDENTIFIER:
            raise ExportError("litert-torch produced no TFLite flatbuffer")
        if options.precision == "int8":
            inputs, outputs = _signature(flatbuffer)
            kinds = [(found[0][0], role) for role, found in
                     (("input", inputs), ("output", outputs)) if found]
            optimizations["quantization"] += "; " + ", ".join(f"{t} {r}" for t, r in kinds)
            if any(t != "FLOAT32" for t, _ in kinds):
                optimizations["quantization"] += " (scale and zero point in the tensors)"
        return Prepared(module=flatbuffer, method="export", optimizations=optimizations,
                        static_shape=True)

    def save(self, prepared: Prepared, path: Path, embedded: dict[str, str]) -> None:
        path.write_bytes(with_associated_files(prepared.module, embedded))

    def read_embedded(self, path: Path) -> str | None:
        """``manifest.json`` from the appended ZIP, which must pass the strict checks
        (:meth:`check_container`); None otherwise."""
        try:
            return read_associated_file(path, EMBEDDED_NAME)
        except ContainerError:
            return None

    def check_container(self, path: Path) -> str | None:
        """Why the appended ZIP of associated files is refused (duplicate or unsafe names,
        oversized or inconsistent entries), or None when it is sound or absent."""
        try:
            associated_files(path)
        except ContainerError as exc:
            return str(exc)
        return None

    def inspect(self, path: Path, manifest: Manifest) -> list[Finding]:
        """The appended ZIP (strictly), flatbuffer identifier, subgraph 0's input and output
        shapes and types and the manifest's channels, parsed without running."""
        problem = self.check_container(path)
        if problem is not None:
            return [Finding("container", False, problem)]
        try:
            data = path.read_bytes()
        except OSError as exc:
            return [Finding("flatbuffer", False, f"cannot read: {exc.strerror or exc}")]
        if data[4:8] != TFLITE_IDENTIFIER:
            return [Finding("flatbuffer", False, f"not a TFLite model (identifier "
                            f"{data[4:8]!r})")]
        try:
            inputs, outputs = _signature(data)
        except Exception as exc:  # a damaged flatbuffer: any parse error
            return [Finding("flatbuffer", False, f"cannot parse the model: "
                            f"{type(exc).__name__}")]
        findings = [Finding("flatbuffer", True, "TFLite model (TFL3)")]
        _, _, h, w = manifest.export.input_shape
        channels = manifest.output.channels
        # int8 models may keep quantized input and output tensors (the scale and zero point
        # are in the tensor); the runtime module converts.
        types = {"FLOAT32", "INT8"} if manifest.export.precision == "int8" else {"FLOAT32"}
        for role, found, shape in (("input", inputs, [1, 3, h, w]),
                                   ("output", outputs, [1, channels, h, w])):
            ok = len(found) == 1 and found[0][0] in types and found[0][1] == shape
            detail = ", ".join(f"{t} {s}" for t, s in found) or "none"
            if not ok:
                detail += f"; the manifest says one {' or '.join(sorted(types))} {shape}"
                if role == "output":
                    detail += f" ({channels} channels)"
            findings.append(Finding(role, ok, detail))
        return findings


def _litert() -> Any:
    import litert_torch

    return litert_torch


@contextlib.contextmanager
def _no_progress() -> Iterator[None]:
    """Turn litert-torch's progress display off for the block (it reads an env var)."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    saved = os.environ.get(key)
    os.environ[key] = "n"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def _convert_int8(model: nn.Module, batches: list[Tensor]) -> tuple[Any, dict[str, str]]:
    """The int8 edge model and what was done to make it (see :mod:`.litert_int8`)."""
    import torch
    from litert_torch.quantize.quant_config import QuantConfig

    from zoo.export.quantize import quantize_pt2e
    from zoo_plugins.formats.litert_int8 import quantizer
    from zoo_plugins.formats.rewrites import hardswish_as_relu6

    model, hardswishes = hardswish_as_relu6(model)
    complete = quantizer()
    quantized = quantize_pt2e(model, batches, quantizer=complete, fold_quantize=False)
    with torch.no_grad():
        edge = _litert().convert(quantized, (batches[0],),
                                 quant_config=QuantConfig(pt2e_quantizer=complete))
    notes = {
        "quantization": (
            f"litert-torch PT2EQuantizer static int8: symmetric per-channel weights, int8 "
            f"activations, {len(batches)} calibration batches"),
        "int8_graph": (
            f"{hardswishes} hardswish as x*relu6(x+3)/6, {complete.annotated_extra} more "
            f"add/mul quantized than litert-torch's annotators found (XNNPACK takes int8 "
            f"ops whole; float ones split its partitions)"),
    }
    return edge, notes


def with_associated_files(flatbuffer: bytes, files: dict[str, str]) -> bytes:
    """``flatbuffer`` followed by a ZIP of ``files`` (stored, fixed dates, sorted names)."""
    buffer = io.BytesIO(flatbuffer)
    buffer.seek(0, io.SEEK_END)
    if not files:
        return flatbuffer
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, text in sorted(files.items()):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.create_system = 3
            archive.writestr(info, text.encode("utf-8"))
    return buffer.getvalue()


def associated_files(path: Path) -> list[ZipEntry]:
    """The entries of the ZIP appended to a ``.tflite`` (empty when there is none), after the
    strict checks of :mod:`zoo.export.containers` (bare names, no duplicates, each entry at
    most ``MAX_EMBEDDED_BYTES``); raises :class:`ContainerError`."""
    if not _has_zip(path):
        return []
    return check_zip(path, f"the associated files of {path.name}", EMBEDDED_LIMITS)


def read_associated_file(path: Path, name: str) -> str | None:
    """The text of associated file ``name`` in a ``.tflite``, or None when absent; raises
    :class:`ContainerError` when the appended ZIP is refused."""
    if not _has_zip(path):
        return None
    data = read_zip_entry(path, name, f"the associated files of {path.name}",
                          MAX_EMBEDDED_BYTES, EMBEDDED_LIMITS)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ContainerError(f"the associated files of {path.name}: {name} is not UTF-8 "
                             "text") from None


def _has_zip(path: Path) -> bool:
    """Whether the file ends with a ZIP end-of-central-directory record (any archive)."""
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _signature(data: bytes) -> tuple[list[tuple[str, list[int]]], list[tuple[str, list[int]]]]:
    """(inputs, outputs) of subgraph 0 as (type name, shape) pairs, parsed from the
    flatbuffer with the generated schema (no interpreter)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise ValueError("no subgraph")
    graph = model.Subgraphs(0)

    def describe(index: int) -> tuple[str, list[int]]:
        tensor = graph.Tensors(index)
        shape = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
        return TENSOR_TYPES.get(tensor.Type(), str(tensor.Type())), shape

    inputs = [describe(int(i)) for i in graph.InputsAsNumpy()]
    outputs = [describe(int(i)) for i in graph.OutputsAsNumpy()]
    return inputs, outputs
