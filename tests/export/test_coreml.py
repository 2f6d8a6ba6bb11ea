"""`zoo fetch --format coreml`: `.mlpackage` through coremltools, checked (not run) on Linux.

Core ML predictions need Apple's runtime, so on Linux `zoo verify` checks integrity (every
file of the package) and structure (inputs, outputs, shapes, metadata, precision, the card's
contract) and reports CHECKED, NOT RUN. One module-scoped export per case is shared (Core ML
conversion takes tens of seconds on two cores).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import pytest

from tests.conftest import BUILTIN_MODELS, run_zoo
from tests.support.export_helpers import fetch

pytest.importorskip("coremltools")

SIZE = "96x128"  # non-square: H and W must never swap
PACKAGE_FILES = {"Manifest.json", "Data/com.apple.CoreML/model.mlmodel",
                 "Data/com.apple.CoreML/weights/weight.bin"}
ON_MAC = platform.system() == "Darwin"


def _export(tmp: Path, name: str, *args: str, size: str = SIZE) -> tuple[Path, dict]:
    proc = fetch([name, "--format", "coreml", "--weights", "none", "--input-size", size,
                  "-o", str(tmp / "out"), "--quiet", *args], tmp / "home")
    assert proc.returncode == 0, proc.stderr[-2000:]
    artifact = Path(proc.stdout.strip().splitlines()[-1])
    return artifact, json.loads(Path(f"{artifact}.manifest.json").read_text())


def _files(package: Path) -> dict[str, bytes]:
    return {p.relative_to(package).as_posix(): p.read_bytes()
            for p in sorted(package.rglob("*")) if p.is_file()}


def _verify(artifact: Path, *extra: str) -> tuple[int, dict]:
    proc = run_zoo(["verify", str(artifact), "--json", *extra])
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def lraspp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _export(tmp_path_factory.mktemp("coreml_lraspp"), "lraspp_mobilenet_v3_large")


@pytest.fixture(scope="module")
def image_int8(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _export(tmp_path_factory.mktemp("coreml_img"), "single_conv", "--input-type",
                   "image", "--precision", "int8")


def test_default_is_an_fp16_package_with_every_file_hashed(lraspp: tuple[Path, dict]) -> None:
    import zoo

    artifact, manifest = lraspp
    assert artifact.is_dir() and artifact.suffix == ".mlpackage"
    assert manifest["export"]["precision"] == "fp16"
    assert set(_files(artifact)) == PACKAGE_FILES  # no debug mapping file, nothing extra
    facts = manifest["artifact"]
    assert {f["path"] for f in facts["files"]} == PACKAGE_FILES
    assert facts["size"] == sum(len(b) for b in _files(artifact).values())
    params = zoo.get("lraspp_mobilenet_v3_large").num_params
    weights = (artifact / "Data/com.apple.CoreML/weights/weight.bin").stat().st_size
    assert 1.9 * params < weights < 2.3 * params  # two bytes per weight: fp16
    assert manifest["output"]["kind"] == "tensor"
    assert manifest["export"]["options"]["input_type"] == "tensor"
    # The package hides nothing random: sorted JSON, no conversion date.
    package_manifest = json.loads((artifact / "Manifest.json").read_text())
    assert package_manifest["rootModelIdentifier"] in package_manifest["itemInfoEntries"]
    from zoo_plugins.formats.coreml import read_spec

    metadata = dict(read_spec(artifact).description.metadata.userDefined)
    assert "com.github.apple.coremltools.conversion_date" not in metadata
    assert json.loads(metadata["zoo_manifest"]) == {**manifest, "artifact": None}


@pytest.mark.skipif(ON_MAC, reason="Core ML runs here: the golden check runs instead")
def test_verify_checks_structure_and_says_not_run(lraspp: tuple[Path, dict]) -> None:
    artifact, _ = lraspp
    code, report = _verify(artifact)
    assert code == 0, report
    assert report["verdict"] == "checked" and not report["ran"]
    assert report["not_run_reason"] == ("Core ML runs only on macOS (coremltools cannot run "
                                        "predictions on Linux)")
    checks = {c["name"]: c for c in report["checks"]}
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    assert checks["sha256 (manifest)"]["detail"] == "3 files match"
    assert checks["input"]["detail"] == "input FLOAT32 [1, 3, 96, 128]"
    assert checks["output"]["detail"] == "out FLOAT32 [1, 21, 96, 128]"
    assert checks["precision"]["detail"].startswith("fp16")
    assert "metadata manifest" in checks and "model type" in checks
    assert not report.get("parity")  # nothing pretends to have run
    text = run_zoo(["verify", str(artifact), "--require-run"])
    assert text.returncode == 1
    assert "NOT VERIFIED (--require-run: the golden inputs did not run" in text.stdout
    assert "\nVERIFIED" not in text.stdout


def test_changed_or_extra_files_fail_verify(lraspp: tuple[Path, dict], tmp_path: Path) -> None:
    artifact, _ = lraspp
    copy = tmp_path / "copy"
    shutil.copytree(artifact.parent, copy)
    package = copy / artifact.name
    weights = package / "Data/com.apple.CoreML/weights/weight.bin"
    original = weights.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x40
    weights.write_bytes(bytes(data))
    code, report = _verify(package)
    assert code == 1
    assert "changed: Data/com.apple.CoreML/weights/weight.bin" in json.dumps(report)
    weights.write_bytes(original)
    (package / "Data" / "planted.py").write_text("print('hi')\n")
    code, report = _verify(package)
    assert code == 1 and "not recorded: Data/planted.py" in json.dumps(report)


def test_inspect_catches_structure_and_contract_problems(lraspp: tuple[Path, dict],
                                                         tmp_path: Path) -> None:
    from zoo.export import get_exporter
    from zoo.export.manifest import Manifest
    from zoo_plugins.formats.coreml import SPEC_PATH, read_spec

    exporter = get_exporter("coreml")
    artifact, data = lraspp
    manifest = Manifest.model_validate(data)
    assert all(f.ok for f in exporter.inspect(artifact, manifest))

    def failing(path: Path, m: Manifest = manifest) -> set[str]:
        return {f.name for f in exporter.inspect(path, m) if not f.ok}

    wrong_channels = manifest.model_copy(update={"output": manifest.output.model_copy(
        update={"channels": 20})})
    # A changed manifest no longer matches the embedded copy either.
    assert failing(artifact, wrong_channels) == {"output", "metadata manifest"}
    wrong_precision = manifest.model_copy(update={"export": manifest.export.model_copy(
        update={"precision": "fp32"})})
    assert failing(artifact, wrong_precision) == {"precision", "metadata manifest"}
    wrong_size = manifest.model_copy(update={"export": manifest.export.model_copy(
        update={"input_shape": [1, 3, 128, 96]})})
    assert failing(artifact, wrong_size) == {"input", "output", "metadata manifest"}

    package = tmp_path / artifact.name
    shutil.copytree(artifact, package)
    spec = read_spec(package)
    spec.description.output[0].name = "logits"
    spec.description.metadata.userDefined["zoo_manifest"] = "{}"
    (package / SPEC_PATH).write_bytes(spec.SerializeToString())
    assert failing(package) == {"output", "metadata manifest"}
    assert exporter.read_embedded(package) == "{}"

    listing = json.loads((package / "Manifest.json").read_text())
    root = listing["rootModelIdentifier"]
    for hostile in ("../../../etc/passwd", "/etc/passwd", "com.apple.CoreML/missing.mlmodel"):
        listing["itemInfoEntries"][root]["path"] = hostile
        (package / "Manifest.json").write_text(json.dumps(listing))
        assert failing(package) == {"package"}, hostile
        assert exporter.read_embedded(package) is None
    (package / "Manifest.json").write_text("not json")
    assert failing(package) == {"package"}
    (package / "Manifest.json").unlink()
    assert exporter.read_embedded(package) is None


def test_image_input_and_int8_weights(image_int8: tuple[Path, dict]) -> None:
    from zoo_plugins.formats.coreml import read_spec

    artifact, manifest = image_int8
    assert artifact.name == "single_conv.int8.mlpackage"
    assert manifest["export"]["options"]["input_type"] == "image"
    opts = manifest["export"]["optimizations"]
    assert opts["image_input"] == "scale, mean and std in ImageType"  # single_conv: std equal
    assert "int8" in opts["int8_weights"]
    spec = read_spec(artifact)
    (feature,) = spec.description.input
    assert feature.name == "image" and feature.type.WhichOneof("Type") == "imageType"
    assert (feature.type.imageType.height, feature.type.imageType.width) == (96, 128)
    q = manifest["quantization"]
    assert q["scheme"] == "int8" and q["sqnr_db"] is None  # no Core ML here to measure it
    if not ON_MAC:
        code, report = _verify(artifact)
        assert code == 0 and report["verdict"] == "checked", report
        checks = {c["name"]: c["detail"] for c in report["checks"]}
        assert checks["input"] == "image 128x96 RGB"
        assert checks["precision"].startswith("int8 weights, fp16 compute")


@pytest.mark.parametrize("name", ["single_conv", "lraspp_mobilenet_v3_large"])
def test_image_fold_reproduces_the_cards_normalisation(name: str) -> None:
    import torch

    import zoo
    from zoo_plugins.formats.coreml import image_fold, normalized

    card = zoo.get(name)
    pre = card.preprocessing
    pixels = torch.arange(0, 256, dtype=torch.float32).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    mean = torch.tensor(pre.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(pre.std).reshape(1, 3, 1, 1)
    want = (pixels / pre.scale_divisor - mean) / std
    scale, bias, in_graph = image_fold(card)
    x = scale * pixels + torch.tensor(bias).reshape(1, 3, 1, 1)  # what Core ML feeds
    got = normalized(torch.nn.Identity(), list(pre.mean), list(pre.std))(x) if in_graph else x
    assert in_graph == (len(set(pre.std)) > 1)
    assert torch.allclose(got, want, atol=1e-5)


def test_reproducible_bytes_in_separate_processes(tmp_path: Path) -> None:
    first, _ = _export(tmp_path / "a", "single_conv")
    second, _ = _export(tmp_path / "b", "single_conv")
    assert _files(first) == _files(second)
    modes = {oct(p.stat().st_mode & 0o777) for p in first.rglob("*") if p.is_file()}
    assert modes == {"0o644"}


def test_runtime_unavailable_names_the_platform() -> None:
    from zoo.export import get_exporter

    reason = get_exporter("coreml").runtime_unavailable()
    if ON_MAC:
        assert reason is None or "coremltools" in reason
    else:
        assert reason == ("Core ML runs only on macOS (coremltools cannot run predictions on "
                          "Linux)")


def test_precision_and_input_type_options(tmp_path: Path) -> None:
    bad = fetch(["single_conv", "--format", "coreml", "--dynamic-size", "64:128", "--weights",
                 "none", "-o", str(tmp_path)], tmp_path / "home")
    assert bad.returncode == 2 and "--dynamic-size is not supported by --format coreml" in \
        bad.stderr
    assert not any(tmp_path.glob("*.mlpackage"))


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN_MODELS)
@pytest.mark.parametrize("precision", ["fp16", "fp32", "int8"])
def test_every_model_exports_and_checks(name: str, precision: str, tmp_path: Path) -> None:
    artifact, manifest = _export(tmp_path, name, "--precision", precision, size="128x128")
    assert manifest["export"]["precision"] == precision
    code, report = _verify(artifact)
    assert code == 0, report
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    assert report["verdict"] == ("verified" if ON_MAC else "checked")


@pytest.mark.slow
def test_lraspp_image_input_is_reproducible(tmp_path: Path) -> None:
    first, manifest = _export(tmp_path / "a", "lraspp_mobilenet_v3_large", "--input-type",
                              "image")
    second, _ = _export(tmp_path / "b", "lraspp_mobilenet_v3_large", "--input-type", "image")
    assert _files(first) == _files(second)
    assert "first op" in manifest["export"]["optimizations"]["image_input"]  # unequal std
    assert os.path.getsize(first / "Data/com.apple.CoreML/weights/weight.bin") > 5e6
