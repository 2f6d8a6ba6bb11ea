"""`zoo fetch --format tflite` (LiteRT): exported by litert-torch, run by ai-edge-litert.

One module-scoped export per model and precision is shared by the tests (conversions take
tens of seconds on two cores). Artifacts are run by the real LiteRT interpreter through the
format's runtime module in a `python -I` process that imports neither zoo nor torchvision.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import BUILTIN_MODELS, run_zoo
from tests.export.test_formats import NO_INT8_FIDELITY_ON_RANDOM_WEIGHTS, run_runtime_clean
from tests.support.export_helpers import eager_output, fetch, golden_case, make_weights

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

SIZE = "96x128"  # non-square: H and W must never swap


def _export(tmp: Path, name: str, precision: str, size: str = SIZE,
            weights: Path | None = None) -> tuple[Path, dict]:
    tmp.mkdir(parents=True, exist_ok=True)
    weights = weights or make_weights(name, tmp)
    proc = fetch([name, "--format", "tflite", "--precision", precision, "--weights",
                  str(weights), "--input-size", size, "-o", str(tmp / "out"), "--quiet"],
                 tmp / "home")
    assert proc.returncode == 0, proc.stderr[-2000:]
    artifact = Path(proc.stdout.strip().splitlines()[-1])
    return artifact, json.loads(Path(f"{artifact}.manifest.json").read_text())


@pytest.fixture(scope="module")
def lraspp_fp32(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    tmp = tmp_path_factory.mktemp("tflite_lraspp")
    weights = make_weights("lraspp_mobilenet_v3_large", tmp)
    artifact, manifest = _export(tmp, "lraspp_mobilenet_v3_large", "fp32", weights=weights)
    return artifact, manifest, weights


@pytest.fixture(scope="module")
def single_conv_int8(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _export(tmp_path_factory.mktemp("tflite_sc8"), "single_conv", "int8")


def test_lraspp_fp32_matches_eager_within_1e4(lraspp_fp32: tuple[Path, dict, Path],
                                              tmp_path: Path) -> None:
    artifact, manifest, weights = lraspp_fp32
    assert artifact.name == "lraspp_mobilenet_v3_large.tflite"
    assert artifact.stat().st_size > 8e6  # fp32 weights: 3.2 M parameters x 4 bytes
    assert manifest["export"]["input_shape"] == [1, 3, 96, 128]
    assert manifest["output"]["kind"] == "tensor"
    got = run_runtime_clean("tflite", artifact, golden_case(manifest)["input"], tmp_path)
    want = eager_output("lraspp_mobilenet_v3_large", weights, manifest)  # the scene input
    assert got.shape == want.shape == (1, 21, 96, 128)
    assert float((got - want).abs().max()) <= 1e-4
    assert bool((got.argmax(1) == want.argmax(1)).all())


def test_lraspp_fp32_verifies_in_its_runtime(lraspp_fp32: tuple[Path, dict, Path]) -> None:
    artifact, _, _ = lraspp_fp32
    proc = run_zoo(["verify", str(artifact), "--json", "--require-run"])
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, report
    assert report["verdict"] == "verified" and report["ran"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["input"]["ok"] and "FLOAT32 [1, 3, 96, 128]" in checks["input"]["detail"]
    assert checks["output"]["ok"] and "[1, 21, 96, 128]" in checks["output"]["detail"]
    assert "read from the container" in checks["embedded manifest"]["detail"]


def test_manifest_is_an_associated_file(lraspp_fp32: tuple[Path, dict, Path]) -> None:
    artifact, manifest, _ = lraspp_fp32
    data = artifact.read_bytes()
    assert data[4:8] == b"TFL3"  # still a TFLite flatbuffer at the front
    with zipfile.ZipFile(artifact) as archive:  # any ZIP reader finds it
        assert archive.namelist() == ["manifest.json"]
        info = archive.getinfo("manifest.json")
        assert info.compress_type == zipfile.ZIP_STORED and info.date_time == (1980, 1, 1,
                                                                               0, 0, 0)
        embedded = json.loads(archive.read("manifest.json"))
    assert embedded["artifact"] is None
    assert embedded == {**manifest, "artifact": None}


def test_int8_records_fidelity_and_runs(single_conv_int8: tuple[Path, dict],
                                        tmp_path: Path) -> None:
    artifact, manifest = single_conv_int8
    assert artifact.name == "single_conv.int8.tflite"
    q = manifest["quantization"]
    assert q["scheme"] == "int8" and q["calibration"]["source"] == "synthetic"
    assert q["sqnr_db"] > 20 and q["argmax_agreement"] > 0.9
    assert manifest["golden"]["reference"] == "artifact"
    assert "PT2EQuantizer" in manifest["export"]["optimizations"]["quantization"]
    proc = run_zoo(["verify", str(artifact), "--json", "--require-run"])
    assert proc.returncode == 0, proc.stdout
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert "INT8 [1, 3, 96, 128]" in checks["input"]["detail"]  # quantized input tensor
    # The clean runtime quantizes the float input itself and returns float logits.
    got = run_runtime_clean("tflite", artifact, golden_case(manifest)["input"], tmp_path)
    assert got.dtype.is_floating_point and got.shape == (1, 23, 96, 128)


def test_same_options_give_the_same_bytes_in_separate_processes(tmp_path: Path) -> None:
    first = _export(tmp_path / "a", "single_conv", "fp32", weights=make_weights(
        "single_conv", tmp_path))[0].read_bytes()
    second = _export(tmp_path / "b", "single_conv", "fp32", weights=make_weights(
        "single_conv", tmp_path))[0].read_bytes()
    assert first == second


def test_inspect_rejects_damaged_and_mislabelled_models(
    lraspp_fp32: tuple[Path, dict, Path], tmp_path: Path
) -> None:
    from zoo.export import get_exporter
    from zoo.export.manifest import Manifest

    exporter = get_exporter("tflite")
    artifact, manifest, _ = lraspp_fp32
    parsed = Manifest.model_validate(manifest)
    assert all(f.ok for f in exporter.inspect(artifact, parsed))
    wrong = parsed.model_copy(update={"output": parsed.output.model_copy(
        update={"channels": 20})})
    bad = {f.name: f for f in exporter.inspect(artifact, wrong)}
    assert not bad["output"].ok and "20 channels" in bad["output"].detail
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(b"\0" * 4 + b"XXXX" + artifact.read_bytes()[8:200])
    assert [f.ok for f in exporter.inspect(damaged, parsed)] == [False]
    assert exporter.read_embedded(damaged) is None
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(artifact.read_bytes()[:4096])
    assert not all(f.ok for f in exporter.inspect(truncated, parsed))


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN_MODELS)
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_model_exports_and_verifies(name: str, precision: str, tmp_path: Path) -> None:
    artifact, manifest = _export(tmp_path, name, precision, size="128x128")
    proc = run_zoo(["verify", str(artifact), "--json", "--require-run"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    if precision == "int8":
        sqnr = manifest["quantization"]["sqnr_db"]
        assert sqnr is not None
        if name not in NO_INT8_FIDELITY_ON_RANDOM_WEIGHTS:
            assert sqnr > 15
    else:  # the whole output within the manifest's own tolerance of eager
        got = run_runtime_clean("tflite", artifact, golden_case(manifest)["input"],
                                tmp_path / "run")
        want = eager_output(name, _weights_of(manifest, tmp_path), manifest)
        golden = manifest["golden"]
        limit = golden["atol"] + golden["rtol"] * float(want.abs().max())
        assert float((got - want).abs().max()) <= limit


def _weights_of(manifest: dict, tmp: Path) -> Path:
    """The weights file ``_export`` generated for this model (seed 1)."""
    return tmp / f"{manifest['model']['name']}-1.pth"
