"""Constant multipliers folded into DequantizeLinear scales (ONNX int8).

Every graph here is run by onnxruntime before and after the folding: the folding must keep the
function (up to the float rounding of the new scale) and remove exactly the Mul and
QuantizeLinear it names, and must leave alone what it cannot prove (:data:`LEFT_ALONE`: a
negative constant, per-channel or blocked scales, a QuantizeLinear that would round or clip,
a reader with its own scale, a broadcasting constant, an overridable one, a graph output, a
value a subgraph reads).
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from zoo_plugins.formats.qdq_folding import fold_constant_multipliers  # noqa: E402


def _run(model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _scalar(name: str, value, dtype) -> TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name=name)


def _chain(factor: float, variant: str = ""):
    """x -> Q -> DQ -> Mul(DQ(constant)) -> Q -> DQ -> Relu -> y (uint8 activations); the
    QuantizeLinear after the Mul has scale 0.05 * factor and zero point 128 unless ``variant``
    (one of :data:`LEFT_ALONE`) says otherwise."""
    y_scale = 0.05 * abs(factor) * (0.5 if variant == "narrower-q" else 1)
    const_shape = [1, 1, 1, 1, 1] if variant == "broadcasting-constant" else []
    inits = [
        _scalar("s_x", 0.05, np.float32), _scalar("z_x", 128, np.uint8),
        numpy_helper.from_array(np.full(const_shape, 100 if factor > 0 else -100, np.int8),
                                name="c_q"),
        _scalar("c_s", abs(factor) / 100, np.float32),
        _scalar("s_y", y_scale, np.float32),
        _scalar("z_y", 100 if variant == "other-zero-point" else 128, np.uint8),
        _scalar("s_r", 2 * y_scale, np.float32),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_x", "z_x"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "s_x", "z_x"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["c_q", "c_s"], ["c"]),
        helper.make_node("Mul", ["x_dq", "c"], ["m"]),
        helper.make_node("QuantizeLinear", ["m", "s_y", "z_y"], ["m_q"]),
        helper.make_node("DequantizeLinear",
                         ["m_q", "s_r" if variant == "reader-scale" else "s_y", "z_y"],
                         ["m_dq"]),
        helper.make_node("Relu", ["m_dq"], ["y"]),
    ]
    if variant == "per-channel":  # the activation's scale is a vector
        inits[0] = numpy_helper.from_array(np.full(3, 0.05, np.float32), name="s_x")
        inits[1] = numpy_helper.from_array(np.full(3, 128, np.uint8), name="z_x")
        for node in nodes[:2]:
            node.attribute.append(helper.make_attribute("axis", 1))
    if variant == "per-channel-q":
        inits[4] = numpy_helper.from_array(np.full(3, y_scale, np.float32), name="s_y")
        inits[5] = numpy_helper.from_array(np.full(3, 128, np.uint8), name="z_y")
        for node in nodes[4:6]:
            node.attribute.append(helper.make_attribute("axis", 1))
    rank = 5 if variant == "broadcasting-constant" else 4
    shape = [1] * (rank - 4) + [1, 3, 4, 4]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    if variant == "output":
        outputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, shape))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])]
    if variant == "overridable-constant":  # an initializer that is also an input
        inputs.append(helper.make_tensor_value_info("c_q", TensorProto.INT8, []))
    graph = helper.make_graph(nodes, "chain", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


#: chains whose folding could not be shown to keep the function
LEFT_ALONE = ["negative", "per-channel", "output", "narrower-q", "other-zero-point",
              "reader-scale", "per-channel-q", "broadcasting-constant", "overridable-constant"]


def _unread_outputs(model) -> list[str]:
    """Node outputs nothing reads: a dequantized copy left behind keeps onnxruntime from
    fusing the QuantizeLinear before it (lraspp int8 was 20 % slower with 20 of them)."""
    read = {name for node in model.graph.node for name in node.input}
    read |= {o.name for o in model.graph.output}
    return [out for node in model.graph.node for out in node.output if out not in read]


def _x() -> np.ndarray:
    return np.random.default_rng(0).uniform(-6, 6, (1, 3, 4, 4)).astype(np.float32)


def test_a_positive_constant_becomes_the_next_scale_exactly() -> None:
    model = _chain(1 / 6)
    before = _run(model, {"x": _x()})
    folded = copy.deepcopy(model)
    assert fold_constant_multipliers(folded) == 1
    onnx.checker.check_model(folded)
    ops = [n.op_type for n in folded.graph.node]
    assert "Mul" not in ops and ops.count("QuantizeLinear") == 1
    assert _unread_outputs(folded) == []
    after = _run(folded, {"x": _x()})
    # the activation's integers, read with scale s_x * c: relu((q - z) * s_x / 6)
    q = np.clip(np.round(_x() / 0.05) + 128, 0, 255)
    want = np.maximum((q - 128) * np.float32(0.05 * (100 * (1 / 6) / 100)), 0)
    np.testing.assert_allclose(after, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7)  # the Q was an identity


@pytest.mark.parametrize("case", LEFT_ALONE)
def test_what_it_cannot_prove_is_left_alone(case: str) -> None:
    model = _chain(-0.5 if case == "negative" else 0.5, case)
    before = _run(model, {"x": _x()})
    folded = copy.deepcopy(model)
    assert fold_constant_multipliers(folded) == 0
    assert folded == model
    np.testing.assert_array_equal(_run(folded, {"x": _x()}), before)


def test_a_value_read_inside_a_subgraph_is_left_alone() -> None:
    model = _chain(0.5)
    graph = model.graph
    then_branch = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["m_q", "s_y", "z_y"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 3, 4, 4])])
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["y"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 3, 4, 4])])
    graph.initializer.append(numpy_helper.from_array(np.array(True), name="cond"))
    graph.node.append(helper.make_node("If", ["cond"], ["z"], then_branch=then_branch,
                                       else_branch=else_branch))
    graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 4, 4]))
    folded = copy.deepcopy(model)
    assert fold_constant_multipliers(folded) == 0
    session = ort.InferenceSession(folded.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    assert session.run(["z"], {"x": _x()})[0].shape == (1, 3, 4, 4)


def test_hardswish_sixths_of_a_quantized_network_are_folded() -> None:
    """The pattern the int8 exporter meets: hardswish written as x*relu6(x+3)*(1/6),
    quantized by onnxruntime's quantizer, then folded; the result tracks the float model."""
    import torch

    from zoo_plugins.formats.onnx import INPUT_NAME, OUTPUT_NAME, quantize_qdq
    from zoo_plugins.formats.rewrites import hardswish_as_relu6

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Hardswish(),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.Hardswish(),
        torch.nn.Conv2d(8, 4, 1)).eval()
    rewritten, replaced = hardswish_as_relu6(model)
    buffer = io.BytesIO()
    torch.onnx.export(rewritten, (torch.zeros(1, 3, 16, 16),), buffer, dynamo=False,
                      opset_version=17, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    batches = [torch.rand(1, 3, 16, 16) * 4 - 2 for _ in range(4)]
    quantized = quantize_qdq(onnx.load_from_string(buffer.getvalue()), batches)
    folded = copy.deepcopy(quantized)
    muls = [n.op_type for n in quantized.graph.node].count("Mul")
    assert fold_constant_multipliers(folded) == replaced == 2
    onnx.checker.check_model(folded)
    assert [n.op_type for n in folded.graph.node].count("Mul") == muls - 2
    assert _unread_outputs(folded) == _unread_outputs(quantized) == []
    x = batches[0].numpy()
    with torch.no_grad():
        want = model(batches[0]).numpy()
    got, unfolded = _run(folded, {INPUT_NAME: x}), _run(quantized, {INPUT_NAME: x})

    def sqnr(ref: np.ndarray, test: np.ndarray) -> float:
        return float(10 * np.log10((ref**2).sum() / ((ref - test) ** 2).sum()))

    assert sqnr(want, got) >= sqnr(want, unfolded) - 0.5 and sqnr(want, got) > 25
