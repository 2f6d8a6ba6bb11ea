"""`zoo fetch NAME --format torchscript|lite`: artifacts, manifests, checksums, parity, verify.

Weights are real state dicts generated here and served from a real HTTP server on 127.0.0.1;
artifacts are loaded with torch's own loaders in processes that import neither zoo nor
torchvision.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import BUILTIN_MODELS, run_zoo
from tests.support.export_helpers import eager_output, fetch, make_weights, run_clean, sha256_file
from tests.support.httpserver import HTTPTestServer, http_server  # noqa: F401

BUILTIN = BUILTIN_MODELS
SUFFIX = {"torchscript": ".pt", "lite": ".ptl"}
SMALL = "64x96"  # non-square on purpose: H and W must never swap


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


def _manifest(artifact: Path) -> dict:
    return json.loads(artifact.with_name(artifact.name + ".manifest.json").read_text())


def _serve(server: HTTPTestServer, path: Path) -> str:
    return server.serve(f"/models/{path.name}", path) + f"#sha256={sha256_file(path)}"


# The default run keeps one model per code path (DeepLabV3-ResNet, LR-ASPP-MobileNet, the
# seed's single conv); the ResNet-101 variants, FCN and DeepLabV3-MobileNet are in -m slow.
DEFAULT_EXPORTS = {"deeplabv3_resnet50", "lraspp_mobilenet_v3_large", "single_conv"}


@pytest.mark.parametrize("name", [
    n if n in DEFAULT_EXPORTS else pytest.param(n, marks=pytest.mark.slow) for n in BUILTIN])
def test_every_builtin_model_exports_to_both_formats_and_verifies(
    name: str, tmp_path: Path, weights_dir: Path, http_server: HTTPTestServer  # noqa: F811
) -> None:
    weights = make_weights(name, weights_dir)
    url = _serve(http_server, weights)
    for fmt, suffix in SUFFIX.items():
        out = tmp_path / fmt
        proc = fetch([name, "--format", fmt, "--weights", url, "--input-size", SMALL,
                      "-o", str(out), "--quiet"], tmp_path / "home")
        assert proc.returncode == 0, proc.stderr
        artifact = out / f"{name}{suffix}"
        assert proc.stdout.strip().splitlines()[-1] == str(artifact)
        manifest = _manifest(artifact)
        assert manifest["untrained"] is False
        assert manifest["weights"]["sha256"] == sha256_file(weights)
        assert manifest["export"]["format"] == fmt
        assert manifest["export"]["method"] == "script"
        assert manifest["export"]["input_shape"] == [1, 3, 64, 96]
        assert manifest["artifact"]["sha256"] == sha256_file(artifact)

        verified = run_zoo(["verify", str(artifact), "--json"])
        report = json.loads(verified.stdout)
        assert verified.returncode == 0, report
        assert report["verdict"] == "verified"
        assert [c["name"] for c in report["parity"]] == ["noise", "scene"]
        assert all(c["verdict"]["max_abs_diff"] <= 1e-4 for c in report["parity"])
        assert any(c["name"] == "runtime isolation" and c["ok"] for c in report["checks"])

        clean = run_clean(fmt, artifact, manifest, tmp_path / f"{fmt}.out")
        assert clean["torchvision"] is False and clean["zoo"] is False
        expected_kind = "tensor" if name == "single_conv" else "dict"
        assert clean["kind"] == expected_kind
        if expected_kind == "dict":
            assert clean["keys"] == ["out"]  # aux head dropped by default
        assert clean["shape"] == [1, 21 if name != "single_conv" else 23, 64, 96]
    # full-tensor parity against the eager model, built independently in this process
    import torch

    eager = eager_output(name, weights, manifest)
    for fmt in SUFFIX:
        got = torch.load(tmp_path / f"{fmt}.out")
        assert got.shape == eager.shape
        assert (got - eager).abs().max().item() <= 1e-4


def test_seed_numbers_deeplabv3_resnet50_keep_aux_torchscript(
    tmp_path: Path, weights_dir: Path, http_server: HTTPTestServer  # noqa: F811
) -> None:
    weights = make_weights("deeplabv3_resnet50", weights_dir)
    proc = fetch(["deeplabv3_resnet50", "--format", "torchscript", "--keep-aux",
                  "--weights", _serve(http_server, weights), "--input-size", "400x400",
                  "-o", str(tmp_path / "out"), "--quiet"], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    artifact = tmp_path / "out" / "deeplabv3_resnet50.pt"
    size_mb = artifact.stat().st_size / 1e6
    assert 160 <= size_mb <= 176, size_mb  # the tutorial's "about 168 MB"
    manifest = _manifest(artifact)
    assert manifest["output"]["optional_keys"] == ["aux"]
    script = (
        "import torch, sys; m = torch.jit.load(sys.argv[1]); r = m(torch.rand(1, 3, 400, 400));"
        "print(sorted(r), list(r['out'].shape), list(r['aux'].shape))"
    )
    ran = subprocess.run([sys.executable, "-c", script, str(artifact)],
                         capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "['aux', 'out'] [1, 21, 400, 400] [1, 21, 400, 400]"


@pytest.fixture
def lite_artifact(tmp_path: Path) -> Path:
    proc = fetch(["single_conv", "--format", "lite", "--weights", "none", "-o",
                  str(tmp_path / "out")], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert "UNTRAINED" in proc.stderr
    return tmp_path / "out" / "single_conv.ptl"


def test_untrained_export_says_so_everywhere(lite_artifact: Path) -> None:
    manifest = _manifest(lite_artifact)
    assert manifest["untrained"] is True and "UNTRAINED" in manifest["warning"]
    with zipfile.ZipFile(lite_artifact) as archive:
        # the inner folder is 'archive', as torch names in-memory archives (the lite archive
        # is built in memory so that a full disk cannot abort the process)
        embedded = json.loads(archive.read("archive/extra/manifest.json"))
    assert embedded["untrained"] is True and embedded["artifact"] is None
    verified = run_zoo(["verify", str(lite_artifact)])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "VERIFIED" in verified.stdout and "UNTRAINED" in verified.stdout


def test_sha256sums_passes_sha256sum_check(lite_artifact: Path) -> None:
    folder = lite_artifact.parent
    listed = (folder / "SHA256SUMS").read_text().splitlines()
    assert {line.split("  ")[1] for line in listed} == {
        "single_conv.ptl", "single_conv.ptl.manifest.json", "single_conv.ptl.ops.yaml"}
    proc = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_operator_list_is_yaml_of_root_ops(lite_artifact: Path) -> None:
    ops = yaml.safe_load(lite_artifact.with_name("single_conv.ptl.ops.yaml").read_text())
    assert ops == sorted(ops)
    assert "aten::conv2d" in ops and "aten::relu" in ops


def test_lite_manifest_records_bytecode_and_skipped_xnnpack(lite_artifact: Path) -> None:
    from torch.jit.mobile import _get_model_bytecode_version

    facts = _manifest(lite_artifact)["export"]
    assert facts["bytecode_version"] == _get_model_bytecode_version(str(lite_artifact))
    assert facts["method"] == "script"
    assert facts["optimizations"]["freeze"] == "applied"
    assert facts["optimizations"]["optimize_for_mobile"].startswith(("applied", "skipped"))


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "edit_manifest", "drop_sums_line"])
def test_verify_fails_on_damage(lite_artifact: Path, damage: str) -> None:
    manifest_path = lite_artifact.with_name(lite_artifact.name + ".manifest.json")
    if damage == "flip_byte":
        data = bytearray(lite_artifact.read_bytes())
        data[len(data) // 2] ^= 0xFF
        lite_artifact.write_bytes(bytes(data))
    elif damage == "truncate":
        lite_artifact.write_bytes(lite_artifact.read_bytes()[:-100])
    elif damage == "edit_manifest":
        manifest = json.loads(manifest_path.read_text())
        manifest["model"]["labels"][1] = "not-paved-area"
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    else:
        sums = lite_artifact.parent / "SHA256SUMS"
        sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines()
                                if not line.endswith("single_conv.ptl")))
    proc = run_zoo(["verify", str(lite_artifact)])
    assert proc.returncode == 1, proc.stdout
    assert "NOT VERIFIED" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_verify_missing_file_is_usage_error(tmp_path: Path) -> None:
    proc = run_zoo(["verify", str(tmp_path / "nope.ptl")])
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


def test_repeat_fetch_is_a_cache_hit(tmp_path: Path) -> None:
    args = ["single_conv", "--format", "torchscript", "--weights", "none",
            "-o", str(tmp_path / "o")]
    first = fetch(args, tmp_path / "home")
    assert first.returncode == 0, first.stderr
    cached = next((tmp_path / "home" / "artifacts").rglob("single_conv.pt"))
    stamp = cached.stat().st_mtime_ns
    second = fetch(args, tmp_path / "home")
    assert second.returncode == 0, second.stderr
    assert "cache hit" in second.stderr
    assert "preparing" not in second.stderr
    assert cached.stat().st_mtime_ns == stamp


def test_exports_are_byte_identical_across_processes_and_folders(tmp_path: Path) -> None:
    # TorchScript/lite use single_conv: for models that call F.interpolate (lraspp, deeplab)
    # TorchScript and lite: the flagship model, in tests/export/test_reproducible.py.
    cases = [("lraspp_mobilenet_v3_large", "pte", ".pte"),
             ("lraspp_mobilenet_v3_large", "onnx", ".onnx")]
    for name, fmt, suffix in cases:
        outs = []
        for run in ("a", "b"):
            out = tmp_path / f"{fmt}-{run}" / "nested"
            proc = fetch([name, "--format", fmt, "--weights", "none",
                          "--input-size", SMALL, "-o", str(out), "--quiet"],
                         tmp_path / f"home-{run}")
            assert proc.returncode == 0, proc.stderr
            outs.append(out / f"{name}{suffix}")
        assert outs[0].read_bytes() == outs[1].read_bytes()
        assert _manifest(outs[0]) == _manifest(outs[1])


def test_bytecode_backport_to_7_verifies_and_is_reproducible(tmp_path: Path) -> None:
    from torch.jit.mobile import _get_model_bytecode_version

    artifacts = []
    for run in ("a", "b"):  # torch's backport names constants by memory address: undone
        proc = fetch(["single_conv", "--format", "lite", "--bytecode-version",
                      "7", "--weights", "none", "--input-size", SMALL, "-o",
                      str(tmp_path / run), "--quiet"], tmp_path / f"home-{run}")
        assert proc.returncode == 0, proc.stderr
        artifacts.append(tmp_path / run / "single_conv.ptl")
    artifact = artifacts[0]
    assert artifact.read_bytes() == artifacts[1].read_bytes()
    assert _get_model_bytecode_version(str(artifact)) == 7
    assert _manifest(artifact)["export"]["bytecode_version"] == 7
    with zipfile.ZipFile(artifact) as archive:
        constants = [n for n in archive.namelist() if "/constants/" in n]
    assert constants and all(len(Path(n).stem) <= 4 for n in constants)
    assert run_zoo(["verify", str(artifact)]).returncode == 0


def test_failed_backport_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "o"
    proc = fetch(["single_conv", "--format", "lite", "--bytecode-version", "3", "--weights",
                  "none", "-o", str(out)], tmp_path / "home")
    assert proc.returncode == 1
    assert "bytecode version 3" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())
    leftovers = [p for p in (tmp_path / "home" / "artifacts").rglob("*") if p.is_file()
                 and not p.name.endswith(".lock")]
    assert leftovers == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "nosuch"], "unknown format 'nosuch'; choose from "),
        (["--format", "torchscript", "--bytecode-version", "7"],
         "--bytecode-version is not supported by --format torchscript"),
        (["--format", "torchscript", "--precision", "fp16"],
         "--precision fp16 is not available for --format torchscript"),
        (["--format", "lite", "--input-size", "64by64"], "is not HEIGHTxWIDTH"),
    ],
)
def test_bad_export_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = fetch(["single_conv", "--weights", "none", "-o", str(tmp_path / "o"), *args],
                 tmp_path / "home")
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "o").exists()


def test_keep_aux_on_model_without_aux_is_usage_error(tmp_path: Path) -> None:
    proc = fetch(["lraspp_mobilenet_v3_large", "--format", "lite", "--keep-aux", "--weights",
                  "none", "-o", str(tmp_path / "o")], tmp_path / "home")
    assert proc.returncode == 2
    assert "no auxiliary head" in proc.stderr


def test_cache_lists_and_clears_exports(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for fmt in ("torchscript", "lite"):
        proc = fetch(["single_conv", "--format", fmt, "--weights", "none", "-o",
                      str(tmp_path / "o"), "--quiet"], home)
        assert proc.returncode == 0, proc.stderr
    env = {"ZOO_HOME": str(home)}
    listed = json.loads(run_zoo(["cache", "list", "--artifacts", "--json"], env=env).stdout)
    assert sorted(r["file"] for r in listed) == ["single_conv.pt", "single_conv.ptl"]
    assert all(r["model"] == "single_conv" and r["size"] > 0 for r in listed)
    assert run_zoo(["cache", "clear", "lraspp_mobilenet_v3_large"], env=env).returncode == 0
    assert len(json.loads(run_zoo(["cache", "list", "--artifacts", "--json"], env=env).stdout)) == 2
    cleared = run_zoo(["cache", "clear", "single_conv"], env=env)
    assert cleared.returncode == 0 and "removed 2 cached exports" in cleared.stdout
    assert json.loads(run_zoo(["cache", "list", "--artifacts", "--json"], env=env).stdout) == []
    assert (tmp_path / "o" / "single_conv.ptl").is_file()  # outputs are the user's, kept


def test_a_plugin_can_add_an_export_format(tmp_path: Path) -> None:
    import zoo
    from zoo.catalog.plugins import PluginHost
    from zoo.catalog.registry import Registry
    from zoo.export import available_formats, get_exporter
    from zoo.export.base import ExportOptions
    from zoo.export.pipeline import export_artifact
    from zoo.weights.resolve import UNTRAINED
    from zoo_plugins.formats.torchscript import TorchScriptExporter

    class HalfPrecision(TorchScriptExporter):
        name = "torchscript_fp16"
        suffix = ".fp16.pt"
        description = "TorchScript with float16 weights"

        def prepare(self, model, example, card, options):
            return super().prepare(model.half().float(), example, card, options)

    class FormatPlugin:
        @zoo.hookimpl
        def zoo_exporters(self) -> dict[str, object]:
            return {"torchscript_fp16": HalfPrecision}

    host = PluginHost()
    host.load_entry_points()
    host.register(FormatPlugin(), name="fp16-format")
    assert "torchscript_fp16" in available_formats(host)
    assert isinstance(get_exporter("torchscript_fp16", host), HalfPrecision)
    registry = Registry(host=host)
    card = registry.get("single_conv")
    outcome = export_artifact(card, UNTRAINED, "torchscript_fp16", tmp_path / "o",
                              ExportOptions(input_size=(64, 96)), registry=registry)
    assert outcome.artifact.name == "single_conv.fp16.pt"
    assert outcome.manifest.export.format == "torchscript_fp16"
    assert (tmp_path / "o" / "SHA256SUMS").read_text().count("single_conv.fp16.pt") == 3
