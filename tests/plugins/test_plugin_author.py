"""What a plugin author met writing a model plugin and a format plugin from the docs alone
(issue 21): each finding, fixed, as a test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import yaml

import zoo
from tests.conftest import run_zoo
from zoo.export import Exporter


def test_a_file_url_in_a_cards_weights_is_refused_when_the_catalogue_is_read(
        tmp_path: Path) -> None:
    """`zoo list` accepted it, `zoo fetch` refused it, and beside an http URL it was skipped."""
    card = zoo.get("single_conv").model_dump(mode="json", exclude={"plugin"})
    card["name"] = "local_weights"
    card["weights"] = [{"name": "mine", "urls": ["https://example.org/w.pth",
                                                 "file:///data/w.pth"],
                        "sha256": "0" * 64, "trained_on": "drone"}]
    card["default_weights"] = "mine"
    registry = tmp_path / "cards.yaml"
    registry.write_text(yaml.safe_dump({"version": 1, "models": [card]}, sort_keys=False))
    proc = run_zoo(["list"], env={"ZOO_REGISTRY": str(registry)})
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "cards.yaml" in line and "file:///data/w.pth" in line and "--weights PATH" in line
    assert "Traceback" not in proc.stderr


class _ThirdPartyFormat(Exporter):
    name = "fancy"
    suffix = ".fancy"
    runtime = "zoo_plugins.formats.runtimes.onnx"
    requires: ClassVar[tuple[tuple[str, str], ...]] = (
        ("zoo_no_such_module", "fancy-runtime>=2"),)

    def prepare(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def save(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError


def test_a_third_party_format_names_its_own_install_line() -> None:
    import zoo.export

    fmt = _ThirdPartyFormat()
    with pytest.raises(zoo.UsageError, match=r"pip install 'fancy-runtime>=2'") as info:
        fmt.check_available()
    assert "zoo[" not in str(info.value)

    class WithHint(_ThirdPartyFormat):
        install_hint = "pip install 'zoo-fancy[runtime]'"

    assert WithHint().missing_extra() == "pip install 'zoo-fancy[runtime]'"
    from zoo.export import get_exporter

    assert get_exporter("onnx").install_line("onnx") == "pip install 'zoo[onnx]'"


def test_a_wrong_output_height_is_named_as_such_not_as_channels() -> None:
    from zoo.errors import PluginError
    from zoo.export.pipeline import check_contract

    card = zoo.get("single_conv")

    class Shrinks(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, card.num_classes, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)[:, :, ::2]

    model = Shrinks()
    x = torch.zeros(1, 3, 32, 48)
    with pytest.raises(PluginError) as info:
        check_contract(model, card, False, "mine", {"noise": (x, model(x))})
    text = str(info.value)
    assert "height H is 16, expected 32" in text and "channels" not in text.split(":", 1)[1]


def test_zoo_publish_publishes_every_export_in_a_folder(tmp_path: Path) -> None:
    home = {"ZOO_HOME": str(tmp_path / "home")}
    for fmt in ("torchscript", "lite"):
        proc = run_zoo(["fetch", "single_conv", "--weights", "none", "--format", fmt,
                        "--input-size", "32x48", "-o", str(tmp_path / "models"), "--quiet"],
                       env=home)
        assert proc.returncode == 0, proc.stderr
    store = (tmp_path / "store").as_uri()
    proc = run_zoo(["publish", str(tmp_path / "models"), "--store", store, "--json"], env=home)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert sorted(a["artifact"] for a in report["artifacts"]) == ["single_conv.pt",
                                                                  "single_conv.ptl"]
    listing = json.loads(run_zoo(["store", "list", "--store", store, "--json"],
                                 env=home).stdout)
    assert sorted(r["format"] for r in listing["records"]) == ["lite", "torchscript"]


def test_a_runtime_may_return_numpy_and_a_wrong_type_is_named() -> None:
    """Verify's child reads predictions with zoo.export.golden: numpy (ONNX Runtime, LiteRT,
    OpenVINO) is a prediction like a tensor; anything else names what load() must return."""
    import numpy as np

    from zoo.export.golden import select_output, summarize

    logits = np.random.default_rng(0).normal(size=(1, 3, 4, 5)).astype(np.float32)
    as_numpy = summarize(select_output([logits], None), 0)
    as_tensor = summarize(torch.from_numpy(logits), 0)
    assert as_numpy == as_tensor
    assert summarize(select_output({"out": logits}, "out"), 0) == as_tensor
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor or a numpy array"):
        select_output("not a tensor", None)
