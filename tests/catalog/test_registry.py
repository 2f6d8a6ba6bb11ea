"""The registry: built-in catalogue, extra files, strict YAML, in-process plugins, clashes.

Plugins here are registered in-process on a fresh ``PluginHost`` for focused checks; the
entry-point path (real pip installs) is in ``test_plugins.py``.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BUILTIN_MODELS, ROOT
from zoo.catalog.plugins import PluginHost, hookimpl
from zoo.catalog.registry import (
    BUILTIN_SOURCE,
    Registry,
    builtin_registry_path,
    default_registry,
    read_registry_file,
)
from zoo.catalog.schema import ModelCard
from zoo.catalog.yamlio import load_yaml
from zoo.errors import CardError, PluginError, UnknownModelError, ZooError

BUILTIN = BUILTIN_MODELS


def card_data(name: str, base: str = "single_conv", **changes: Any) -> dict[str, Any]:
    """A valid card (a copy of a built-in one) renamed to ``name``."""
    raw = next(c for c in load_yaml(builtin_registry_path())["models"] if c["name"] == base)
    return {**copy.deepcopy(raw), "name": name, **changes}


def write_registry(path: Path, *cards: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "models": list(cards)}, sort_keys=False))
    return path


# -- the built-in catalogue --------------------------------------------------------------------


def test_builtin_catalogue_has_the_seven_models_with_their_plugins() -> None:
    reg = default_registry()
    assert reg.names() == BUILTIN
    plugins = {c.name: c.plugin for c in reg.cards()}
    assert plugins == {
        "deeplabv3_mobilenet_v3_large": "deeplabv3",
        "deeplabv3_resnet101": "deeplabv3",
        "deeplabv3_resnet50": "deeplabv3",
        "fcn_resnet101": "fcn",
        "fcn_resnet50": "fcn",
        "lraspp_mobilenet_v3_large": "lraspp",
        "single_conv": "single_conv",
    }
    assert reg.source("single_conv") == BUILTIN_SOURCE
    assert reg.conflicts == {}


def test_glob_pattern() -> None:
    reg = default_registry()
    assert reg.names("fcn_*") == ["fcn_resnet101", "fcn_resnet50"]
    assert [c.name for c in reg.cards("*mobilenet*")] == [
        "deeplabv3_mobilenet_v3_large",
        "lraspp_mobilenet_v3_large",
    ]
    assert reg.names("nothing*") == []


@pytest.mark.parametrize(
    ("asked", "suggested"),
    [
        ("deeplab_resnet50", ["deeplabv3_resnet50", "deeplabv3_resnet101"]),
        ("fcn_resnet", ["fcn_resnet50", "fcn_resnet101"]),
        ("single", ["single_conv"]),  # not close by difflib: found as a prefix
    ],
)
def test_unknown_model_suggests_the_closest_names(asked: str, suggested: list[str]) -> None:
    with pytest.raises(UnknownModelError) as info:
        default_registry().get(asked)
    assert info.value.suggestions[: len(suggested)] == suggested
    assert str(info.value).startswith(f"unknown model {asked!r}; did you mean {suggested[0]}")
    assert info.value.exit_code == 2


def test_unknown_model_without_anything_close() -> None:
    with pytest.raises(UnknownModelError, match=r"^unknown model 'x'; see `zoo list`$"):
        default_registry().get("x")


# -- registry files: strict YAML -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("models:\n  - name: a\n    family: [unclosed\n", 4, "YAML syntax error"),
        ("models:\n- name: a\n  family: b\n   description: c\n", 4, "YAML syntax error"),
        ("models:\n\t- name: a\n", 2, "YAML syntax error"),
        ("version: 1\nmodels: []\nmodels: []\n", 3, "duplicate key 'models'"),
        ("models:\n- name: a\n  family: b\n  name: c\n", 4, "duplicate key 'name'"),
    ],
    ids=["unclosed-flow", "bad-indent", "tab", "duplicate-top-level", "duplicate-in-card"],
)
def test_yaml_errors_name_the_file_and_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(CardError) as info:
        read_registry_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert problem in message
    assert "\n" not in message


def test_unreadable_and_misshapen_files(tmp_path: Path) -> None:
    with pytest.raises(CardError, match=r"cannot read registry file .*missing\.yaml"):
        read_registry_file(tmp_path / "missing.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- name: a\n")
    with pytest.raises(CardError, match=r"list\.yaml: expected a mapping with a 'models:' list"):
        read_registry_file(path)
    path.write_text("models: []\nmodel: []\n")
    with pytest.raises(CardError, match=r"unknown top-level keys \['model'\]"):
        read_registry_file(path)
    path.write_text("models:\n  - just a string\n")
    with pytest.raises(CardError, match="each model must be a mapping, got str"):
        read_registry_file(path)


def test_invalid_card_in_a_file_names_file_model_and_field(tmp_path: Path) -> None:
    bad = card_data("bad_colours")
    bad["palette"][2] = [0, 300, 0]
    path = write_registry(tmp_path / "extra.yaml", card_data("fine_model"), bad)
    with pytest.raises(CardError) as info:
        Registry(extra_files=[path])
    lines = path.read_text().splitlines()
    second = lines.index("- name: bad_colours")  # the second card's palette, item 2, value 1
    line = next(i for i in range(second, len(lines)) if lines[i].strip() == "- 300") + 1
    assert str(info.value) == (
        f"{path}:{line}: model 'bad_colours': field palette.2.1: Input should be less than or "
        "equal to 255"
    )


# -- extra files: --registry and ZOO_REGISTRY ------------------------------------------------


def test_extra_files_merge_into_the_catalogue(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "mine.yaml", card_data("my_seg"))
    reg = Registry(extra_files=[path])
    assert reg.names() == sorted([*BUILTIN, "my_seg"])
    assert reg.source("my_seg") == str(path)
    # the builder comes from the built-in plugin that provides the card's architecture
    assert reg.get("my_seg").plugin == "single_conv"
    assert "my_seg" not in default_registry().names()


def test_zoo_registry_takes_several_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write_registry(tmp_path / "a.yaml", card_data("from_a"))
    b = write_registry(tmp_path / "b.yaml", card_data("from_b"))
    monkeypatch.setenv("ZOO_REGISTRY", os.pathsep.join([str(a), "", str(b)]))
    assert {"from_a", "from_b"} <= set(default_registry().names())


def test_zoo_registry_naming_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "gone.yaml"))
    with pytest.raises(CardError, match=r"ZOO_REGISTRY names .*gone\.yaml, which is not a file"):
        default_registry()


def test_a_name_defined_twice_is_unavailable_and_names_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_registry(tmp_path / "dup.yaml", card_data("deeplabv3_resnet50"))
    reg = Registry(extra_files=[path])
    assert "deeplabv3_resnet50" not in reg.names()
    assert reg.conflicts == {"deeplabv3_resnet50": [BUILTIN_SOURCE, str(path)]}
    with pytest.raises(CardError) as info:  # the user's file clashes: bad input, exit 2
        reg.get("deeplabv3_resnet50")
    assert f"defined by both {BUILTIN_SOURCE} and {path}" in str(info.value)
    assert info.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        f"zoo: warning: model 'deeplabv3_resnet50' is defined by both {BUILTIN_SOURCE}"
    )


# -- in-process plugins ---------------------------------------------------------------------


class CardsPlugin:
    """A plugin object contributing fixed ``zoo_models`` items and builders."""

    def __init__(self, items: Any, builders: dict[str, Any] | None = None) -> None:
        self.items = items
        self.builders = builders or {}

    @hookimpl
    def zoo_models(self) -> Any:
        return self.items

    @hookimpl
    def zoo_builders(self) -> Any:
        return self.builders


class RaisingPlugin:
    @hookimpl
    def zoo_models(self) -> Any:
        raise OSError("disk on fire\nsecond line")


def host_with(**plugins: object) -> PluginHost:
    host = PluginHost()
    for name, plugin in plugins.items():
        host.register(plugin, name)
    return host


def test_plugin_items_may_be_cards_dicts_or_yaml_paths(tmp_path: Path) -> None:
    as_path = write_registry(tmp_path / "a.yaml", card_data("from_path", architecture="toy"))
    as_str = str(write_registry(tmp_path / "b.yaml", card_data("from_str", architecture="toy")))
    card = ModelCard.model_validate(card_data("from_object", architecture="toy"))

    def build_toy(card: ModelCard, aux: bool = False) -> str:
        return f"toy with {card.num_classes} classes"

    items = [card, card_data("from_dict", architecture="toy"), as_path, as_str]
    reg = Registry(host=host_with(toys=CardsPlugin(items, {"toy": build_toy})))
    for name in ("from_object", "from_dict", "from_path", "from_str"):
        got = reg.get(name)
        assert got.plugin == "toys"
        assert reg.builder(got)(got) == "toy with 23 classes"
        assert reg.source(name) == "plugin 'toys' (in-process)"


def test_the_same_file_twice_from_one_plugin_is_a_clash(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "twice.yaml", card_data("twice"))
    reg = Registry(host=host_with(me=CardsPlugin([path, path])))
    assert "twice" not in reg.names()
    assert reg.conflicts == {"twice": ["plugin 'me' (in-process)"] * 2}


def test_a_plugins_invalid_card_disables_only_that_card(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = card_data("bad_plugin_model")
    bad["labels"] = bad["labels"][:5]
    host = host_with(
        good=CardsPlugin([card_data("good_model")]), bad=CardsPlugin([card_data("sibling"), bad])
    )
    reg = Registry(host=host)
    assert "good_model" in reg.names() and "sibling" in reg.names()
    assert "bad_plugin_model" not in reg.names()
    assert host.plugins["bad"].ok and host.plugins["good"].ok
    detail = "model 'bad_plugin_model': labels has 5 entries but num_classes is 23"
    assert reg.problems() == [("bad", detail)]
    with pytest.raises(CardError) as info:
        reg.get("bad_plugin_model")
    assert str(info.value) == (
        f"model 'bad_plugin_model' is unavailable: plugin 'bad' (in-process): {detail}; the "
        "plugin must fix this card (its other models work)")
    assert capsys.readouterr().err == (
        f"zoo: warning: plugin 'bad': {detail}; this model is unavailable, the plugin's other "
        "models are not affected\n")


def test_plugin_whose_hook_raises_is_disabled(capsys: pytest.CaptureFixture[str]) -> None:
    host = host_with(boom=RaisingPlugin(), good=CardsPlugin([card_data("good_model")]))
    reg = Registry(host=host)
    assert "good_model" in reg.names()
    assert host.plugins["boom"].error == "zoo_models() raised OSError: disk on fire second line"
    assert host.pm.get_plugin("boom") is None
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"zoo: warning: plugin 'boom' disabled: {host.plugins['boom'].error}"
    ]


@pytest.mark.parametrize(
    ("plugin", "reason"),
    [
        (CardsPlugin({"name": "not a list"}), "zoo_models() must return a list, got dict"),
        (CardsPlugin([], builders=["not", "a", "dict"]), "zoo_builders() must return a dict"),
    ],
)
def test_plugin_returning_the_wrong_shape_is_disabled(plugin: CardsPlugin, reason: str) -> None:
    host = host_with(odd=plugin)
    Registry(host=host)
    assert reason in (host.plugins["odd"].error or "")


def test_an_item_that_is_no_card_is_that_items_problem() -> None:
    host = host_with(odd=CardsPlugin([42, card_data("fine_one")]))
    reg = Registry(host=host)
    assert host.plugins["odd"].ok and "fine_one" in reg.names()
    assert reg.problems() == [("odd", "each model must be a mapping, got int")]


def test_two_plugins_claiming_one_name(capsys: pytest.CaptureFixture[str]) -> None:
    host = host_with(
        first=CardsPlugin([card_data("shared_name")]),
        second=CardsPlugin([card_data("shared_name")]),
    )
    reg = Registry(host=host)
    with pytest.raises(PluginError) as info:
        reg.get("shared_name")
    assert str(info.value) == (
        "model 'shared_name' is defined by both plugin 'first' (in-process) and "
        "plugin 'second' (in-process); uninstall or rename one of them"
    )
    assert "shared_name" in capsys.readouterr().err
    # both plugins stay enabled: only the contested name is withheld
    assert host.plugins["first"].ok and host.plugins["second"].ok


def test_architecture_provided_twice_keeps_the_first(capsys: pytest.CaptureFixture[str]) -> None:
    host = host_with(
        a=CardsPlugin(
            [card_data("toy_model", architecture="toy")], {"toy": lambda card, aux=False: "a"}
        ),
        b=CardsPlugin([], {"toy": lambda card, aux=False: "b"}),
    )
    reg = Registry(host=host)
    card = reg.get("toy_model")
    assert reg.builder(card)(card) == "a"
    assert (
        "architecture 'toy' is provided by both 'a' and 'b'; keeping 'a'" in capsys.readouterr().err
    )


# -- builders --------------------------------------------------------------------------------


def test_unknown_architecture_names_the_card_the_architecture_and_the_known_ones() -> None:
    reg = Registry(host=PluginHost())  # no plugins: no builders
    card = reg.get("single_conv")
    with pytest.raises(
        PluginError,
        match=r"model 'single_conv': no plugin provides architecture 'single_conv' \(known: none\)",
    ):
        reg.builder(card)
    known = default_registry()
    odd = known.get("single_conv").model_copy(update={"architecture": "no_such_arch"})
    with pytest.raises(PluginError) as info:
        known.builder(odd)
    message = str(info.value)
    assert "model 'single_conv': no plugin provides architecture 'no_such_arch'" in message
    assert "deeplabv3_resnet50" in message and "single_conv" in message  # the known ones
    assert issubclass(PluginError, ZooError)


@pytest.fixture
def planted_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A module on sys.path that leaves a file behind if anything imports it."""
    marker = tmp_path / "imported"
    (tmp_path / "zoo_planted_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef build(card, aux=False):\n    return card\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "zoo_planted_mod", marker


@pytest.mark.parametrize("arch", ["zoo_planted_mod:build", "os:system"])
def test_a_card_cannot_name_an_import_path(
    tmp_path: Path, planted_module: tuple[str, Path], arch: str
) -> None:
    module, marker = planted_module
    path = write_registry(tmp_path / "evil.yaml", card_data("evil", architecture=arch))
    with pytest.raises(CardError) as info:
        Registry(extra_files=[path])
    line = path.read_text().splitlines().index(f"  architecture: {arch}") + 1
    assert str(info.value).startswith(f"{path}:{line}: model 'evil': field architecture: ")
    assert "import paths such as 'module:function' are not allowed" in str(info.value)
    assert module not in sys.modules and not marker.exists()


@pytest.mark.parametrize("arch", ["zoo_planted_mod:build", "zoo_planted_mod.build", "os:system"])
def test_a_card_cannot_make_zoo_import_a_module(
    tmp_path: Path, planted_module: tuple[str, Path], arch: str
) -> None:
    module, marker = planted_module
    # a dotted name is a valid builder key: it is looked up, never imported
    dotted = write_registry(tmp_path / "dotted.yaml",
                           card_data("dotted", architecture="zoo_planted_mod.build"))
    reg = Registry(extra_files=[dotted])
    with pytest.raises(PluginError, match=r"provides architecture 'zoo_planted_mod\.build'"):
        reg.builder(reg.get("dotted"))
    # a card object that skipped validation still only names a registered builder
    card = reg.get("single_conv").model_copy(update={"architecture": arch})
    with pytest.raises(PluginError, match=re.escape(f"no plugin provides architecture {arch!r}")):
        reg.builder(card)
    with pytest.raises(PluginError):
        reg.builder_ref(card)
    assert module not in sys.modules and not marker.exists()


def test_a_plugin_builder_that_cannot_be_imported_is_the_plugins_error() -> None:
    host = host_with(
        broken=CardsPlugin([card_data("needs_missing", architecture="gone")],
                           {"gone": "zoo_no_such_module.model:build"})
    )
    reg = Registry(host=host)
    with pytest.raises(PluginError) as info:
        reg.builder(reg.get("needs_missing"))
    assert str(info.value).startswith("plugin 'broken' failed in importing builder "
                                      "'zoo_no_such_module.model:build' for model 'needs_missing'")
    assert "ModuleNotFoundError" in str(info.value)


# -- hostile registry files --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"models:\n- name: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 19)"),
        (b"\xff\xfe\x00m\x00o", "not UTF-8 text (byte 0xff at offset 0)"),
        (b"models:\n- name: a\x00\n", "character #x0000 at offset 17 is not allowed"),
        (b"models:\n- name: a\x1b[2J\n", "character #x001b at offset 17 is not allowed"),
        (b"? [a]\n: b\n", "found unhashable key"),
        (b"models: 0x_\n", "a value cannot be read"),
        (b"models:\n- created: 2001-13-45\n", "a value cannot be read: month must be in 1..12"),
        (b"models: !!python/object:os.system ls\n", "could not determine a constructor"),
        (b"1: a\nmodels: []\n", "unknown top-level keys [1]"),
        (b"models: [" * 2000, "exceeded maximum nesting depth"),
    ],
    ids=["latin1", "utf16", "nul", "escape", "unhashable", "bad-int", "bad-date", "python-tag",
         "int-key", "deep"],
)
def test_hostile_registry_files_are_one_line_card_errors(
    tmp_path: Path, data: bytes, problem: str
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_bytes(data)
    with pytest.raises(CardError) as info:
        read_registry_file(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert problem in message
    assert "\n" not in message and "\x1b" not in message and "\x00" not in message
    with pytest.raises(CardError, match=re.escape(problem)):
        Registry(extra_files=[path])


def test_the_fast_yaml_reader_agrees_with_pyyaml() -> None:
    from zoo.catalog.yamlio import _fast_load, _StrictLoader

    example = ROOT / "examples" / "zoo-example-plugin" / "zoo_example_plugin" / "models.yaml"
    for path in (builtin_registry_path(), example):
        text = path.read_text()
        assert _fast_load(text) == yaml.load(text, Loader=_StrictLoader)
    odd = "a: [1, 1.5, .inf, -.Inf, 0x1f, 0o17, 017, 1_000, yes, Off, ~, null, '', \"x\"]\n"
    odd += "b: |\n x\nc: {d: 1:30, e: 3.0e+2}\n"
    fast, slow = _fast_load(odd), yaml.load(odd, Loader=_StrictLoader)
    assert fast == slow
    assert [type(v) for v in fast["a"]] == [type(v) for v in slow["a"]]
