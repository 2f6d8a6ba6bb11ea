"""LiteRT int8 graphs XNNPACK runs whole (zoo_plugins.formats.litert_int8) and the LiteRT
runtime module's output handling.

A small MobileNetV3-shaped block (conv, in-place hardswish, in-place residual add) is
converted once by the exporter's own int8 path; its flatbuffer is read op by op and run by the
real LiteRT interpreter. Before the rewrite this block gave float ADDs between DEQUANTIZE and
QUANTIZE and an int8 HARD_SWISH that split the XNNPACK delegate.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

import torch
from torch import nn


class Block(nn.Module):
    """conv -> hardswish_ -> conv, ``out += x`` (as torchvision's InvertedResidual), conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Hardswish(inplace=True))
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Hardswish(inplace=True),
                                  nn.Conv2d(8, 8, 1))
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        out = self.body(y)
        out += y
        return self.head(out)


def _ops(flatbuffer: bytes) -> collections.Counter[tuple[str, str]]:
    """(operator, first input's type) counts of subgraph 0."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = model.Subgraphs(0)
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        first = graph.Tensors(int(op.InputsAsNumpy()[0]))
        counts[(name, types.get(first.Type(), "?"))] += 1
    return counts


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from zoo_plugins.formats.tflite import _convert_int8

    torch.manual_seed(0)
    model = Block().eval()
    batches = [torch.rand(1, 3, 32, 40) * 2 - 1 for _ in range(4)]
    edge, notes = _convert_int8(model, batches)
    path = tmp_path_factory.mktemp("litert_int8") / "block.tflite"
    path.write_bytes(bytes(edge.model_content()))
    return {"model": model, "batches": batches, "notes": notes, "path": path}


def test_rewritten_hardswish_is_the_same_function_and_leaves_the_model_alone() -> None:
    from zoo_plugins.formats.rewrites import hardswish_as_relu6

    model = Block().eval()
    rewritten, count = hardswish_as_relu6(model)
    assert count == 2 and rewritten is not model
    assert sum(isinstance(m, nn.Hardswish) for m in model.modules()) == 2  # untouched
    assert not any(isinstance(m, nn.Hardswish) for m in rewritten.modules())
    x = torch.randn(2, 3, 16, 16) * 4
    with torch.no_grad():
        assert torch.allclose(model(x), rewritten(x), atol=1e-5)
    flat = torch.randn(7, 11) * 4  # not 4-D: scalar constants, same shape out
    replacement = next(m for m in rewritten.modules() if type(m).__name__ ==
                       "Relu6Hardswish")
    assert torch.allclose(replacement(flat), nn.functional.hardswish(flat), atol=1e-6)
    plain = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
    assert hardswish_as_relu6(plain) == (plain, 0)


def test_int8_graph_is_integer_throughout_and_one_xnnpack_partition(
        converted: dict[str, Any]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    ops = _ops(converted["path"].read_bytes())
    assert not any(name == "HARD_SWISH" for name, _ in ops), ops
    floats = {name for (name, kind), _ in ops.items() if kind == "FLOAT32"}
    assert not floats & {"ADD", "MUL", "CONV_2D"}, ops
    assert not any(name in {"QUANTIZE", "DEQUANTIZE"} for name, _ in ops), ops
    assert "2 hardswish" in converted["notes"]["int8_graph"]
    interpreter = Interpreter(model_path=str(converted["path"]), num_threads=1)
    interpreter.allocate_tensors()
    plan = collections.Counter(op["op_name"] for op in interpreter._get_ops_details())
    assert plan["DELEGATE"] == 1, plan  # XNNPACK took the whole graph


def test_runtime_dequantizes_into_arrays_the_caller_owns(converted: dict[str, Any]) -> None:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from zoo.bench.measure import sqnr_db
    from zoo_plugins.formats.runtimes import tflite

    path, batches = converted["path"], converted["batches"]
    run = tflite.load(str(path), {"threads": 1})
    first = run(batches[0])
    kept = first.clone()
    second = run(batches[1])
    assert torch.equal(first, kept)  # the next call did not write into the first result
    assert first.dtype == torch.float32 and first.shape == (1, 5, 32, 40)
    assert not torch.equal(first, second)

    # The same numbers by hand: quantize, invoke, dequantize with the tensors' parameters.
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert source["dtype"] == np.int8 and target["dtype"] == np.int8
    (s_in, z_in), (s_out, z_out) = source["quantization"], target["quantization"]
    q = np.clip(np.round(batches[1].numpy() / s_in) + z_in, -128, 127).astype(np.int8)
    interpreter.set_tensor(source["index"], q)
    interpreter.invoke()
    want = (interpreter.get_tensor(target["index"]).astype(np.float32) - z_out) * s_out
    assert np.allclose(second.numpy(), want, atol=1e-6)
    with torch.no_grad():
        reference = converted["model"](batches[1])
    assert sqnr_db(reference, second) > 20  # int8 of a 4-layer block


class ResidualRelu(nn.Module):
    """ResNet's tail of a block: ``out += identity``, then an in-place ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.stem(x)
        out = self.body(identity)
        out += identity
        return self.head(self.relu(out))


def test_a_residual_add_and_its_relu_are_integer() -> None:
    """ResNet's ``out += identity; relu_(out)`` (deeplabv3, fcn): before, a float ADD between
    DEQUANTIZE and QUANTIZE (deeplabv3 at 96x128: 16 of them); now int8, the ReLU fused."""
    from zoo_plugins.formats.tflite import _convert_int8

    torch.manual_seed(0)
    batches = [torch.rand(1, 3, 24, 32) * 2 - 1 for _ in range(3)]
    edge, notes = _convert_int8(ResidualRelu().eval(), batches)
    ops = _ops(bytes(edge.model_content()))
    assert not any(kind == "FLOAT32" for _, kind in ops), ops
    assert not any(name in {"QUANTIZE", "DEQUANTIZE"} for name, _ in ops), ops
    assert "0 hardswish" in notes["int8_graph"]
