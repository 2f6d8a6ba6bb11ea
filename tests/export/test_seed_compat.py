"""Checkpoints saved from the seeds' own model code load into zoo (issue 10, item 6).

Seed 003 trains its own ``SingleConvolution``; torchvision users save torchvision's models.
Both kinds of state dict must load through zoo's builders unchanged, export and verify.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tests.conftest import run_zoo
from tests.support.export_helpers import fetch
from zoo.catalog.registry import default_registry
from zoo.export.build import build_model
from zoo.weights.resolve import ResolvedWeights


# Verbatim from seed 003 ("Image Segmentation - Single Layer Model", models/single_conv.py).
class SingleConvolution(nn.Module):
    def __init__(self):
        super(SingleConvolution, self).__init__()  # noqa: UP008 (the seed's own spelling)
        self.conv_layer1 = nn.Sequential (
            nn.Conv2d(3, 23, kernel_size = 3, padding=1),
            nn.ReLU()
        )
    def forward(self, x):
        output = self.conv_layer1(x)
        return output


def local(path: Path) -> ResolvedWeights:
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return ResolvedWeights(path, sha, str(path), None, False)


@pytest.fixture(scope="module")
def seed_model() -> SingleConvolution:
    torch.manual_seed(3)
    model = SingleConvolution().eval()
    with torch.no_grad():  # a trained-looking bias, so untrained weights cannot pass for it
        model.conv_layer1[0].bias.copy_(torch.linspace(-1, 1, 23))
    return model


@pytest.fixture
def seed_checkpoint(seed_model: SingleConvolution, tmp_path: Path) -> Path:
    """What the seed's training script writes: ``torch.save(model.state_dict(), path)``."""
    path = tmp_path / "single_conv_seed003.pth"
    torch.save(seed_model.state_dict(), path)
    return path


def test_zoo_model_has_exactly_the_seeds_names() -> None:
    card = default_registry().get("single_conv")
    zoo_model = default_registry().builder(card)(card)
    assert list(zoo_model.state_dict()) == list(SingleConvolution().state_dict())
    assert list(zoo_model.state_dict()) == ["conv_layer1.0.weight", "conv_layer1.0.bias"]
    assert sum(p.numel() for p in zoo_model.parameters()) == card.num_params == 644


def test_seed_003_checkpoint_builds_and_computes_what_the_seed_does(
    seed_model: SingleConvolution, seed_checkpoint: Path
) -> None:
    card = default_registry().get("single_conv")
    model = build_model(card, local(seed_checkpoint))
    assert not model.training
    for key, value in seed_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.rand(1, 3, 40, 60)
    with torch.no_grad():
        assert torch.equal(model(x), seed_model(x))


def test_seed_003_checkpoint_exports_and_verifies(
    seed_model: SingleConvolution, seed_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = fetch(["single_conv", "--weights", str(seed_checkpoint), "--format", "torchscript",
                  "--input-size", "40x60", "-o", str(out), "--quiet"], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    artifact = out / "single_conv.pt"
    manifest = json.loads((out / "single_conv.pt.manifest.json").read_text())
    assert manifest["weights"]["sha256"] == hashlib.sha256(seed_checkpoint.read_bytes()).hexdigest()
    verify = run_zoo(["verify", str(artifact)])
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "VERIFIED" in verify.stdout
    x = torch.rand(1, 3, 40, 60)  # the artifact holds the seed's weights, not an untrained init
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(artifact))(x), seed_model(x))


# torchvision users save torchvision's own models: weights=None, the card's class count, and
# the auxiliary head when the card's weights carry one. Resnet backbones are slow to build.
_TORCHVISION = [
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
    pytest.param("deeplabv3_resnet50", marks=pytest.mark.slow),
    pytest.param("deeplabv3_resnet101", marks=pytest.mark.slow),
    pytest.param("fcn_resnet50", marks=pytest.mark.slow),
    pytest.param("fcn_resnet101", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", _TORCHVISION)
def test_torchvision_state_dict_loads(name: str, tmp_path: Path) -> None:
    from torchvision.models import segmentation

    card = default_registry().get(name)
    includes_aux = card.weights[0].includes_aux if card.weights else False
    kwargs: dict[str, object] = {"weights": None, "weights_backbone": None,
                                 "num_classes": card.num_classes}
    if includes_aux:
        kwargs["aux_loss"] = True
    torch.manual_seed(11)
    reference = getattr(segmentation, card.architecture)(**kwargs).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)

    model = build_model(card, local(path), keep_aux=includes_aux)
    assert list(model.state_dict()) == list(reference.state_dict())
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["out"], reference(x)["out"], rtol=0, atol=0)
