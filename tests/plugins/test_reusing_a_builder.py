"""docs/plugins.md "Reusing a builder": its catalogue is run as written (issue 21).

The YAML block is read from the page, passed to zoo as a registry file, and its model is
built by the built-in torchvision builder it names: the counts, the output contract and the
aux head interact exactly as the page says.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_zoo
from zoo.catalog.plugins import PluginHost
from zoo.catalog.registry import Registry

DOC = ROOT / "docs" / "plugins.md"
NAME = "portrait_deeplabv3_mobilenet"


def doc_catalogue(tmp_path: Path) -> Path:
    """The page's YAML block under "## Reusing a builder", as a file."""
    section = DOC.read_text(encoding="utf-8").split("## Reusing a builder", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    assert block is not None, "docs/plugins.md: the Reusing a builder section lost its YAML"
    path = tmp_path / "portrait.yaml"
    path.write_text(block.group(1), encoding="utf-8")
    return path


def test_the_docs_catalogue_lists_cleanly(tmp_path: Path) -> None:
    path = doc_catalogue(tmp_path)
    listed = run_zoo(["list", NAME, "--registry", str(path)])
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr == ""  # a valid card, and its builder exists
    row = listed.stdout.splitlines()[1].split()
    assert row[:4] == [NAME, "deeplabv3", "2", "dict[out,aux?]"]
    assert row[-1] == "deeplabv3"  # the plugin whose builder it reuses


@pytest.mark.parametrize("aux", [False, True], ids=["no-aux", "keep-aux"])
def test_the_docs_card_builds_with_the_counts_and_outputs_it_states(
        tmp_path: Path, aux: bool) -> None:
    from zoo.export.pipeline import check_contract

    registry = Registry(extra_files=[doc_catalogue(tmp_path)])
    card = registry.get(NAME)
    plugin, _ = registry.builder_ref(card)
    model = registry.builder(card)(card, aux=aux).eval()
    h, w = card.preprocessing.input_size
    x = torch.rand(1, 3, h // 4, w // 4)
    with torch.no_grad():
        out = model(x)
    check_contract(model, card, aux, plugin, {"noise": (x, out)})  # counts, key, channels
    assert set(out) == ({"out", "aux"} if aux else {"out"})
    assert out["out"].shape == (1, 2, h // 4, w // 4)


def test_another_family_name_builds_no_aux_head(tmp_path: Path) -> None:
    text = doc_catalogue(tmp_path).read_text()
    text = text.replace("family: deeplabv3 ", "family: portrait ")
    text = text.replace("optional_keys: [aux], ", "")
    text = re.sub(r"\n *num_params_with_aux: .*", "", text)
    path = tmp_path / "other_family.yaml"
    path.write_text(text)
    registry = Registry(host=_builtins(), extra_files=[path])
    card = registry.get(NAME)
    model = registry.builder(card)(card, aux=True)  # the builder keys the head on family
    assert not hasattr(model, "aux_classifier") or model.aux_classifier is None
    assert sum(p.numel() for p in model.parameters()) == card.num_params


def _builtins() -> PluginHost:
    host = PluginHost()
    host.load_entry_points()
    return host
