"""`zoo fetch --format onnx --precision int8`: static QDQ quantization with onnxruntime.

The int8 graph is calibrated on the pipeline's calibration batches, its golden outputs are
recorded from the artifact itself, and its fidelity to fp32 (SQNR, argmax agreement) is in
the manifest. Artifacts are run by onnxruntime through the format's runtime module in a
`python -I` process that imports neither zoo nor torchvision.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import run_zoo
from tests.export.test_formats import run_runtime_clean
from tests.support.export_helpers import (
    eager_output,
    fetch,
    golden_case,
    make_weights,
    tiny_segmenter_onnx,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SIZE = "96x128"


def _export(tmp: Path, name: str, *args: str, size: str = SIZE,
            weights: Path | None = None) -> tuple[Path, dict]:
    tmp.mkdir(parents=True, exist_ok=True)
    weights = weights or make_weights(name, tmp)
    proc = fetch([name, "--format", "onnx", "--precision", "int8", "--weights", str(weights),
                  "--input-size", size, "-o", str(tmp / "out"), "--quiet", *args], tmp / "home")
    assert proc.returncode == 0, proc.stderr[-2000:]
    artifact = Path(proc.stdout.strip().splitlines()[-1])
    return artifact, json.loads(Path(f"{artifact}.manifest.json").read_text())


def _sqnr(ref, got) -> float:
    noise = float(((ref - got) ** 2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float((ref**2).sum()) / noise)


@pytest.fixture(scope="module")
def lraspp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    tmp = tmp_path_factory.mktemp("onnx_int8")
    weights = make_weights("lraspp_mobilenet_v3_large", tmp)
    artifact, manifest = _export(tmp, "lraspp_mobilenet_v3_large", weights=weights)
    return artifact, manifest, weights


def test_lraspp_int8_is_qdq_small_and_faithful(lraspp: tuple[Path, dict, Path]) -> None:
    import zoo

    artifact, manifest, _ = lraspp
    assert artifact.name == "lraspp_mobilenet_v3_large.int8.onnx"
    graph = onnx.load(str(artifact))
    ops = [node.op_type for node in graph.graph.node]
    assert ops.count("QuantizeLinear") > 20 and ops.count("DequantizeLinear") > 20
    int8_weights = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) > 20
    params = zoo.get("lraspp_mobilenet_v3_large").num_params
    assert artifact.stat().st_size < 0.4 * 4 * params  # fp32 would be 4 bytes a weight
    q = manifest["quantization"]
    assert q["scheme"] == "int8" and q["calibration"]["source"] == "synthetic"
    assert q["sqnr_db"] >= 25 and q["argmax_agreement"] >= 0.95
    assert manifest["golden"]["reference"] == "artifact"
    assert "QDQ" in manifest["export"]["optimizations"]["quantization"]
    # hardswish is quantized Add/Clip/Mul, not a float HardSwish/HardSigmoid between Q and DQ
    assert "HardSwish" not in ops and ops.count("HardSigmoid") == 8  # the 8 SE blocks
    notes = manifest["export"]["optimizations"]
    assert "20 hardswish" in notes["int8_graph"]
    # each hardswish's "* (1/6)" is folded into the scale after it; left: 20 x*relu6(x+3),
    # 8 squeeze-excitation scales and the LR-ASPP head's gate
    assert "20 multiplications by a constant folded" in notes["int8_graph"]
    assert ops.count("Mul") == 29
    assert "force_spinning_stop" in notes["session"]  # how zoo runs it, what apps should do
    assert ops[-1] == "Resize"  # the final upsample writes the output in float
    props = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(props["zoo_manifest"]) == {**manifest, "artifact": None}


def test_lraspp_int8_verifies_and_tracks_eager(lraspp: tuple[Path, dict, Path],
                                               tmp_path: Path) -> None:
    artifact, manifest, weights = lraspp
    proc = run_zoo(["verify", str(artifact), "--json", "--require-run"])
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, report
    assert report["verdict"] == "verified"
    assert all(case["verdict"]["ok"] for case in report["parity"])
    # The natural-image golden input, run by onnxruntime in a clean process, against fp32.
    got = run_runtime_clean("onnx", artifact, golden_case(manifest)["input"], tmp_path)
    want = eager_output("lraspp_mobilenet_v3_large", weights, manifest)
    assert got.shape == want.shape == (1, 21, 96, 128)
    assert _sqnr(want, got) >= 25
    assert float((got.argmax(1) == want.argmax(1)).float().mean()) >= 0.95


def test_int8_graph_keeps_dynamic_height_and_width(lraspp: tuple[Path, dict, Path],
                                                   tmp_path: Path) -> None:
    artifact, manifest, _ = lraspp
    spec = {**golden_case(manifest)["input"], "shape": [1, 3, 64, 160]}
    assert tuple(run_runtime_clean("onnx", artifact, spec, tmp_path).shape) == (1, 21, 64, 160)


def test_same_calibration_gives_the_same_bytes(tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "calib"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (80, 60), (60 * i, 200 - 40 * i, 90)).save(images / f"{i}.png")
    weights = make_weights("single_conv", tmp_path)
    first, manifest = _export(tmp_path / "a", "single_conv", "--calibrate", str(images),
                              weights=weights)
    second, _ = _export(tmp_path / "b", "single_conv", "--calibrate", str(images),
                        weights=weights)
    assert first.read_bytes() == second.read_bytes()
    assert manifest["quantization"]["calibration"]["source"] == "images"
    assert manifest["quantization"]["calibration"]["images"] == 3
    synthetic, _ = _export(tmp_path / "c", "single_conv", weights=weights)
    assert synthetic.read_bytes() != first.read_bytes()  # the calibration shapes the ranges


@pytest.mark.slow
def test_deeplabv3_resnet50_int8_size_and_fidelity(tmp_path: Path) -> None:
    artifact, manifest = _export(tmp_path, "deeplabv3_resnet50", size="520x520")
    assert artifact.stat().st_size <= 45e6
    assert manifest["quantization"]["sqnr_db"] >= 25
    proc = run_zoo(["verify", str(artifact), "--require-run"])
    assert proc.returncode == 0, proc.stdout


def test_a_final_resize_writes_the_output_in_float(tmp_path: Path) -> None:
    """A segmenter's last op (the upsample to the input size) stays out of quantization: no
    QuantizeLinear/DequantizeLinear pair over the whole output."""
    import torch

    from zoo_plugins.formats.onnx import INPUT_NAME, OUTPUT_NAME, quantize_qdq

    model, exported = tiny_segmenter_onnx(stride=4)
    batches = [torch.rand(1, 3, 32, 32) for _ in range(3)]
    graph = quantize_qdq(onnx.load_from_string(exported), batches)
    last = next(n for n in graph.graph.node if OUTPUT_NAME in n.output)
    assert last.op_type == "Resize"
    made_by = {out: n for n in graph.graph.node for out in n.output}
    conv = next(n for n in graph.graph.node if n.op_type == "Conv")
    assert made_by[conv.input[0]].op_type == "DequantizeLinear"  # the conv is still quantized

    import onnxruntime

    session = onnxruntime.InferenceSession(graph.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: batches[0].numpy()})[0]
    with torch.no_grad():
        want = model(batches[0]).numpy()
    assert got.shape == want.shape and _sqnr(torch.from_numpy(want), torch.from_numpy(got)) > 25
