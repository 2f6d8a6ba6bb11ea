"""The public manifest API (issue 21): ``zoo.read_manifest`` for every format and folder
artifact, and pre/post-processing that take what an app has (a manifest's JSON dict, numpy
arrays from ONNX Runtime or LiteRT)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import zoo
from tests.conftest import run_zoo

FORMATS = ("torchscript", "lite", "onnx", "tflite", "coreml")
# ExecuTorch: its export and the child that reads its embedded manifest cost ~30 s; the same
# child read is covered by `zoo verify`'s tests, so this case runs with -m slow.
SLOW_FORMATS = ("pte",)


class Exports:
    """single_conv (untrained, 64x96) exported to a format the first time a test asks."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.done: dict[str, Path] = {}

    def __getitem__(self, fmt: str) -> Path:
        if fmt not in self.done:
            proc = run_zoo(["fetch", "single_conv", "--weights", "none", "--format", fmt,
                            "--input-size", "64x96", "-o", str(self.folder / fmt), "--quiet"],
                           env={"ZOO_HOME": str(self.folder / "home")})
            assert proc.returncode == 0, proc.stderr[-2000:]
            self.done[fmt] = Path(proc.stdout.strip())
        return self.done[fmt]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return Exports(tmp_path_factory.mktemp("manifest-api"))


@pytest.mark.parametrize("fmt", [*FORMATS, *(pytest.param(f, marks=pytest.mark.slow)
                                             for f in SLOW_FORMATS)])
def test_read_manifest_from_the_artifact_its_sidecar_or_what_it_embeds(
        exports: Exports, fmt: str, tmp_path: Path) -> None:
    artifact = exports[fmt]
    manifest = zoo.read_manifest(artifact)
    assert isinstance(manifest, zoo.Manifest)
    assert manifest.export.format == fmt and manifest.model.name == "single_conv"
    assert zoo.read_manifest(f"{artifact}.manifest.json") == manifest
    assert manifest.artifact is not None and manifest.artifact.file == artifact.name

    # an app that ships the artifact alone still reads its manifest (embedded)
    alone = tmp_path / artifact.name
    if artifact.is_dir():
        shutil.copytree(artifact, alone)
    else:
        shutil.copy(artifact, alone)
    embedded = zoo.read_manifest(alone)
    assert embedded == manifest.embedded()
    assert embedded.model.labels == manifest.model.labels


def test_a_sidecar_that_differs_from_the_embedded_copy_is_refused(
        exports: Exports, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(exports["onnx"].parent, folder)
    sidecar = folder / "single_conv.onnx.manifest.json"
    data = json.loads(sidecar.read_text())
    data["model"]["labels"][0] = "not what was exported"
    sidecar.write_text(json.dumps(data))
    with pytest.raises(zoo.ExportError, match="differs from the manifest embedded"):
        zoo.read_manifest(folder / "single_conv.onnx")
    with pytest.raises(zoo.UsageError, match="no such artifact"):
        zoo.read_manifest(tmp_path / "missing.onnx")


def test_an_onnx_runtime_round_trip_with_the_manifest_json_and_numpy(
        exports: Exports) -> None:
    """What docs/apps.md shows for ONNX Runtime, in Python: JSON dict and numpy only."""
    ort = pytest.importorskip("onnxruntime")
    artifact = exports["onnx"]
    manifest = json.loads(Path(f"{artifact}.manifest.json").read_text())
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)

    x = zoo.preprocess(image, manifest, as_numpy=True)
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (1, 3, 64, 96)
    assert np.allclose(x, zoo.preprocess(image, zoo.read_manifest(artifact)).numpy())

    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: x})
    labels = zoo.postprocess(outputs, manifest, size=image)  # a list of numpy arrays
    assert labels.shape == (64, 96)
    assert np.array_equal(labels, zoo.postprocess(outputs[0], manifest, size=image))

    colours = zoo.colorize(labels, manifest)
    typed = zoo.read_manifest(artifact)
    assert np.array_equal(colours, zoo.colorize(labels, typed))
    assert np.array_equal(colours, zoo.colorize(labels, typed.model.palette))
    blended = zoo.overlay(image, colours, 0.5)
    assert blended.shape == (64, 96, 3) and blended.dtype == np.uint8


def test_a_card_dict_reads_a_dict_output_with_numpy_values() -> None:
    card = zoo.get("deeplabv3_resnet50").model_dump(mode="json")
    logits = np.zeros((1, 21, 4, 5), dtype=np.float32)
    logits[0, 15, 1:3, 1:4] = 5.0  # a person in the middle
    labels = zoo.postprocess({"out": logits, "aux": logits}, card)
    assert labels.shape == (4, 5) and set(np.unique(labels)) == {0, 15}
    with pytest.raises(zoo.UsageError, match="not 'out'"):
        zoo.postprocess({"logits": logits}, card)
    with pytest.raises(TypeError, match="no 'output'"):
        zoo.postprocess(logits, {"name": "x"})


def test_a_predictor_from_any_artifact_gives_labels(exports: Exports) -> None:
    """Image in, labels out, through the format's runtime (confined by default)."""
    artifact = exports["onnx"]
    image = np.random.default_rng(3).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    with zoo.Predictor.from_artifact(artifact) as predictor:
        labels = predictor.predict(image)
    manifest = zoo.read_manifest(artifact)
    with zoo.load_artifact(artifact, in_process=True) as inline:
        expected = zoo.postprocess(inline(zoo.preprocess(image, manifest)), manifest, size=image)
    assert labels.shape == (64, 96) and np.array_equal(labels, expected)
