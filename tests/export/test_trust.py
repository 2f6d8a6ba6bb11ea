"""VERIFIED must mean verified: the card's contract, NaN outputs, isolation, honest identity,
manifest file names. Each test here failed on the main branch before issue 10."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_zoo

SMALL = (64, 96)


def _export(tmp_path: Path, fmt: str = "torchscript", registry=None, name: str = "single_conv",
            out: str = "o"):
    from zoo.catalog.registry import default_registry
    from zoo.export.base import ExportOptions
    from zoo.export.pipeline import export_artifact
    from zoo.weights.resolve import UNTRAINED

    registry = registry or default_registry()
    card = registry.get(name)
    return export_artifact(card, UNTRAINED, fmt, tmp_path / out,
                           ExportOptions(input_size=SMALL), registry=registry)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified single_conv TorchScript export (artifact path), made once."""
    folder = tmp_path_factory.mktemp("trust")
    home = folder / "home"
    proc = run_zoo(["fetch", "single_conv", "--weights", "none", "--format", "torchscript",
                    "--input-size", "64x96", "-o", str(folder / "o"), "--quiet"],
                   env={"ZOO_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    return folder / "o" / "single_conv.pt"


def _copy_export(exported: Path, dest: Path) -> Path:
    shutil.copytree(exported.parent, dest)
    return dest / exported.name


def _reseal(artifact: Path) -> None:
    """Rewrite the sidecar's hash and SHA256SUMS to match the (replaced) artifact bytes, as a
    buggy exporter or an attacker who controls both files would."""
    import hashlib

    sidecar = artifact.with_name(artifact.name + ".manifest.json")
    manifest = json.loads(sidecar.read_text())
    data = artifact.read_bytes()
    manifest["artifact"]["sha256"] = hashlib.sha256(data).hexdigest()
    manifest["artifact"]["size"] = len(data)
    sidecar.write_text(json.dumps(manifest))
    (artifact.parent / "SHA256SUMS").unlink(missing_ok=True)


def _replace_with_module(artifact: Path, body: str) -> None:
    """Swap the artifact for a scripted module with ``body`` as forward, same embedded
    manifest, so only the outputs differ."""
    import importlib.util

    import torch

    from zoo_plugins.formats.torchscript import _read_zip_extra

    embedded = _read_zip_extra(artifact, "manifest.json")
    source = artifact.parent.parent / f"evil_{abs(hash(body))}.py"  # TorchScript reads source
    source.write_text(textwrap.dedent(f"""
        import torch

        class Evil(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                {body}
    """))
    spec = importlib.util.spec_from_file_location(source.stem, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scripted = torch.jit.script(module.Evil())
    torch.jit.save(scripted, str(artifact), _extra_files={"manifest.json": embedded})
    _reseal(artifact)


def _verify_json(artifact: Path, **env: str) -> tuple[int, dict]:
    proc = run_zoo(["verify", str(artifact), "--json"], env=env or None)
    return proc.returncode, json.loads(proc.stdout)


def _failed(report: dict) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in report["checks"] if not c["ok"]}


def test_a_sound_export_is_verified(exported: Path) -> None:
    code, report = _verify_json(exported)
    assert code == 0 and report["verdict"] == "verified", report
    names = [c["name"] for c in report["checks"]]
    assert {"golden noise", "golden scene", "output contract", "runtime isolation"} <= set(names)


def test_nan_outputs_are_not_verified(exported: Path, tmp_path: Path) -> None:
    artifact = _copy_export(exported, tmp_path / "nan")
    _replace_with_module(artifact, "return torch.full((1, 23, x.shape[2], x.shape[3]), "
                                   "float('nan'))")
    code, report = _verify_json(artifact)
    assert code == 1 and report["verdict"] == "failed"
    failed = _failed(report)
    assert "non-finite" in failed["golden noise"] and "non-finite" in failed["golden scene"]


def test_wrong_channel_count_in_the_artifact_fails_the_contract(exported: Path,
                                                                tmp_path: Path) -> None:
    artifact = _copy_export(exported, tmp_path / "chan")
    _replace_with_module(artifact, "return torch.zeros(1, 25, x.shape[2], x.shape[3])")
    code, report = _verify_json(artifact)
    assert code == 1
    assert "[1, 25," in _failed(report)["output contract"]


def test_argmax_disagreement_is_judged(exported: Path, tmp_path: Path) -> None:
    """Tiny values within tolerance everywhere sampled, but the argmax flipped: a logits
    tensor of near-zeros where one channel wins everywhere."""
    artifact = _copy_export(exported, tmp_path / "argmax")
    _replace_with_module(artifact, "y = torch.zeros(1, 23, x.shape[2], x.shape[3])\n"
                         "                y[:, 22] = 1e-6\n                return y")
    code, report = _verify_json(artifact)
    assert code == 1
    failed = _failed(report)
    assert any("argmax agreement" in d for d in failed.values()), failed


def test_a_module_planted_beside_the_artifact_is_never_imported(exported: Path,
                                                                tmp_path: Path) -> None:
    """The parity child starts in a private folder with ``python -I``: neither the folder the
    user runs from (where a download landed) nor PYTHONPATH can put code into it."""
    folder, elsewhere = tmp_path / "planted", tmp_path / "pythonpath"
    artifact = _copy_export(exported, folder)
    elsewhere.mkdir()
    marker = tmp_path / "IMPORTED"
    plant = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    for module in ("torch", "json", "sitecustomize", "usercustomize", "types", "zlib"):
        (folder / f"{module}.py").write_text(plant)
    (elsewhere / "torch.py").write_text(plant)
    zoo_script = Path(sys.executable).with_name("zoo")  # the console script, as users run it
    proc = subprocess.run([str(zoo_script), "verify", artifact.name, "--json"], cwd=folder,
                          env={**os.environ, "PYTHONPATH": str(elsewhere)},
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["verdict"] == "verified"
    assert not marker.exists(), marker.read_text()


@pytest.mark.parametrize("field,value", [
    (("artifact", "file"), "../single_conv.pt"),
    (("export", "file"), "/etc/passwd"),
    (("export", "operators_file"), "sub/ops.yaml"),
])
def test_file_names_in_a_manifest_are_bare_names(exported: Path, tmp_path: Path,
                                                 field: tuple[str, str], value: str) -> None:
    artifact = _copy_export(exported, tmp_path / "names")
    sidecar = artifact.with_name(artifact.name + ".manifest.json")
    manifest = json.loads(sidecar.read_text())
    manifest[field[0]][field[1]] = value
    sidecar.write_text(json.dumps(manifest))
    code, report = _verify_json(artifact)
    assert code == 1
    assert "bare file name" in _failed(report)["manifest"]
    proc = run_zoo(["run", "single_conv", str(tmp_path / "img.png"), "--artifact",
                    str(artifact)])
    assert proc.returncode != 0


def test_the_schema_publishes_the_bare_name_rule() -> None:
    from zoo.export.manifest import Manifest

    schema = json.dumps(Manifest.model_json_schema())
    assert "bare file name" in schema and '"pattern"' in schema


def _rewrite_manifest(artifact: Path, change) -> None:
    """Change the manifest in the sidecar *and* inside the artifact, consistently, as someone
    who controls both files would."""
    import torch

    from zoo.export.manifest import Manifest

    sidecar = artifact.with_name(artifact.name + ".manifest.json")
    data = json.loads(sidecar.read_text())
    change(data)
    manifest = Manifest.model_validate(data)
    module = torch.jit.load(str(artifact))
    torch.jit.save(module, str(artifact),
                   _extra_files={"manifest.json": manifest.embedded().to_json()})
    sidecar.write_text(manifest.to_json())
    _reseal(artifact)


def test_manifest_cannot_loosen_the_check_beyond_policy(exported: Path, tmp_path: Path) -> None:
    artifact = _copy_export(exported, tmp_path / "loose")

    def loosen(data: dict) -> None:
        data["golden"]["atol"] = 1e9
        data["golden"]["min_argmax_agreement"] = 0.0

    _rewrite_manifest(artifact, loosen)
    code, report = _verify_json(artifact)
    assert code == 1
    assert "looser than zoo allows" in _failed(report)["manifest policy"]


def test_verify_json_names_an_unknown_format(exported: Path, tmp_path: Path) -> None:
    artifact = _copy_export(exported, tmp_path / "fmt")
    sidecar = artifact.with_name(artifact.name + ".manifest.json")
    manifest = json.loads(sidecar.read_text())
    manifest["export"]["format"] = "no_such_format"
    sidecar.write_text(json.dumps(manifest))
    code, report = _verify_json(artifact)
    assert code == 1 and report["verdict"] == "failed"
    assert "no_such_format" in _failed(report)["format"]


def test_a_hanging_runtime_is_bounded(exported: Path, tmp_path: Path) -> None:
    artifact = _copy_export(exported, tmp_path / "hang")
    _replace_with_module(artifact, "while True:\n                    x = x + 1\n"
                         "                return x")
    proc = run_zoo(["verify", str(artifact), "--json", "--time-limit", "5"], timeout=120)
    assert proc.returncode == 1
    assert "did not finish within 5 s" in json.dumps(json.loads(proc.stdout))


# -- the card's contract at export time --------------------------------------------------


def _plugin_registry(build_source: str, tmp_path: Path, package: str):
    """A registry whose 'single_conv' builder comes from a plugin package in ``tmp_path``."""
    import zoo
    from zoo.catalog.plugins import PluginHost
    from zoo.catalog.registry import Registry

    pkg = tmp_path / package
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(build_source))
    sys.path.insert(0, str(tmp_path))

    class Builders:
        @zoo.hookimpl
        def zoo_builders(self) -> dict[str, str]:
            return {"single_conv_variant": f"{package}:build"}

    host = PluginHost()
    host.load_entry_points()
    host.register(Builders(), name=package)
    registry = Registry(host=host)
    card = registry.get("single_conv").model_copy(update={"name": "single_conv_variant",
                                                          "architecture": "single_conv_variant"})
    return registry, card


BUILD = """
from torch import nn

def build(card, aux=False):
    return nn.Sequential(nn.Conv2d(3, card.num_classes + {extra}, 3, padding=1), nn.ReLU())
"""


def test_a_builder_with_the_wrong_channel_count_is_refused(tmp_path: Path) -> None:
    from zoo.errors import PluginError
    from zoo.export.base import ExportOptions
    from zoo.export.pipeline import export_artifact
    from zoo.weights.resolve import UNTRAINED

    registry, card = _plugin_registry(BUILD.format(extra=2), tmp_path, "wrong_channels_plugin")
    card = card.model_copy(update={"num_params": 3 * 25 * 9 + 25})  # only the channels lie
    with pytest.raises(PluginError) as err:
        export_artifact(card, UNTRAINED, "torchscript", tmp_path / "o",
                        ExportOptions(input_size=SMALL), registry=registry)
    text = str(err.value)
    assert "wrong_channels_plugin" in text and "single_conv_variant" in text
    assert "output.channels" in text and "25" in text
    assert not (tmp_path / "o").exists()  # nothing written


def test_a_builder_with_the_wrong_parameter_count_is_refused(tmp_path: Path) -> None:
    from zoo.errors import PluginError
    from zoo.export.base import ExportOptions
    from zoo.export.pipeline import export_artifact
    from zoo.weights.resolve import UNTRAINED

    registry, card = _plugin_registry(BUILD.format(extra=0), tmp_path, "wrong_params_plugin")
    card = card.model_copy(update={"num_params": 999})
    with pytest.raises(PluginError, match="num_params"):
        export_artifact(card, UNTRAINED, "torchscript", tmp_path / "o",
                        ExportOptions(input_size=SMALL), registry=registry)


def test_editing_a_plugins_builder_invalidates_its_cache_entries(tmp_path: Path) -> None:
    from zoo.export.base import ExportOptions
    from zoo.export.identity import package_digest
    from zoo.export.pipeline import export_artifact
    from zoo.weights.resolve import UNTRAINED

    registry, card = _plugin_registry(BUILD.format(extra=0), tmp_path, "editable_plugin")
    options = ExportOptions(input_size=SMALL)
    first = export_artifact(card, UNTRAINED, "torchscript", tmp_path / "o", options,
                            registry=registry)
    again = export_artifact(card, UNTRAINED, "torchscript", tmp_path / "o", options,
                            registry=registry)
    assert not first.cache_hit and again.cache_hit
    init = tmp_path / "editable_plugin" / "__init__.py"
    init.write_text(init.read_text() + "\n# a fix: the builder changed\n")
    package_digest.cache_clear()  # a new process would read the files afresh
    edited = export_artifact(card, UNTRAINED, "torchscript", tmp_path / "o", options,
                             registry=registry)
    assert not edited.cache_hit
    assert edited.manifest.export.identity != first.manifest.export.identity
    assert edited.manifest.export.builder.source_sha256 != \
        first.manifest.export.builder.source_sha256


def test_an_output_edited_in_place_does_not_reach_the_cache(tmp_path: Path) -> None:
    first = _export(tmp_path)
    recorded = first.artifact.read_bytes()
    st = first.artifact.stat()
    with open(first.artifact, "r+b") as fh:  # flip one byte, keep the size and the mtime
        fh.seek(len(recorded) // 2)
        byte = fh.read(1)
        fh.seek(len(recorded) // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(first.artifact, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = _export(tmp_path, out="p")
    assert again.cache_hit
    assert again.artifact.read_bytes() == recorded
    assert os.stat(again.artifact).st_ino != os.stat(first.artifact).st_ino
    reinstalled = _export(tmp_path)  # the edited output is put back to the recorded bytes
    assert reinstalled.artifact.read_bytes() == recorded
