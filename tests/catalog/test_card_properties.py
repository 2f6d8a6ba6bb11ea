"""Property-based checks (hypothesis) of the card schema and the registry loader: whatever a
registry file holds (any bytes, any YAML/JSON-shaped document, any change to a valid card),
zoo answers with a card or a one-line :class:`CardError`, never another exception, and the CLI
exits 0 or 2 without a traceback. The fast YAML reader always agrees with PyYAML's.

Example counts stay modest so the module runs in seconds.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from zoo.catalog.registry import Registry, builtin_registry_path, parse_card, read_registry_file
from zoo.catalog.schema import ModelCard
from zoo.catalog.yamlio import _StrictLoader, parse_yaml
from zoo.cli.main import main
from zoo.errors import CardError

SETTINGS = settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BUILTIN = yaml.safe_load(builtin_registry_path().read_text())["models"]

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats() | st.text(max_size=12)
)
keys = st.text(max_size=10) | st.integers(-5, 5) | st.booleans() | st.none()
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a card: keys and list indices."""
    found = [prefix] if prefix else []
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else []
    for key, child in items:
        found += _paths(child, (*prefix, key))
    return found


CARD_PATHS = sorted({p for card in BUILTIN for p in _paths(card)}, key=repr)


@st.composite
def mutated_cards(draw: st.DrawFn) -> dict[str, Any]:
    """A built-in card with one field replaced, removed or added."""
    card = copy.deepcopy(draw(st.sampled_from(BUILTIN)))
    path = draw(st.sampled_from(CARD_PATHS))
    parent: Any = card
    for part in path[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return card
    last = path[-1]
    action = draw(st.sampled_from(["replace", "delete", "extra"]))
    with contextlib.suppress(KeyError, IndexError, TypeError):
        if action == "delete":
            del parent[last]
        elif action == "extra" and isinstance(parent, dict):
            parent[draw(keys)] = draw(documents)
        else:
            parent[last] = draw(documents)
    return card


def as_text(doc: Any, style: str) -> str:
    if style == "json":
        return json.dumps(doc, default=str)
    return yaml.safe_dump(doc, default_flow_style=style == "flow", allow_unicode=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def assert_card_or_card_error(path: Path) -> None:
    try:
        cards = read_registry_file(path)
    except CardError as exc:
        message = str(exc)
        assert "\n" not in message and "\x1b" not in message
        assert message.startswith(str(path)) or message.startswith("cannot read")
        return
    for card in cards:
        assert isinstance(card, ModelCard)


# -- the loader --------------------------------------------------------------------------------


@SETTINGS
@given(data=st.binary(max_size=400) | st.builds(lambda b: b"models:\n- " + b, st.binary()))
def test_any_bytes_as_a_registry_file(folder: Path, data: bytes) -> None:
    path = folder / "bytes.yaml"
    path.write_bytes(data)
    assert_card_or_card_error(path)


@SETTINGS
@given(
    doc=documents | st.fixed_dictionaries({"models": st.lists(documents, max_size=3)})
    | st.fixed_dictionaries({"version": scalars, "models": st.lists(mutated_cards(), max_size=2)}),
    style=st.sampled_from(["block", "flow", "json"]),
)
def test_any_document_as_a_registry_file(folder: Path, doc: Any, style: str) -> None:
    path = folder / "doc.yaml"
    path.write_text(as_text(doc, style))
    assert_card_or_card_error(path)
    try:
        reg = Registry(extra_files=[path])
    except CardError:
        return
    for name in reg.names():  # every card that loads also validates on lookup
        assert reg.get(name).name == name


@SETTINGS
@given(text=st.text(max_size=200) | st.builds(as_text, documents, st.sampled_from(
    ["block", "flow", "json"])))
def test_the_fast_reader_agrees_with_pyyaml(text: str) -> None:
    try:
        expected = yaml.load(text, Loader=_StrictLoader)
    except Exception:  # PyYAML refuses it: so must zoo, as a CardError
        with pytest.raises(CardError):
            parse_yaml(text, "doc.yaml")
        return
    got = parse_yaml(text, "doc.yaml")
    assert typed(got) == typed(expected)


def typed(value: Any) -> Any:
    """``value`` with types made explicit (1 == 1.0 == True otherwise; NaN != NaN)."""
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, repr(value))


# -- the schema --------------------------------------------------------------------------------


@SETTINGS
@given(card=mutated_cards())
def test_a_changed_card_is_valid_or_a_card_error(card: dict[str, Any]) -> None:
    try:
        valid = parse_card(card, "cards.yaml")
    except CardError as exc:
        message = str(exc)
        assert message.startswith("cards.yaml: model ") and "\n" not in message
        return
    # what validates is sane: finite, bounded, consistent, and survives its own JSON
    pre = valid.preprocessing
    assert all(math.isfinite(v) for v in (*pre.mean, *pre.std, pre.scale_divisor))
    assert all(0 < side <= 8192 for side in pre.input_size)
    assert len(valid.labels) == len(valid.palette) == valid.num_classes == valid.output.channels
    assert ModelCard.model_validate_json(valid.model_dump_json()) == valid


# -- the command line, in process -------------------------------------------------------------


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    content=st.binary(max_size=200).map(lambda b: ("bytes", b))
    | st.builds(lambda d, s: ("text", as_text({"models": d}, s)),
                st.lists(mutated_cards(), min_size=1, max_size=2),
                st.sampled_from(["block", "flow", "json"])),
    command=st.sampled_from([["list"], ["list", "--json"], ["info", "single_conv"]]),
)
def test_zoo_with_a_hostile_registry_file_exits_0_or_2_without_a_traceback(
    folder: Path, content: tuple[str, Any], command: list[str]
) -> None:
    kind, payload = content
    path = folder / "cli.yaml"
    if kind == "bytes":
        path.write_bytes(payload)
    else:
        path.write_text(payload)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*command, "--registry", str(path)])
    errors = err.getvalue()
    assert code in (0, 2), errors
    assert "Traceback" not in errors and "internal error" not in errors
    assume(code == 2)
    last = errors.splitlines()[-1]
    assert last.startswith("zoo: error: ") and "\x1b" not in last
