"""ONNX (``.onnx``) exporter: ``torch.onnx.export``, ``onnx.checker``, manifest in metadata.

The graph returns the prediction tensor named ``out`` (dict outputs are unwrapped), with
``input`` as its input name and dynamic height and width. The manifest JSON is stored in
``metadata_props`` under ``zoo_manifest``.

int8 is static QDQ quantization with onnxruntime's quantizer, made during ``prepare``: the
fp32 graph is pre-processed (``quant_pre_process``: shape inference and graph optimisation),
then ``quantize_static`` inserts QuantizeLinear/DequantizeLinear pairs with per-channel
symmetric int8 weights and uint8 activations whose ranges come from MinMax calibration over
the pipeline's calibration batches; a final ``Resize`` that writes the output stays float
(:func:`float_output_resize`), and multiplications by a positive constant are folded into
the scales after them (:mod:`zoo_plugins.formats.qdq_folding`). The golden outputs are then
recorded from the artifact (``golden_from_artifact``); fidelity to fp32 is recorded apart.
Needs ``zoo[onnx]``.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ExportError
from zoo.export.base import Exporter, ExportOptions, Finding, Prepared
from zoo.export.manifest import EMBEDDED_NAME
from zoo_plugins.formats.qdq_folding import fold_constant_multipliers
from zoo_plugins.formats.rewrites import hardswish_as_relu6

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.catalog.schema import ModelCard
    from zoo.export.manifest import Manifest

METADATA_KEY = "zoo_manifest"
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "out"
#: how zoo's runtime makes an onnxruntime session (keep in step with runtimes/onnx.py), and
#: what docs/apps.md advises apps
SESSION_ADVICE = ("onnxruntime: free dimensions height and width fixed to the input size "
                  "(AddFreeDimensionOverrideByName, a session per size that recurs); intra-op "
                  "threads spin only while a run lasts (session.intra_op.allow_spinning=1, "
                  "session.force_spinning_stop=1)")


class OnnxExporter(Exporter):
    """ONNX graph for onnxruntime (server, Android/iOS ORT Mobile, browsers)."""

    name = "onnx"
    suffix = ".onnx"
    description = "ONNX graph for onnxruntime and other ONNX runtimes"
    precisions = ("fp32", "int8")
    keeps_dict_output = False
    requires = (("onnx", "onnx"), ("onnxruntime", "onnx"))
    runtime = "zoo_plugins.formats.runtimes.onnx"

    def prepare(
        self, model: nn.Module, example: Tensor, card: ModelCard, options: ExportOptions,
        calibration: list[Tensor] | None = None,
    ) -> Prepared:
        optimizations = {"onnx.checker": "passed", "opset": str(OPSET),
                         "dynamic_axes": "height, width", "session": SESSION_ADVICE}
        if options.precision != "int8":
            return Prepared(module=_export_fp32(model, example, card), method="trace",
                            optimizations=optimizations, static_shape=False)
        if not calibration:
            raise ExportError("ONNX int8 needs calibration batches (none were given)")
        rewritten, hardswishes = hardswish_as_relu6(model)
        graph = quantize_qdq(_export_fp32(rewritten, example, card), calibration)
        folded = _fold(graph)
        optimizations["quantization"] = (
            f"onnxruntime quantize_static QDQ: per-channel symmetric int8 weights, uint8 "
            f"activations, MinMax calibration on {len(calibration)} batches")
        last = _output_producer(graph)
        if last is not None and last.op_type == "Resize":
            optimizations["quantization"] += "; the output's Resize kept float"
        graph_notes = []
        if hardswishes:
            graph_notes.append(f"{hardswishes} hardswish as x*relu6(x+3)/6 (quantized "
                               "Add/Clip/Mul, not float)")
        if folded:
            graph_notes.append(f"{folded} multiplications by a constant folded into "
                               "DequantizeLinear scales")
        if graph_notes:
            optimizations["int8_graph"] = "; ".join(graph_notes)
        return Prepared(module=graph, method="trace", optimizations=optimizations,
                        static_shape=False)

    def save(self, prepared: Prepared, path: Path, embedded: dict[str, str]) -> None:
        graph = prepared.module
        del graph.metadata_props[:]
        for name, text in sorted(embedded.items()):
            entry = graph.metadata_props.add()
            entry.key = METADATA_KEY if name == EMBEDDED_NAME else name
            entry.value = text
        path.write_bytes(graph.SerializeToString(deterministic=True))

    def read_embedded(self, path: Path) -> str | None:
        graph = _load_graph(path)
        if graph is None:
            return None
        return next((p.value for p in graph.metadata_props if p.key == METADATA_KEY), None)

    def check_container(self, path: Path) -> str | None:
        """Why the model is refused, or None: it must parse, and every tensor (initializers,
        sparse initializers, constants, in the graph, its subgraphs and functions) must hold
        its bytes in the file: external data would load bytes no hash covers."""
        graph = _load_graph(path)
        if graph is None:
            return f"{path.name} is not a readable ONNX model"
        return external_data_problem(graph, path.name)

    def inspect(self, path: Path, manifest: Manifest) -> list[Finding]:
        """No external data, graph checker, input/output names and ranks, float32 I/O, output
        channels."""
        graph = _load_graph(path)
        if graph is None:
            return [Finding("graph", False, "not a readable ONNX model")]
        problem = external_data_problem(graph, path.name)
        if problem is not None:
            return [Finding("external data", False, problem)]
        findings = [Finding("external data", True, "every tensor is stored in the file")]
        try:
            import onnx

            onnx.checker.check_model(graph)
            findings.append(Finding("graph", True, f"onnx.checker passed (opset "
                                    f"{max((o.version for o in graph.opset_import), default=0)})"))
        except Exception as exc:
            findings.append(Finding("graph", False, f"onnx.checker: {str(exc)[:200]}"))
        findings.append(_io_finding(graph, manifest.output.channels))
        return findings


def _load_graph(path: Path) -> Any:
    import onnx

    try:  # parsing only; external data would name paths outside the file: never followed
        return onnx.load(str(path), load_external_data=False)
    except Exception:
        return None


def _tensors(graph: Any, where: str) -> Any:
    """(where, TensorProto) for every tensor a graph holds, its subgraphs' too."""
    for tensor in graph.initializer:
        yield where, tensor
    for sparse in graph.sparse_initializer:
        yield where, sparse.values
        yield where, sparse.indices
    for node in graph.node:
        yield from _node_tensors(node, where)


def _node_tensors(node: Any, where: str) -> Any:
    for attribute in node.attribute:
        inner = f"{where}, node {node.name or node.op_type!r} attribute {attribute.name!r}"
        if attribute.HasField("t"):
            yield inner, attribute.t
        yield from ((inner, t) for t in attribute.tensors)
        if attribute.HasField("sparse_tensor"):
            yield inner, attribute.sparse_tensor.values
            yield inner, attribute.sparse_tensor.indices
        for sparse in attribute.sparse_tensors:
            yield inner, sparse.values
            yield inner, sparse.indices
        if attribute.HasField("g"):
            yield from _tensors(attribute.g, inner)
        for sub in attribute.graphs:
            yield from _tensors(sub, inner)


def external_data_problem(model: Any, name: str) -> str | None:
    """Why ``model`` (a parsed ``ModelProto``) is refused for external data, or None: a
    tensor whose ``data_location`` is EXTERNAL or that lists ``external_data`` entries."""
    import onnx

    def tensors() -> Any:
        yield from _tensors(model.graph, "graph")
        for function in model.functions:
            for node in function.node:
                yield from _node_tensors(node, f"function {function.name!r}")

    for where, tensor in tensors():
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"),
                            "?")
            return (f"{name}: tensor {tensor.name!r} ({where}) keeps its data outside the file "
                    f"(external data {location[:80]!r}); zoo refuses external data, whose bytes "
                    "no manifest hash covers: re-export the model with its weights inside "
                    "(onnx.save_model(..., save_as_external_data=False))")
    return None


def _dims(value_info: Any) -> list[Any]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _io_finding(graph: Any, channels: int) -> Finding:
    import onnx

    inputs = [i for i in graph.graph.input
              if i.name not in {t.name for t in graph.graph.initializer}]
    outputs = list(graph.graph.output)
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        return Finding("inputs and outputs", False,
                       f"inputs {[i.name for i in inputs]}, outputs {[o.name for o in outputs]}"
                       f"; expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]")
    problems = []
    for role, value in (("input", inputs[0]), ("output", outputs[0])):
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"{role} is not float32")
        if len(_dims(value)) != 4:
            problems.append(f"{role} rank {len(_dims(value))} != 4")
    dims_in, dims_out = _dims(inputs[0]), _dims(outputs[0])
    if len(dims_in) == 4 and isinstance(dims_in[1], int) and dims_in[1] != 3:
        problems.append(f"input has {dims_in[1]} channels, not 3")
    if len(dims_out) == 4 and isinstance(dims_out[1], int) and dims_out[1] != channels:
        # a symbolic dimension (e.g. after Resize) is judged when the golden inputs run
        problems.append(f"output has {dims_out[1]} channels, the manifest says {channels}")
    return Finding("inputs and outputs", not problems, "; ".join(problems) or
                   f"{INPUT_NAME} {dims_in} -> {OUTPUT_NAME} {dims_out}, float32")


def _export_fp32(model: nn.Module, example: Tensor, card: ModelCard) -> Any:
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
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {2: "height", 3: "width"},
                              OUTPUT_NAME: {2: "height", 3: "width"}},
            )
        graph = onnx.load_from_string(buffer.getvalue())
        onnx.checker.check_model(graph)
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:300]}") from exc
    return graph


def _fold(graph: Any) -> int:
    """:func:`fold_constant_multipliers` on the quantized graph, checked again after."""
    import onnx

    try:
        folded = fold_constant_multipliers(graph)
        onnx.checker.check_model(graph)
    except Exception as exc:
        raise ExportError(f"ONNX int8 constant folding failed: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:300]}") from exc
    return folded


def float_output_resize(graph: Any) -> list[str]:
    """The name of the ``Resize`` that writes the model's output, when one does (a segmenter's
    final upsample), to keep out of quantization: ONNX Runtime runs it in float either way, so
    quantizing its output only adds a QuantizeLinear/DequantizeLinear pair over the whole
    [1, C, H, W] output (lraspp 520x520: 2.7 ms of 27, and one more rounding)."""
    node = _output_producer(graph)
    return [node.name] if node is not None and node.op_type == "Resize" and node.name else []


def _output_producer(graph: Any) -> Any:
    return next((n for n in graph.graph.node if OUTPUT_NAME in n.output), None)


def quantize_qdq(graph: Any, batches: list[Tensor]) -> Any:
    """Static QDQ int8 of an fp32 graph with onnxruntime's quantizer, calibrated on
    ``batches`` (normalised float32 NCHW inputs); returns the quantized graph."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, Any] | None:
            x = next(self._batches, None)
            return None if x is None else {INPUT_NAME: x.contiguous().numpy()}

    with tempfile.TemporaryDirectory(prefix="zoo-onnx-int8-") as tmp:
        fp32, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(graph.SerializeToString(deterministic=True))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(fp32), str(pre))
                quantize_static(
                    str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    calibration_providers=["CPUExecutionProvider"],
                    nodes_to_exclude=float_output_resize(onnx.load(str(pre))),
                )
            quantized = onnx.load(str(out))
            onnx.checker.check_model(quantized)
        except Exception as exc:
            raise ExportError(f"ONNX int8 quantization failed: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}") from exc
    return quantized
