"""The example third-party plugin from a clean install to ``zoo run`` and back out again.

``examples/zoo-example-plugin`` is built into a wheel, ``pip install --target``-ed into an
empty folder and driven through ``zoo list``, ``info``, ``fetch --format lite``, ``verify`` and
``run`` in subprocesses that see it only through ``PYTHONPATH``, the way a user's shell does.
Its model has its own architecture, labels and palettes, BGR 0..255 input and a bare tensor
output. docs/plugins.md shows its files verbatim; that is checked here too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tests.cli.test_run_cli import calibrate
from tests.conftest import ROOT, run_zoo
from tests.inference.test_imaging import H, W, make_image
from tests.support.plugins import EXAMPLE, build_wheels, install, pythonpath, uninstall

MODEL = "example_tiny_segnet"
MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # BGR order, as the card says
STD = np.array([57.375, 57.12, 58.395], np.float32)
HAZARDS = [(0, 0, 0), (0, 0, 0), (0, 0, 0), (255, 191, 0), (255, 0, 0)]


def zoo_ok(args: list[str], env: dict[str, str]) -> tuple[Any, str]:
    proc = run_zoo(args, env=env)
    assert proc.returncode == 0, proc.stderr
    return (json.loads(proc.stdout) if "--json" in args else proc.stdout), proc.stderr


def tiny_segnet_weights(target: Path, path: Path) -> Path:
    """Calibrated weights for the installed TinySegNet, built from the installed source."""
    spec = importlib.util.spec_from_file_location(
        "_example_model", target / "zoo_example_plugin" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(3)
    model = calibrate(module.TinySegNet(5), 5, seed=3)
    torch.save(model.state_dict(), path)
    return path


def test_example_plugin_end_to_end_from_a_clean_install(tmp_path: Path) -> None:
    wheel = build_wheels(["zoo-example-plugin"], tmp_path / "build")["zoo-example-plugin"]
    target = install([wheel], tmp_path / "site")
    env = {**pythonpath(target), "ZOO_HOME": str(tmp_path / "home")}

    rows, err = zoo_ok(["list", "--json"], env)
    assert err == ""
    row = next(r for r in rows if r["name"] == MODEL)
    assert (row["plugin"], row["output"], row["classes"]) == ("example", "tensor", 5)
    card, _ = zoo_ok(["info", MODEL, "--json"], env)
    assert card["preprocessing"]["color_order"] == "BGR"
    assert card["palettes"]["hazards"] == [list(c) for c in HAZARDS]

    weights = tiny_segnet_weights(target, tmp_path / "tiny.pth")
    out, _ = zoo_ok(["fetch", MODEL, "--format", "lite", "--weights", str(weights),
                     "-o", str(tmp_path / "app"), "--quiet"], env)
    artifact = tmp_path / "app" / f"{MODEL}.ptl"
    assert out.strip() == str(artifact)
    sidecar = Path(f"{artifact}.manifest.json").read_text()
    facts = json.loads(sidecar)["weights"]  # named by what they are, not where they lay
    assert facts["source"] == "weights that are not the card's, identified by their sha256"
    assert facts["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert "tiny.pth" not in sidecar
    assert str(tmp_path) not in sidecar  # the manifest ships in the app: no local folders
    report, _ = zoo_ok(["verify", str(artifact), "--json"], env)
    assert report["verdict"] == "verified", report
    assert {"name": "runtime isolation", "ok": True,
            "detail": "ran without zoo or torchvision"} in report["checks"]

    # the plugin's own format: exported, verified and run with no change to zoo
    out, _ = zoo_ok(["fetch", MODEL, "--format", "example_traced", "--weights", str(weights),
                     "-o", str(tmp_path / "app"), "--quiet"], env)
    traced = tmp_path / "app" / f"{MODEL}.traced.pt"
    assert out.strip() == str(traced)
    report, _ = zoo_ok(["verify", str(traced), "--json"], env)
    assert report["verdict"] == "verified", report
    assert report["parity"][0]["result_type"] == "tensor"

    # a 320x200 image, and one already at the model's 96x128 (HxW) to check BGR by hand
    street, small = tmp_path / "street.png", tmp_path / "small.png"
    Image.fromarray(make_image(seed=5)).save(street)
    small_pixels = make_image(seed=6, height=96, width=128)
    Image.fromarray(small_pixels).save(small)
    images = [str(street), str(small)]
    eager, _ = zoo_ok(["run", MODEL, *images, "--weights", str(weights), "--palette",
                       "hazards", "-o", str(tmp_path / "eager"), "--json"], env)
    lite, _ = zoo_ok(["run", MODEL, *images, "--artifact", str(artifact), "--palette",
                      "hazards", "-o", str(tmp_path / "lite"), "--json"], env)
    assert (eager["runtime"], lite["runtime"]) == ("eager", "lite")
    traced_run, _ = zoo_ok(["run", MODEL, str(small), "--artifact", str(traced), "--json",
                            "-o", str(tmp_path / "traced")], env)
    assert traced_run["runtime"] == "example_traced"
    assert traced_run["images"][0]["classes"] == lite["images"][1]["classes"]
    for e, a in zip(eager["images"], lite["images"], strict=True):
        assert e["input_shape"] == a["input_shape"] == [1, 3, 96, 128]  # exact [H, W]
        pics = {}
        for run, result in (("eager", e), ("lite", a)):
            pics[run] = {k: Image.open(p) for k, p in result["outputs"].items()}
        assert np.array_equal(np.asarray(pics["eager"]["labels"]),
                              np.asarray(pics["lite"]["labels"]))
        assert e["classes"] == a["classes"]
        color = np.asarray(pics["lite"]["color"])
        assert {tuple(c) for c in color.reshape(-1, 3).tolist()} <= set(HAZARDS)
    (street_e, small_e) = eager["images"]
    assert Image.open(street_e["outputs"]["color"]).size == (W, H)
    assert {c["label"] for c in street_e["classes"]} >= {"road", "vehicle"}  # varied output

    # the BGR, unscaled, Detectron2-normalised input, computed by hand: same labels
    x = (small_pixels[:, :, ::-1].astype(np.float32) - MEAN) / STD
    spec = importlib.util.spec_from_file_location(
        "_example_model2", target / "zoo_example_plugin" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TinySegNet(5)
    model.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        by_hand = model.eval()(torch.from_numpy(x.copy()).permute(2, 0, 1)[None])[0].argmax(0)
    labels = np.asarray(Image.open(small_e["outputs"]["labels"]))
    assert np.array_equal(labels, by_hand.numpy())
    rgb_order = model(torch.from_numpy(((small_pixels - MEAN) / STD).astype(np.float32))
                      .permute(2, 0, 1)[None])[0].argmax(0)
    assert not torch.equal(rgb_order, by_hand)  # the channel order matters for this model

    # the guide's "Test it" file, run by pytest against the installed plugin
    guide = tmp_path / "guide" / "test_guide.py"
    guide.parent.mkdir()
    guide.write_text(guide_test_snippet(), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(guide)], capture_output=True, text=True, cwd=guide.parent,
                          env={**os.environ, **env}, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "3 passed" in proc.stdout

    # uninstall: the models leave `zoo list`; the artifact still runs (it needs no plugin)
    uninstall("zoo-example-plugin", target)
    rows, _ = zoo_ok(["list", "--json"], env)
    assert MODEL not in {r["name"] for r in rows}
    gone = run_zoo(["run", MODEL, str(street), "--weights", str(weights), "-o",
                    str(tmp_path / "gone")], env=env)
    assert gone.returncode == 2
    assert gone.stderr.strip() == f"zoo: error: unknown model {MODEL!r}; see `zoo list`"
    again, _ = zoo_ok(["run", MODEL, str(street), "--artifact", str(artifact), "-o",
                       str(tmp_path / "again"), "--json"], env)
    assert again["images"][0]["classes"] == lite["images"][0]["classes"]


DOC = ROOT / "docs" / "plugins.md"
FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", re.S)


def test_the_plugin_guide_shows_the_example_files_verbatim() -> None:
    blocks = dict(FILE_BLOCK.findall(DOC.read_text(encoding="utf-8")))
    assert sorted(blocks) == ["pyproject.toml", "zoo_example_plugin/__init__.py",
                              "zoo_example_plugin/formats.py", "zoo_example_plugin/model.py",
                              "zoo_example_plugin/models.yaml", "zoo_example_plugin/runtime.py"]
    for name, text in blocks.items():
        assert text == (EXAMPLE / name).read_text(encoding="utf-8"), f"docs/plugins.md: {name}"


def guide_test_snippet() -> str:
    """The one Python block of docs/plugins.md that holds tests."""
    text = DOC.read_text(encoding="utf-8")
    python = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def test_" in b]
    assert len(python) == 1
    return python[0]


def test_the_plugin_guide_commands_are_real() -> None:
    text = DOC.read_text(encoding="utf-8")
    shell = "".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    commands = re.findall(r"^(zoo \w+)", shell, re.M)
    from zoo.cli.main import build_parser

    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    used = {c.split()[1] for c in commands}
    assert used >= {"plugins", "list", "info", "fetch", "verify", "run"}
    assert used <= set(choices)


def test_the_plugin_guide_names_every_hook() -> None:
    from zoo.catalog import hookspecs

    hooks = sorted(n for n in vars(hookspecs) if n.startswith("zoo_"))
    assert hooks == ["zoo_builders", "zoo_exporters", "zoo_models"]
    text = DOC.read_text(encoding="utf-8")
    assert [h for h in hooks if f"`{h}()`" not in text] == []
