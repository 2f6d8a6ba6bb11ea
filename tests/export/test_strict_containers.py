"""Containers are parsed strictly: ZIP archives (TorchScript, lite, the ZIP appended to a
``.tflite``), ONNX models (no external data) and Core ML packages (folders).

Archives are made by the real writers (torch, zipfile, onnx) and then rewritten the way an
attacker would; the exporters' own readers and ``zoo verify`` / ``zoo run --artifact`` must
refuse them with a reason, never pick one of two readings.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

from tests.conftest import run_zoo
from tests.support.export_helpers import fetch
from zoo.export.containers import (
    ContainerError,
    FolderLimits,
    ZipLimits,
    check_folder,
    check_zip,
)


def _zip(entries: list[tuple[str, bytes]], *, deflate: bool = False, prefix: bytes = b"") -> bytes:
    buffer = io.BytesIO(prefix)
    buffer.seek(0, io.SEEK_END)
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "a", compression=method) as archive:
        warnings.simplefilter("ignore")  # "Duplicate name": that is the point
        for name, data in entries:
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data,
                             compress_type=method)
    return buffer.getvalue()


def _refused(data: bytes, tmp_path: Path, limits: ZipLimits | None = None) -> str:
    path = tmp_path / "archive.zip"
    path.write_bytes(data)
    with pytest.raises(ContainerError) as caught:
        check_zip(path, "archive.zip", limits)
    return str(caught.value)


@pytest.mark.parametrize(("name", "why"), [
    ("../evil.py", "'..'"), ("a/../../evil.py", "'..'"), ("/etc/passwd", "absolute"),
    ("C:/x", "absolute"), ("a\\b", "backslash"), ("a//b", "empty"), ("a\x01b", "control"),
])
def test_unsafe_names_are_refused(name: str, why: str, tmp_path: Path) -> None:
    assert why in _refused(_zip([("ok.txt", b"1"), (name, b"2")]), tmp_path)


def test_duplicates_bombs_and_disagreeing_headers_are_refused(tmp_path: Path) -> None:
    assert "two entries are named 'manifest.json'" in _refused(
        _zip([("manifest.json", b"{}"), ("manifest.json", b"[]")]), tmp_path)
    bomb = _zip([("data/0", bytes(8 << 20))], deflate=True)
    assert len(bomb) < 64 << 10
    assert "decompression bomb" in _refused(bomb, tmp_path)
    assert "more than the 1.0 KiB allowed" in _refused(
        _zip([("data/0", bytes(2048))]), tmp_path, ZipLimits(max_entry_size=1024))
    assert "2 entries, more than the 1" in _refused(
        _zip([("a", b""), ("b", b"")]), tmp_path, ZipLimits(max_entries=1))
    # The local header names another file than the central directory does.
    good = _zip([("manifest.json", b"{}"), ("other.json", b"[]")])
    forged = good.replace(b"other.json", b"evil.json!", 1)  # the first match: local header
    assert "disagree" in _refused(forged, tmp_path)
    # A local header whose size differs from the central directory's.
    at = good.index(b"PK\x03\x04")
    sized = bytearray(good)
    struct.pack_into("<I", sized, at + 22, 999)
    assert "disagree on its size" in _refused(bytes(sized), tmp_path)
    # What passes: the archives zoo's writers make, with data in front (.tflite).
    (tmp_path / "fine.zip").write_bytes(_zip([("a/b.json", b"{}")], prefix=b"\0" * 100))
    assert [e.name for e in check_zip(tmp_path / "fine.zip", "fine.zip")] == ["a/b.json"]


def test_tflite_with_two_manifests_is_refused(tmp_path: Path) -> None:
    from zoo_plugins.formats.tflite import TFLiteExporter, with_associated_files

    flatbuffer = b"\x18\0\0\0TFL3" + bytes(56)
    good = tmp_path / "good.tflite"
    good.write_bytes(with_associated_files(flatbuffer, {"manifest.json": '{"a": 1}'}))
    exporter = TFLiteExporter()
    assert exporter.read_embedded(good) == '{"a": 1}'
    assert exporter.check_container(good) is None
    twice = tmp_path / "twice.tflite"
    twice.write_bytes(_zip([("manifest.json", b'{"a": 1}'), ("manifest.json", b'{"a": 2}')],
                           prefix=flatbuffer))
    assert exporter.read_embedded(twice) is None  # neither reading is taken
    assert "two entries are named 'manifest.json'" in (exporter.check_container(twice) or "")
    bomb = tmp_path / "bomb.tflite"
    bomb.write_bytes(_zip([("manifest.json", b" " * (20 << 20))], deflate=True,
                          prefix=flatbuffer))
    assert exporter.read_embedded(bomb) is None
    assert "manifest.json" in (exporter.check_container(bomb) or "")


def _scripted(tmp_path: Path) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.script(torch.nn.Conv2d(3, 2, 1))
        path = tmp_path / "m.pt"
        torch.jit.save(module, str(path), _extra_files={"manifest.json": '{"m": 1}'})
    return path


def _rewrite(source: Path, dest: Path, extra: list[tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(source) as archive:
        entries = [(i.filename, archive.read(i)) for i in archive.infolist()]
    dest.write_bytes(_zip(entries + extra))


@pytest.mark.parametrize("fmt", ["torchscript", "lite"])
@pytest.mark.parametrize("planted", ["m/../evil.py", "/m/extra/x.json", "m/extra/manifest.json",
                                     "m/data/0", "other/extra/manifest.json"])
def test_scripted_archives_with_unsafe_entries_are_refused(fmt: str, planted: str,
                                                           tmp_path: Path) -> None:
    from zoo.export import get_exporter

    exporter = get_exporter(fmt)
    original = _scripted(tmp_path)
    assert exporter.read_embedded(original) == '{"m": 1}'
    assert exporter.check_container(original) is None
    hostile = tmp_path / "hostile.pt"
    _rewrite(original, hostile, [(planted, b'{"m": 2}')])
    assert exporter.read_embedded(hostile) is None
    reason = exporter.check_container(hostile) or ""
    assert "hostile.pt" in reason and ("two entries" in reason or "'..'" in reason or
                                       "absolute" in reason or "top-level" in reason), reason
    assert [f.ok for f in exporter.inspect(hostile, None)] == [False]  # type: ignore[arg-type]


def _rehash(artifact: Path) -> None:
    """Record the artifact's present bytes in its sidecar (a forged pair), no SHA256SUMS."""
    sidecar = artifact.with_name(artifact.name + ".manifest.json")
    data = json.loads(sidecar.read_text())
    body = artifact.read_bytes()
    data["artifact"].update(sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    sidecar.write_text(json.dumps(data))
    (artifact.parent / "SHA256SUMS").unlink(missing_ok=True)


def _export(tmp_path: Path, fmt: str) -> Path:
    proc = fetch(["single_conv", "--format", fmt, "--weights", "none", "--input-size", "32x32",
                  "-o", str(tmp_path / "out"), "--quiet"], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return Path(proc.stdout.strip().splitlines()[-1])


def test_verify_refuses_a_torchscript_archive_with_a_second_manifest(tmp_path: Path) -> None:
    artifact = _export(tmp_path, "torchscript")
    inner = zipfile.ZipFile(artifact).namelist()[0].split("/")[0]
    staged = tmp_path / "staged.pt"
    _rewrite(artifact, staged, [(f"{inner}/extra/manifest.json", b"{}")])
    os.replace(staged, artifact)
    _rehash(artifact)
    proc = run_zoo(["verify", str(artifact), "--json"])
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["verdict"] != "verified"
    assert not report["ran"]


@pytest.fixture
def onnx_external(tmp_path: Path) -> Path:
    """A single_conv ONNX export whose initializers were moved to ``weights.bin`` beside it,
    with a sidecar manifest that records the new model bytes (hashes pass)."""
    pytest.importorskip("onnx")
    import onnx

    artifact = _export(tmp_path, "onnx")
    model = onnx.load(str(artifact))
    onnx.external_data_helper.convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    onnx.save_model(model, str(artifact))
    assert (artifact.parent / "weights.bin").is_file()
    _rehash(artifact)
    return artifact


def test_onnx_external_data_is_refused_by_verify(onnx_external: Path) -> None:
    from zoo.export import get_exporter

    reason = get_exporter("onnx").check_container(onnx_external) or ""
    assert "external data 'weights.bin'" in reason and "model.conv_layer1.0.weight" in reason
    proc = run_zoo(["verify", str(onnx_external), "--json"])
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert proc.returncode == 1 and not report["ran"]
    assert not checks["container"]["ok"]  # refused before anything else reads it
    assert "weights.bin" in checks["container"]["detail"]


def test_onnx_external_data_in_a_subgraph_is_found(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from zoo_plugins.formats.onnx import external_data_problem

    tensor = helper.make_tensor("hidden", TensorProto.FLOAT, [1], [0.0])
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="/etc/passwd")
    branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=tensor)], "b", [],
                               [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    assert "'/etc/passwd'" in (external_data_problem(model, "x.onnx") or "")
    assert external_data_problem(onnx.ModelProto(), "x.onnx") is None


def test_onnx_external_data_is_not_run_by_zoo_run(onnx_external: Path, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "in.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(image)
    proc = run_zoo(["run", "single_conv", str(image), "--artifact", str(onnx_external),
                    "-o", str(tmp_path / "res")])
    assert proc.returncode == 1 and "xternal data" in proc.stderr  # the child has no copy
    assert not any((tmp_path / "res").glob("*.png"))


def test_onnx_external_data_is_not_loaded_in_process(onnx_external: Path,
                                                     tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "in.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(image)
    proc = run_zoo(["run", "single_conv", str(image), "--artifact", str(onnx_external),
                    "--in-process", "-o", str(tmp_path / "res")])
    assert proc.returncode != 0 and "external data" in proc.stderr


def test_folders_hold_only_plain_files(tmp_path: Path) -> None:
    package = tmp_path / "m.mlpackage"
    (package / "Data" / "com.apple.CoreML").mkdir(parents=True)
    (package / "Manifest.json").write_text("{}")
    (package / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"x" * 10)
    assert check_folder(package, "m.mlpackage") == [
        ("Data/com.apple.CoreML/model.mlmodel", 10), ("Manifest.json", 2)]
    with pytest.raises(ContainerError, match="more than the 5 allowed"):
        check_folder(package, "m.mlpackage", FolderLimits(max_file_size=5))
    (package / "Data" / "link").symlink_to("/etc/passwd")
    with pytest.raises(ContainerError, match="Data/link is a symbolic link"):
        check_folder(package, "m.mlpackage")


def test_coreml_package_listing_must_match_its_files(tmp_path: Path) -> None:
    from zoo_plugins.formats.coreml import CoreMLExporter, read_spec

    package = tmp_path / "m.mlpackage"
    model = package / "Data" / "com.apple.CoreML" / "model.mlmodel"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    listing = {"fileFormatVersion": "1.0.0", "rootModelIdentifier": "A",
               "itemInfoEntries": {"A": {"path": "com.apple.CoreML/model.mlmodel"}}}
    (package / "Manifest.json").write_text(json.dumps(listing))
    (package / "Data" / "planted.py").write_text("print('hi')")
    with pytest.raises(ValueError, match=r"Data/planted\.py belongs to no item"):
        read_spec(package)
    (package / "Data" / "planted.py").unlink()
    (package / "Data" / "weights").symlink_to(tmp_path)
    assert "symbolic link" in (CoreMLExporter().check_container(package) or "")
