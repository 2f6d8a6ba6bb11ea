"""A real client outside Python (issue 21): clients/js/segment.mjs reads a zoo manifest,
preprocesses a PNG as it says, runs the .onnx artifact with onnxruntime-node, and must agree
with `zoo run --artifact` on the same image.

.ci/run installs the client's npm packages and sets ZOO_REQUIRE_CLIENTS=1, which turns a
missing ``node`` or missing packages into a failure instead of a skip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, run_zoo

CLIENT = ROOT / "clients" / "js"
REQUIRED = os.environ.get("ZOO_REQUIRE_CLIENTS", "") == "1"


def _node() -> str:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed (Node.js 18+ runs clients/js)"
    elif not (CLIENT / "node_modules" / "onnxruntime-node").is_dir():
        problem = ("clients/js has no node_modules: run `npm install --ignore-scripts` in "
                   "clients/js (as .ci/run does)")
    if problem is not None:
        if REQUIRED:
            pytest.fail(f"ZOO_REQUIRE_CLIENTS=1 but {problem}")
        pytest.skip(problem)
    assert node is not None
    return node


def scene(height: int, width: int, seed: int) -> Image.Image:
    """A smooth picture with a few shapes (a natural image's statistics, roughly)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack([120 + 80 * np.sin(6 * x + s) * np.cos(4 * y - s) for s in (0, 1, 2)], -1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2)
        disk = (y - cy) ** 2 + (x - cx) ** 2 < r * r
        img[disk] = rng.integers(0, 256, 3)
    img += rng.normal(0, 4, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def varied_weights(name: str, folder: Path) -> Path:
    """Seeded random weights whose argmax varies over an image: the class convolutions'
    biases are zeroed (with them, a random init predicts one class everywhere)."""
    import torch

    import zoo
    from zoo.catalog.registry import default_registry

    card = zoo.get(name)
    torch.manual_seed(1)
    model = default_registry().builder(card)(card, aux="aux" in card.output.optional_keys)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.out_channels == card.num_classes \
                    and module.bias is not None:
                module.bias.zero_()
    path = folder / f"{name}-varied.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("model", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_the_node_client_agrees_with_zoo_run(model: str, tmp_path: Path) -> None:
    node = _node()
    weights = varied_weights(model, tmp_path)
    home = {"ZOO_HOME": str(tmp_path / "home")}
    proc = run_zoo(["fetch", model, "--weights", str(weights), "--format", "onnx",
                    "-o", str(tmp_path / "models"), "--quiet"], env=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    artifact = Path(proc.stdout.strip())
    manifest = json.loads(Path(f"{artifact}.manifest.json").read_text())
    assert manifest["output"]["kind"] == "tensor"  # the card's dict, exported as a tensor

    image = tmp_path / "scene.png"
    scene(520, 520, seed=7).save(image)
    py = run_zoo(["run", model, str(image), "--artifact", str(artifact), "-o",
                  str(tmp_path / "py"), "--json"], env=home)
    assert py.returncode == 0, py.stderr[-2000:]
    js = subprocess.run([node, str(CLIENT / "segment.mjs"), str(artifact), str(image),
                         str(tmp_path / "js")], capture_output=True, text=True, timeout=300,
                        check=False)
    assert js.returncode == 0, js.stderr[-2000:]
    summary = json.loads(js.stdout)

    ours = np.array(Image.open(tmp_path / "py" / "scene.labels.png"))
    theirs = np.array(Image.open(summary["labels"]))
    assert ours.shape == theirs.shape == (520, 520)
    agreement = float((ours == theirs).mean())
    assert agreement >= 0.999, agreement
    assert set(np.unique(ours)) == {c["index"] for c in summary["classes"]}
    assert len(summary["classes"]) >= 5  # the check means something: not one flat class
    names = {c["index"]: c["name"] for c in summary["classes"]}
    assert all(names[i] == manifest["model"]["labels"][i] for i in names)
    colours = np.array(Image.open(summary["color"]).convert("RGB"))
    palette = np.array(manifest["model"]["palette"], dtype=np.uint8)
    assert np.array_equal(colours, palette[theirs])


def test_the_node_client_refuses_a_missing_manifest_with_one_line(tmp_path: Path) -> None:
    node = _node()
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    scene(8, 8, 0).save(tmp_path / "i.png")
    js = subprocess.run([node, str(CLIENT / "segment.mjs"), str(tmp_path / "m.onnx"),
                         str(tmp_path / "i.png"), str(tmp_path / "o")], capture_output=True,
                        text=True, timeout=60, check=False)
    assert js.returncode == 2
    lines = js.stderr.strip().splitlines()
    assert len(lines) == 1 and "m.onnx.manifest.json" in lines[0] and "zoo fetch" in lines[0]
