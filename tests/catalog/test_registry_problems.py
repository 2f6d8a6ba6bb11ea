"""Problems in part of the catalogue, in process: a plugin's broken cards (kept in compiled
entries), names defined twice by one source, architectures without a builder, and the
lines YAML field errors name. The installed-plugin versions are in tests/plugins/."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from zoo.catalog.compiled import Broken, compile_file
from zoo.catalog.parsing import parse_plugin_file
from zoo.catalog.plugins import PluginHost, hookimpl
from zoo.catalog.registry import Registry, builtin_registry_path
from zoo.catalog.schema import ModelCard
from zoo.catalog.yamlio import Locator, load_yaml
from zoo.errors import CardError, PluginError


def card_data(name: str, **changes: Any) -> dict[str, Any]:
    raw = next(c for c in load_yaml(builtin_registry_path())["models"]
               if c["name"] == "single_conv")
    return {**copy.deepcopy(raw), "name": name, **changes}


def write(path: Path, *cards: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "models": list(cards)}, sort_keys=False))
    return path


class Cards:
    def __init__(self, items: Any, builders: dict[str, Any] | None = None) -> None:
        self.items, self.builders = items, builders or {}

    @hookimpl
    def zoo_models(self) -> Any:
        return self.items

    @hookimpl
    def zoo_builders(self) -> Any:
        return self.builders


def host_with(**plugins: object) -> PluginHost:
    host = PluginHost()
    for name, plugin in plugins.items():
        host.register(plugin, name)
    return host


def test_a_plugin_files_broken_cards_are_compiled_once_and_served_warm(tmp_path: Path) -> None:
    bad = card_data("bad_one")
    bad["preprocessing"]["std"] = [1.0]
    path = write(tmp_path / "plugin.yaml", card_data("good_one"), bad, {"name": 7})
    calls = []

    def parse(data: bytes, where: Path) -> Any:
        calls.append(where)
        return parse_plugin_file(data, where)

    cold = compile_file(path, parse, kind="plugin-file")
    warm = compile_file(path, parse, kind="plugin-file")
    assert len(calls) == 1  # the second read came from the entry, broken cards included
    assert cold.names == warm.names == ["good_one"]
    lines = path.read_text().splitlines()
    std = lines.index("    std:", lines.index("- name: bad_one")) + 1
    assert warm.broken == cold.broken
    assert warm.broken[0] == Broken(
        "bad_one", f"{path}:{std}: model 'bad_one': field preprocessing.std: too few items "
                   "(got 1)")
    assert warm.broken[1].name is None  # no name a user could type
    assert warm.broken[1].reason.startswith(
        f"{path}:{lines.index('- name: 7') + 1}: model <int name>: field name: ")


def test_a_users_file_stays_strict_even_after_a_plugin_compiled_it(tmp_path: Path) -> None:
    bad = card_data("bad_one", num_classes=0)
    path = write(tmp_path / "shared.yaml", card_data("good_one"), bad)
    reg = Registry(host=host_with(p=Cards([path])))  # the plugin's way: card by card
    assert "good_one" in reg.names()
    with pytest.raises(CardError, match=r"shared\.yaml:\d+: model 'bad_one': field num_classes"):
        Registry(host=PluginHost(), extra_files=[path])  # the user's way: the first error


def test_a_users_file_defining_a_name_twice_names_both_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "team.yaml", card_data("twin"), card_data("other"), card_data("twin"))
    lines = path.read_text().splitlines()
    first = lines.index("- name: twin") + 1
    second = lines.index("- name: twin", first) + 1
    reg = Registry(host=PluginHost(), extra_files=[path])
    text = f"registry file {path} defines model 'twin' twice ({path}:{first} and {path}:{second})"
    assert capsys.readouterr().err == (
        f"zoo: warning: {text}; it is unavailable until one is removed\n")
    with pytest.raises(CardError) as info:
        reg.get("twin")
    assert str(info.value) == f"{text}; rename or drop one of them"
    assert info.value.exit_code == 2
    assert reg.problems() == [(None, f"{text}; it is unavailable until one is removed")]


def test_one_plugin_defining_a_name_as_object_and_dict_names_both_items() -> None:
    obj = ModelCard.model_validate(card_data("dup", architecture="toy"))
    host = host_with(me=Cards([card_data("solo", architecture="toy"), obj,
                               card_data("dup", architecture="toy")], {"toy": "x.y:z"}))
    reg = Registry(host=host)
    with pytest.raises(PluginError) as info:
        reg.get("dup")
    assert str(info.value) == (
        "plugin 'me' (in-process) defines model 'dup' twice (zoo_models() item 3 (a card "
        "dict) and zoo_models() item 2 (a ModelCard)); the plugin must rename or drop one of them")
    assert reg.get("solo").plugin == "me"


def test_two_plugins_clashing_is_a_problem_of_both() -> None:
    reg = Registry(host=host_with(a=Cards([card_data("same")]), b=Cards([card_data("same")])))
    text = ("model 'same' is defined by both plugin 'a' (in-process) and plugin 'b' "
            "(in-process); it is unavailable until one is removed")
    assert reg.problems() == [("a", text), ("b", text)]


def test_missing_builders_are_grouped_by_architecture() -> None:
    cards = [card_data(f"m{i}", architecture="ghost") for i in range(7)]
    reg = Registry(host=host_with(p=Cards([*cards, card_data("fine", architecture="real")],
                                          {"real": "pkg.mod:build"})))
    problems = reg.builder_problems([s for s in reg.summaries() if s.plugin == "p"])
    assert problems == [("p", "models 'm0', 'm1', 'm2', 'm3', 'm4' and 2 more: no plugin "
                              "provides architecture 'ghost' (known: real); install the plugin "
                              "or fix 'architecture'")]
    assert reg.missing_builder("fine", "real") is None
    assert reg.missing_builder("m0", "ghost") == (
        "model 'm0': no plugin provides architecture 'ghost' (known: real); install the plugin "
        "or fix 'architecture'")


@pytest.mark.parametrize(("path", "line"), [
    ((), 1),
    (("models",), 1),
    (("models", 0), 2),
    (("models", 0, "mean"), 3),
    (("models", 0, "mean", 1), 3),  # a flow list: its items are on its line
    (("models", 0, "mean", 5), 3),  # past the end: the list itself
    (("models", 0, "palette"), 4),
    (("models", 0, "palette", 1), 6),
    (("models", 0, "palette", 1, 2), 6),
    (("models", 0, "missing_key"), 2),  # no such key: the card
    (("models", 9), 1),
])
def test_the_locator_names_the_line_of_keys_items_and_lists(
        path: tuple[Any, ...], line: int) -> None:
    text = ("models:\n- name: a\n  mean: [1, 2]\n  palette:\n  - [0, 0, 0]\n"
            "  - [1, 1, 1]\n")
    assert Locator(text).line(path) == line
    assert Locator("models: [\n").line(("models",)) is None  # does not compose
