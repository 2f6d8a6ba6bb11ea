"""The Python API (``zoo.list_models``, ``zoo.get``) and the promise that looking up never
imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import zoo
from tests.conftest import ROOT
from zoo.catalog.registry import builtin_registry_path
from zoo.catalog.yamlio import load_yaml


def test_list_models() -> None:
    names = zoo.list_models()
    assert names == sorted(names)
    assert len(names) == 7
    assert zoo.list_models(pattern=None) == names
    assert zoo.list_models("deeplabv3_*") == [
        "deeplabv3_mobilenet_v3_large",
        "deeplabv3_resnet101",
        "deeplabv3_resnet50",
    ]
    assert zoo.list_models(pattern="*_resnet50") == ["deeplabv3_resnet50", "fcn_resnet50"]
    assert zoo.list_models("no_such_*") == []


def test_get_returns_the_validated_card() -> None:
    card = zoo.get("deeplabv3_resnet50")
    assert isinstance(card, zoo.ModelCard)
    assert isinstance(card.preprocessing, zoo.Preprocessing)
    assert isinstance(card.output, zoo.OutputContract)
    assert isinstance(card.weights[0], zoo.WeightsSource)
    assert card.preprocessing.mean == (0.485, 0.456, 0.406)
    assert card.labels[15] == "person"
    assert card.plugin == "deeplabv3"
    assert zoo.get("deeplabv3_resnet50") is card  # one registry per process


def test_get_unknown_raises_with_suggestions() -> None:
    with pytest.raises(zoo.UnknownModelError) as info:
        zoo.get("deeplabv3")
    err = info.value
    assert isinstance(err, zoo.ZooError) and isinstance(err, zoo.UsageError)
    assert err.name == "deeplabv3"
    assert "deeplabv3_resnet50" in err.suggestions


def test_registry_with_extra_files(tmp_path: Path) -> None:
    raw = next(
        c for c in load_yaml(builtin_registry_path())["models"] if c["name"] == "single_conv"
    )
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"models": [{**raw, "name": "my_model"}]}))
    reg = zoo.registry(extra_files=[str(path)])
    assert reg.get("my_model").num_classes == 23
    assert "my_model" not in zoo.list_models()
    assert zoo.registry() is zoo.registry()


def test_public_names() -> None:
    assert sorted(zoo.__all__) == zoo.__all__
    for name in zoo.__all__:
        assert hasattr(zoo, name), name
    from zoo.catalog.plugins import hookimpl

    assert zoo.hookimpl is hookimpl


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )


def test_lookups_do_not_import_torch() -> None:
    code = """
import json, sys
import zoo
names = zoo.list_models()
card = zoo.get("deeplabv3_resnet50")
zoo.get("single_conv")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "torchvision", "numpy"})
print(json.dumps({"names": names, "mean": card.preprocessing.mean, "heavy": heavy}))
"""
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert len(out["names"]) == 7 and out["mean"] == [0.485, 0.456, 0.406]
    assert out["heavy"] == []


def _imported(*args: str) -> list[str]:
    """Modules ``python -X importtime ARGS`` imported (the trace is real: it is parsed)."""
    result = _python("-X", "importtime", *args)
    assert result.returncode == 0, result.stderr
    # lines look like "import time:  self [us] | cumulative | imported package"
    return [
        ln.rsplit("|", 1)[1].strip()
        for ln in result.stderr.splitlines()
        if ln.startswith("import time:")
    ]


def _roots(modules: list[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_importtime_of_zoo_list_shows_no_torch() -> None:
    cold = _imported("-m", "zoo", "list")  # compiles registry.yaml: YAML and pydantic
    assert "zoo.catalog.registry" in cold and "pydantic" in cold and "yaml" in cold
    assert not _roots(cold) & {"torch", "torchvision"}
    warm = _imported("-m", "zoo", "list")  # reads the compiled summaries only
    assert "zoo.catalog.registry" in warm and "zoo.catalog.compiled" in warm
    assert not _roots(warm) & {"torch", "torchvision", "pydantic", "yaml", "numpy"}


def test_import_zoo_is_cheap() -> None:
    modules = _imported("-c", "import zoo; zoo.ZooError; zoo.list_models")
    assert "zoo" in modules
    assert not _roots(modules) & {"torch", "pydantic", "yaml", "pluggy", "rich", "numpy"}
