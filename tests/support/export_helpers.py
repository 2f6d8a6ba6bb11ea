"""Helpers for export tests: generate real weight files, fetch through the CLI, run artifacts
in a clean process (no zoo, no torchvision) the way a device runtime would."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, run_zoo

# Runs in a fresh interpreter: loads an artifact with torch only and prints its full output.
CLEAN_RUNNER = r"""
import json, sys
import torch
fmt, path, spec, golden_src, out_file = json.loads(sys.argv[1])
golden = {}
exec(golden_src, golden)  # zoo/export/golden.py: stdlib + torch only
if fmt == "lite":
    from torch.jit.mobile import _load_for_lite_interpreter
    m = _load_for_lite_interpreter(path)
else:
    m = torch.jit.load(path)
x = golden["golden_input"](spec)
with torch.no_grad():
    r = m(x)
kind = "dict" if isinstance(r, dict) else "tensor"
keys = sorted(r) if isinstance(r, dict) else None
t = r["out"] if isinstance(r, dict) else r
torch.save(t, out_file)
print(json.dumps({"kind": kind, "keys": keys, "shape": list(t.shape),
                  "torchvision": "torchvision" in sys.modules, "zoo": "zoo" in sys.modules}))
"""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_weights(name: str, folder: Path, seed: int = 1) -> Path:
    """A state dict for built-in model ``name`` in torchvision's layout (aux head included
    where torchvision's COCO weights have one), from a seeded random init."""
    import torch

    import zoo
    from zoo.catalog.registry import default_registry

    card = zoo.get(name)
    torch.manual_seed(seed)
    has_aux = "aux" in card.output.optional_keys
    model = default_registry().builder(card)(card, aux=has_aux).eval()
    # A raw init's logits reach the hundreds; trained ones are of order 10. Scale the class
    # convolutions so the output has a trained model's scale and 1e-4 means what it says.
    with torch.no_grad():
        scale = model(torch.rand(1, 3, 64, 64))
        scale = (scale["out"] if isinstance(scale, dict) else scale).abs().max().item()
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.out_channels == card.num_classes:
                module.weight.mul_(10.0 / scale)
                if module.bias is not None:
                    module.bias.mul_(10.0 / scale)
    path = folder / f"{name}-{seed}.pth"
    torch.save(model.state_dict(), path)
    return path


def fetch(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``zoo fetch ARGS`` in a subprocess with its own ZOO_HOME."""
    return run_zoo(["fetch", *args], env={"ZOO_HOME": str(home), **env})


def golden_case(manifest: dict, name: str = "scene") -> dict:
    """The manifest's golden case called ``name`` ('noise' or 'scene')."""
    return next(c for c in manifest["golden"]["cases"] if c["name"] == name)


def run_clean(fmt: str, artifact: Path, manifest: dict, out_file: Path,
              case: str = "scene") -> dict:
    """Run one of the manifest's golden inputs through ``artifact`` in a clean process."""
    source = (ROOT / "zoo" / "export" / "golden.py").read_text(encoding="utf-8")
    request = [fmt, str(artifact), golden_case(manifest, case)["input"], source, str(out_file)]
    proc = subprocess.run([sys.executable, "-I", "-c", CLEAN_RUNNER, json.dumps(request)],
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def eager_output(name: str, weights: Path | None, manifest: dict, case: str = "scene"):
    """The eager model's output on one of the manifest's golden inputs, built in-process."""
    import torch

    import zoo
    from zoo.export.build import build_model
    from zoo.export.golden import golden_input, select_output
    from zoo.weights.resolve import UNTRAINED, resolve_weights

    card = zoo.get(name)
    resolved = resolve_weights(card, str(weights)) if weights else UNTRAINED
    model = build_model(card, resolved)
    with torch.no_grad():
        out = model(golden_input(golden_case(manifest, case)["input"]))
    return select_output(out, card.output.key)


def tiny_segmenter_onnx(stride: int = 2, dynamic: bool = False):
    """A seeded segmenter's shape in miniature (a strided conv to 4 classes, then a bilinear
    upsample back to the input size) and its ONNX export (opset 17, input ``input``, output
    ``out``; with ``dynamic``, free ``height`` and ``width``): (model, ONNX bytes)."""
    import io

    import torch

    class Segmenter(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=stride, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(self.conv(x), size=x.shape[-2:],
                                                   mode="bilinear", align_corners=False)

    torch.manual_seed(0)
    model = Segmenter().eval()
    axes = {"input": {2: "height", 3: "width"}, "out": {2: "height", 3: "width"}}
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), buffer, dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["out"],
                      dynamic_axes=axes if dynamic else None)
    return model, buffer.getvalue()
