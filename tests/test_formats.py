"""ExecuTorch `.pte`, ONNX and int8: every format x precision fetched, verified, parity-checked.

lraspp_mobilenet_v3_large and single_conv run in the default suite; the ResNet models in a
slow-marked test. Weights are generated state dicts served from a real local HTTP server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import run_zoo
from tests.export_helpers import fetch, make_weights, sha256_file
from tests.httpserver import HTTPTestServer, http_server  # noqa: F401

FORMATS = {"torchscript": ".pt", "lite": ".ptl", "pte": ".pte", "onnx": ".onnx"}
INT8 = ("torchscript", "lite", "pte")
SIZE = "96x128"


def _fetch_all(name: str, tmp_path: Path, server: HTTPTestServer, formats: list[str]) -> None:
    weights = make_weights(name, tmp_path)
    url = server.serve(f"/{weights.name}", weights) + f"#sha256={sha256_file(weights)}"
    home = tmp_path / "home"
    for fmt in formats:
        for precision in ("fp32", "int8"):
            if precision == "int8" and fmt not in INT8:
                continue
            extra = ["--quantize", "int8"] if precision == "int8" else []
            out = tmp_path / "out"
            proc = fetch([name, "--format", fmt, "--weights", url, "--input-size", SIZE,
                          "-o", str(out), "--quiet", *extra], home)
            assert proc.returncode == 0, f"{fmt} {precision}: {proc.stderr[-1500:]}"
            artifact = Path(proc.stdout.strip().splitlines()[-1])
            tag = ".int8" if precision == "int8" else ""
            assert artifact == out / f"{name}{tag}{FORMATS[fmt]}"
            manifest = json.loads(Path(f"{artifact}.manifest.json").read_text())
            assert manifest["export"]["format"] == fmt
            if fmt in ("torchscript", "lite"):  # int8 too: scripted, not a shape-fixed trace
                assert manifest["export"]["method"] == "script"
            if fmt in ("pte", "onnx"):  # tensor-only runtimes: the contract says so
                assert manifest["output"]["kind"] == "tensor"
            if precision == "int8":
                q = manifest["quantization"]
                assert q["scheme"] == "int8"
                assert q["method"] == ("pt2e" if fmt == "pte" else "fx")
                assert q["calibration"]["source"] == "synthetic"
                assert "warning" in q["calibration"]
                assert q["sqnr_db"] > 15 and 0.5 <= q["argmax_agreement"] <= 1
                if fmt != "pte":
                    assert q["details"]["engine"] == "qnnpack"
            else:
                assert manifest["quantization"] is None
            verified = run_zoo(["verify", str(artifact), "--json"])
            report = json.loads(verified.stdout)
            assert verified.returncode == 0, f"{fmt} {precision}: {report}"
            assert report["parity"]["modules"] == {"zoo": False, "torchvision": False}
            assert report["parity"]["max_abs_diff"] <= report["parity"]["limit"]


@pytest.mark.parametrize("name", ["single_conv", "lraspp_mobilenet_v3_large"])
def test_every_format_and_precision_verifies(
    name: str, tmp_path: Path, http_server: HTTPTestServer  # noqa: F811
) -> None:
    _fetch_all(name, tmp_path, http_server, list(FORMATS))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "fcn_resnet50", "deeplabv3_resnet101",
                                  "fcn_resnet101", "deeplabv3_mobilenet_v3_large"])
def test_every_format_and_precision_verifies_slow(
    name: str, tmp_path: Path, http_server: HTTPTestServer  # noqa: F811
) -> None:
    _fetch_all(name, tmp_path, http_server, list(FORMATS))


def test_int8_is_smaller_and_records_fidelity(tmp_path: Path) -> None:
    sizes = {}
    for extra in ([], ["--quantize", "int8"]):
        proc = fetch(["lraspp_mobilenet_v3_large", "--format", "lite", "--weights", "none",
                      "--input-size", SIZE, "-o", str(tmp_path), "--quiet", *extra],
                     tmp_path / "home")
        assert proc.returncode == 0, proc.stderr
        sizes[bool(extra)] = Path(proc.stdout.strip().splitlines()[-1]).stat().st_size
    assert sizes[True] < 0.4 * sizes[False]


def test_calibration_folder_is_used_and_recorded(tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "calib"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (80, 60), (40 * i, 200 - 50 * i, 90)).save(images / f"{i}.png")
    proc = fetch(["single_conv", "--format", "torchscript", "--quantize", "int8",
                  "--calibrate", str(images), "--weights", "none", "-o", str(tmp_path / "o"),
                  "--quiet"], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "o" / "single_conv.int8.pt.manifest.json").read_text())
    assert manifest["quantization"]["calibration"]["source"] == "images"
    assert manifest["quantization"]["calibration"]["images"] == 3
    assert manifest["export"]["options"]["calibrate"]["folder"] == "calib"


def test_pte_dynamic_size_runs_other_sizes(tmp_path: Path) -> None:
    proc = fetch(["single_conv", "--format", "pte", "--dynamic-size", "64:256", "--weights",
                  "none", "-o", str(tmp_path / "o"), "--quiet"], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    artifact = tmp_path / "o" / "single_conv.pte"
    manifest = json.loads(Path(f"{artifact}.manifest.json").read_text())
    assert manifest["export"]["optimizations"]["dynamic_size"] == "64..256"
    assert manifest["export"]["input_shape"] == [1, 3, 256, 256]  # clamped into the range
    script = (
        "import sys, torch; from executorch.runtime import Runtime\n"
        "m = Runtime.get().load_program(sys.argv[1]).load_method('forward')\n"
        "print(list(m.execute([torch.rand(1, 3, 80, 200)])[0].shape))"
    )
    import subprocess

    ran = subprocess.run([sys.executable, "-c", script, str(artifact)], capture_output=True,
                         text=True, check=True)
    assert ran.stdout.strip().splitlines()[-1] == "[1, 23, 80, 200]"
    assert run_zoo(["verify", str(artifact)]).returncode == 0


def test_onnx_metadata_holds_the_manifest(tmp_path: Path) -> None:
    import onnx

    proc = fetch(["single_conv", "--format", "onnx", "--weights", "none", "-o",
                  str(tmp_path / "o"), "--quiet"], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    graph = onnx.load(str(tmp_path / "o" / "single_conv.onnx"))
    props = {p.key: p.value for p in graph.metadata_props}
    embedded = json.loads(props["zoo_manifest"])
    assert embedded["model"]["name"] == "single_conv" and embedded["artifact"] is None
    onnx.checker.check_model(graph)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "onnx", "--quantize", "int8"], "not available for --format onnx"),
        (["--format", "lite", "--dynamic-size", "64:128"], "applies to --format pte only"),
        (["--format", "pte", "--quantize", "int8", "--engine", "x86"], "--engine applies"),
        (["--format", "lite", "--calibrate", "nowhere"], "go with --quantize"),
    ],
)
def test_bad_format_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = fetch(["single_conv", "--weights", "none", "-o", str(tmp_path / "o"), *args],
                 tmp_path / "home")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


@pytest.mark.parametrize(("module", "fmt", "extra"), [("onnx", "onnx", "onnx"),
                                                     ("executorch", "pte", "executorch")])
def test_missing_extra_names_the_pip_line(tmp_path: Path, module: str, fmt: str,
                                          extra: str) -> None:
    # Run the real CLI in a process where the extra cannot be imported.
    code = (
        "import importlib.util, sys\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == sys.argv[1] else _find(n, *a)\n"
        "from zoo.cli.main import main\n"
        "sys.exit(main(sys.argv[2:]))\n"
    )
    import os
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", code, module, "fetch", "single_conv", "--format", fmt,
         "--weights", "none", "-o", str(tmp_path / "o")],
        capture_output=True, text=True, check=False,
        env={**os.environ, "ZOO_HOME": str(tmp_path / "home")},
    )
    assert proc.returncode == 2, proc.stderr
    assert f"pip install 'zoo[{extra}]'" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_list_and_info_show_formats() -> None:
    listed = run_zoo(["list", "--format", "pte", "--json"])
    assert listed.returncode == 0
    assert {"lraspp_mobilenet_v3_large", "single_conv"} <= {r["name"] for r in
                                                            json.loads(listed.stdout)}
    bad = run_zoo(["list", "--format", "coreml"])
    assert bad.returncode == 2 and "choose from lite, onnx, pte, torchscript" in bad.stderr
    info = run_zoo(["info", "single_conv"])
    assert "export formats" in info.stdout
    for fmt in FORMATS:
        assert f"single_conv{FORMATS[fmt]}" in info.stdout


@pytest.mark.parametrize("fmt", ["pte", "onnx"])
def test_zoo_run_drives_pte_and_onnx_artifacts(tmp_path: Path, fmt: str) -> None:
    import numpy as np
    from PIL import Image

    import zoo

    image = tmp_path / "street.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 320, 3), dtype=np.uint8)).save(image)
    proc = fetch(["single_conv", "--format", fmt, "--weights", "none", "--input-size", "96x128",
                  "-o", str(tmp_path / "a"), "--quiet"], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    artifact = Path(proc.stdout.strip().splitlines()[-1])
    ran = run_zoo(["run", "single_conv", str(image), "--artifact", str(artifact),
                   "-o", str(tmp_path / "out")])
    assert ran.returncode == 0, ran.stderr
    labels = np.asarray(Image.open(tmp_path / "out" / "street.labels.png"))
    colour = np.asarray(Image.open(tmp_path / "out" / "street.color.png"))
    assert labels.shape == (200, 320) and colour.shape == (200, 320, 3)
    palette = np.array(zoo.get("single_conv").palette, dtype=np.uint8)
    assert (colour == palette[labels]).all()
