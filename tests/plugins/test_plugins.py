"""Plugins installed for real: pip-built wheels in ``--target`` folders, found by entry point.

The packages are ``examples/zoo-example-plugin`` and the purpose-built ones in
``tests/plugins/`` (broken on import, an invalid card, a raising hook, a name clash). Each is
built once per session and installed into its own folder; a test picks the folders it wants
on ``PYTHONPATH`` and runs ``zoo`` in a subprocess, the way a user's shell would.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUILTIN_MODELS, run_zoo
from tests.support.plugins import (
    install,
    pythonpath,
    session_site,
    session_wheels,
    session_workdir,
    uninstall,
)

BUILTIN = set(BUILTIN_MODELS)
EXAMPLE_MODEL = "example_tiny_segnet"


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return session_wheels(session_workdir(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def site(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """distribution name -> a ``--target`` folder holding that distribution alone."""
    return session_site(session_workdir(tmp_path_factory.getbasetemp()))


def zoo_json(args: list[str], env: dict[str, str]) -> tuple[Any, str]:
    result = run_zoo([*args, "--json"], env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def plugin_rows(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    rows, _ = zoo_json(["plugins"], env)
    return {r["name"]: r for r in rows}


# -- the example plugin ----------------------------------------------------------------------


def test_example_plugin_appears_in_list_info_and_plugins(site: dict[str, Path]) -> None:
    env = pythonpath(site["zoo-example-plugin"])
    rows, stderr = zoo_json(["list"], env)
    assert stderr == ""
    assert {r["name"] for r in rows} == {*BUILTIN, EXAMPLE_MODEL}
    row = next(r for r in rows if r["name"] == EXAMPLE_MODEL)
    assert row == {
        "name": EXAMPLE_MODEL,
        "family": "tiny_segnet",
        "classes": 5,
        "output": "tensor",
        "params": 14581,
        "weights_size": None,
        "plugin": "example",
    }

    card, _ = zoo_json(["info", EXAMPLE_MODEL], env)
    pre = card["preprocessing"]
    assert (pre["color_order"], pre["scale_divisor"], pre["resize"]) == ("BGR", 1.0, "exact")
    assert pre["input_size"] == [96, 128]
    assert card["output"] == {
        "kind": "tensor",
        "key": None,
        "optional_keys": [],
        "channels": 5,
        "semantics": "logits",
    }
    assert card["labels"] == ["background", "road", "lane_marking", "vehicle", "pedestrian"]
    assert len(card["palette"]) == len(card["palettes"]["hazards"]) == 5
    assert card["weights"] == [] and card["plugin"] == "example"

    example = plugin_rows(env)["example"]
    assert example == {
        "name": "example",
        "module": "zoo_example_plugin",
        "dist": "zoo-example-plugin 0.1.0",
        "status": "ok",
        "models": [EXAMPLE_MODEL],
        "error": None,
        "problems": [],
    }


@pytest.fixture
def example_on_sys_path(site: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The installed example visible to this process (entry points read sys.path live)."""
    monkeypatch.syspath_prepend(str(site["zoo-example-plugin"]))
    yield
    for name in [m for m in sys.modules if m.split(".")[0] == "zoo_example_plugin"]:
        del sys.modules[name]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.usefixtures("example_on_sys_path")
def test_example_model_builds_lazily_matches_its_card_and_scripts() -> None:
    import zoo
    from zoo.catalog.registry import default_registry

    card = zoo.get(EXAMPLE_MODEL)
    assert card.plugin == "example"
    assert "zoo_example_plugin" in sys.modules
    assert "zoo_example_plugin.model" not in sys.modules  # listing never imports the builder

    import torch

    model = default_registry().builder(card)(card, aux=False).eval()
    assert sum(p.numel() for p in model.parameters()) == card.num_params == 14581
    scripted = torch.jit.script(model)
    for h, w in [tuple(card.preprocessing.input_size), (95, 127)]:
        x = torch.rand(2, 3, h, w)
        with torch.no_grad():
            eager, script = model(x), scripted(x)
        assert isinstance(script, torch.Tensor)  # a bare tensor, as the card says
        assert script.shape == (2, card.num_classes, h, w)
        torch.testing.assert_close(script, eager)


def test_uninstalling_the_example_removes_its_models(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    target = install([wheels["zoo-example-plugin"]], tmp_path / "site")
    env = pythonpath(target)
    rows, _ = zoo_json(["list"], env)
    assert EXAMPLE_MODEL in {r["name"] for r in rows}

    uninstall("zoo-example-plugin", target)
    assert list(target.iterdir()) == []
    rows, stderr = zoo_json(["list"], env)
    assert {r["name"] for r in rows} == BUILTIN
    assert stderr == ""
    assert "example" not in plugin_rows(env)
    result = run_zoo(["info", EXAMPLE_MODEL], env=env)
    assert result.returncode == 2
    assert f"unknown model {EXAMPLE_MODEL!r}" in result.stderr


# -- plugins that go wrong -------------------------------------------------------------------


def assert_isolated_failure(site: dict[str, Path], dist: str, plugin: str, reason: str) -> None:
    """With ``dist`` installed beside the example: one warning, the rest works, a failed row."""
    env = pythonpath(site["zoo-example-plugin"], site[dist])
    result = run_zoo(["list", "--json"], env=env)
    assert result.returncode == 0, result.stderr
    assert {r["name"] for r in json.loads(result.stdout)} == {*BUILTIN, EXAMPLE_MODEL}
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"zoo: warning: plugin {plugin!r} disabled: ")
    assert reason in lines[0]
    assert "Traceback" not in result.stderr

    rows = plugin_rows(env)
    assert rows[plugin]["status"] == "failed"
    assert reason in rows[plugin]["error"]
    assert rows[plugin]["models"] == []
    assert all(rows[p]["status"] == "ok" for p in ("example", "deeplabv3", "fcn", "single_conv"))

    table = run_zoo(["plugins"], env=env)
    assert table.returncode == 0
    line = next(ln for ln in table.stdout.splitlines() if ln.strip().startswith(plugin))
    assert dist in line and "failed" in line


def test_plugin_that_raises_on_import(site: dict[str, Path]) -> None:
    assert_isolated_failure(
        site,
        "zoo-test-broken",
        "broken",
        "failed to load: RuntimeError: zoo-test-broken needs a GPU driver that is not installed",
    )


def test_plugin_returning_an_invalid_card_loses_that_card_only(site: dict[str, Path]) -> None:
    """Issue 21: one bad card disabled every card of its plugin."""
    env = pythonpath(site["zoo-example-plugin"], site["zoo-test-invalid-card"])
    detail = "model 'invalid_plugin_bad_card': palette has 2 colours but num_classes is 3"
    result = run_zoo(["list", "--json"], env=env)
    assert result.returncode == 0, result.stderr
    names = {r["name"] for r in json.loads(result.stdout)}
    assert names == {*BUILTIN, EXAMPLE_MODEL, "invalid_plugin_good_card"}
    assert result.stderr.splitlines() == [
        f"zoo: warning: plugin 'invalid_card': {detail}; this model is unavailable, the "
        "plugin's other models are not affected"]

    row = plugin_rows(env)["invalid_card"]
    assert (row["status"], row["models"], row["problems"], row["error"]) == (
        "partial", ["invalid_plugin_good_card"], [detail], None)
    table = run_zoo(["plugins"], env=env)
    line = next(ln for ln in table.stdout.splitlines() if ln.strip().startswith("invalid_card"))
    assert "partial" in line and "invalid_plugin_good_card" in line
    assert "invalid_plugin_bad_card" in table.stdout

    info = run_zoo(["info", "invalid_plugin_bad_card"], env=env)
    assert info.returncode == 2
    assert info.stderr.splitlines()[-1] == (
        "zoo: error: model 'invalid_plugin_bad_card' is unavailable: plugin 'invalid_card' "
        f"(zoo-test-invalid-card 0.1.0): {detail}; the plugin must fix this card (its other "
        "models work)")
    good = run_zoo(["info", "invalid_plugin_good_card", "--json"], env=env)
    assert good.returncode == 0 and json.loads(good.stdout)["plugin"] == "invalid_card"


def test_plugin_whose_hook_raises(site: dict[str, Path]) -> None:
    assert_isolated_failure(
        site,
        "zoo-test-hook-raises",
        "hook_raises",
        "zoo_models() raised ConnectionError: catalogue server unreachable",
    )


def test_every_broken_plugin_at_once(site: dict[str, Path]) -> None:
    dists = ["zoo-test-broken", "zoo-test-invalid-card", "zoo-test-hook-raises"]
    env = pythonpath(site["zoo-example-plugin"], *(site[d] for d in dists))
    result = run_zoo(["info", EXAMPLE_MODEL, "--json"], env=env)
    assert result.returncode == 0
    assert json.loads(result.stdout)["name"] == EXAMPLE_MODEL
    warned = [ln.split("'")[1] for ln in result.stderr.splitlines()]
    assert warned == ["broken", "hook_raises", "invalid_card"]  # entry points load sorted by name


def test_two_plugins_claiming_one_model_name(site: dict[str, Path]) -> None:
    env = pythonpath(site["zoo-example-plugin"], site["zoo-test-clash"])
    both = (
        f"model {EXAMPLE_MODEL!r} is defined by both plugin 'clash' (zoo-test-clash 0.1.0) and "
        "plugin 'example' (zoo-example-plugin 0.1.0)"
    )
    listing = run_zoo(["list", "--json"], env=env)
    assert listing.returncode == 0
    names = {r["name"] for r in json.loads(listing.stdout)}
    assert EXAMPLE_MODEL not in names
    assert "clash_only_model" in names  # the plugin itself stays enabled
    assert listing.stderr.splitlines() == [
        f"zoo: warning: {both}; it is unavailable until one is removed",
        # the clash plugin registers no builder: its remaining card is listed, and said so
        "zoo: warning: model 'clash_only_model': no plugin provides architecture 'clash_arch' "
        "(known: deeplabv3_mobilenet_v3_large, deeplabv3_resnet101, deeplabv3_resnet50, "
        "fcn_resnet101, fcn_resnet50, lraspp_mobilenet_v3_large, single_conv, tiny_segnet); "
        "install the plugin or fix 'architecture'",
    ]

    info = run_zoo(["info", EXAMPLE_MODEL], env=env)
    assert info.returncode == 1
    assert info.stderr.splitlines()[-1] == f"zoo: error: {both}; uninstall or rename one of them"
    assert "Traceback" not in info.stderr

    # remove the clashing package: the example's model is back
    rows, _ = zoo_json(["list"], pythonpath(site["zoo-example-plugin"]))
    assert EXAMPLE_MODEL in {r["name"] for r in rows}
