"""The model card schema: every validation rule, and the JSON Schema apps validate against."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from zoo.catalog.registry import builtin_registry_path
from zoo.catalog.schema import ModelCard, WeightsSource
from zoo.catalog.yamlio import load_yaml


def builtin_cards() -> list[dict[str, Any]]:
    """The built-in catalogue as plain data, straight from registry.yaml."""
    return load_yaml(builtin_registry_path())["models"]


def base_card(name: str = "deeplabv3_resnet50") -> dict[str, Any]:
    return copy.deepcopy(next(c for c in builtin_cards() if c["name"] == name))


def with_change(card: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``card`` with the dotted ``path`` (list indices allowed) set to ``value``."""
    card = copy.deepcopy(card)
    *parents, last = path.split(".")
    node: Any = card
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return card


def test_every_builtin_card_is_valid() -> None:
    cards = [ModelCard.model_validate(c) for c in builtin_cards()]
    assert len(cards) == 7
    for card in cards:
        assert len(card.labels) == len(card.palette) == card.output.channels == card.num_classes


def test_the_seed_facts_survive_validation() -> None:
    card = ModelCard.model_validate(base_card())
    assert card.preprocessing.mean == (0.485, 0.456, 0.406)
    assert card.preprocessing.std == (0.229, 0.224, 0.225)
    assert (card.output.kind, card.output.key, card.output.optional_keys) == (
        "dict",
        "out",
        ["aux"],
    )
    assert card.labels[15] == "person"
    seed_app = card.palette_named("seed_app")
    assert (seed_app[15], seed_app[12], seed_app[17]) == ((255, 0, 0), (0, 255, 0), (0, 0, 255))
    assert card.weights_named("coco_with_voc_labels_v1").expected_hash.startswith("cd0a2569")


_PALETTE_21 = [[0, 0, 0]] * 21

INVALID = [
    # palette length == label count == number of classes
    ("palette", _PALETTE_21[:20], "palette has 20 colours but num_classes is 21"),
    ("palette", [*_PALETTE_21, [1, 2, 3]], "palette has 22 colours but num_classes is 21"),
    ("labels", ["background"] * 20, "labels has 20 entries but num_classes is 21"),
    ("num_classes", 20, "output.channels is 21 but num_classes is 20"),
    ("output.channels", 22, "output.channels is 22 but num_classes is 21"),
    ("palettes.seed_app", _PALETTE_21[:3], "palettes.seed_app has 3 colours but num_classes is 21"),
    ("palettes", {"Seed-App": _PALETTE_21}, "palettes: name 'Seed-App' must match [a-z0-9_]+"),
    # RGB in 0..255, exactly three components
    ("palette.3", [256, 0, 0], "palette.3.0\n  Input should be less than or equal to 255"),
    ("palette.4", [0, -1, 0], "palette.4.1\n  Input should be greater than or equal to 0"),
    ("palette.5", [0, 0], "palette.5.2\n  Field required"),
    ("palette.6", [0, 0, 0, 0], "palette.6\n  Tuple should have at most 3 items"),
    ("palettes.seed_app.15", [255, 0, 300], "palettes.seed_app.15.2"),
    # 3 means, 3 positive stds
    ("preprocessing.mean", [0.5, 0.5], "preprocessing.mean.2\n  Field required"),
    ("preprocessing.mean", [0.5] * 4, "preprocessing.mean\n  Tuple should have at most 3 items"),
    ("preprocessing.std", [0.2, 0.2], "preprocessing.std.2\n  Field required"),
    (
        "preprocessing.std",
        [0.229, 0.0, 0.225],
        "preprocessing.std.1\n  Input should be greater than 0",
    ),
    (
        "preprocessing.std",
        [-0.2, 0.224, 0.225],
        "preprocessing.std.0\n  Input should be greater than 0",
    ),
    ("preprocessing.scale_divisor", 0, "preprocessing.scale_divisor\n  Input should be greater"),
    ("preprocessing.resize_size", None, "resize='shorter_side' needs 'resize_size'"),
    # sha256: 64 hex, or an 8-hex prefix in sha256_prefix
    ("weights.0.sha256", "cd0a2569", "an 8-hex prefix goes in 'sha256_prefix'"),
    ("weights.0.sha256", "c" * 63, "must be 64 lowercase hex digits"),
    ("weights.0.sha256", "C" * 64, "must be 64 lowercase hex digits"),
    ("weights.0.sha256", "g" * 64, "must be 64 lowercase hex digits"),
    ("weights.0.sha256", "c" * 64 + "\n", "must be 64 lowercase hex digits"),
    ("weights.0.sha256", None, "give exactly one of 'sha256' (64 hex) or 'sha256_prefix'"),
    # names: [a-z0-9_]+
    ("name", "DeepLabV3", "name 'DeepLabV3' must match [a-z0-9_]+"),
    ("name", "deeplab-v3", "name 'deeplab-v3' must match [a-z0-9_]+"),
    ("name", "deeplab v3", "must match [a-z0-9_]+"),
    ("name", "", "must match [a-z0-9_]+"),
    ("name", "deeplab\n", "must match [a-z0-9_]+"),
    ("weights.0.name", "COCO", "weights name 'COCO' must match [a-z0-9_]+"),
    # output contract
    ("output.key", None, "kind='dict' needs 'key'"),
    ("output.kind", "tensor", "kind='tensor' takes no 'key' or 'optional_keys'"),
    ("output.kind", "list", "output.kind\n  Input should be 'dict' or 'tensor'"),
    # weights bookkeeping, counts, unknown fields
    ("default_weights", "imagenet", "default_weights 'imagenet' is not one of the weights"),
    ("num_params", 0, "num_params\n  Input should be greater than 0"),
    ("licence", "MIT", "licence\n  Extra inputs are not permitted"),
    # numbers are finite and bounded
    ("preprocessing.mean", [float("nan"), 0.0, 0.0], "mean.0\n  Input should be a finite"),
    ("preprocessing.mean", [0.0, float("-inf"), 0.0], "mean.1\n  Input should be a finite"),
    ("preprocessing.mean", [0.0, 0.0, 2e6], "preprocessing.mean.2\n  Input should be less than or"),
    ("preprocessing.std", [float("inf"), 1.0, 1.0], "std.0\n  Input should be a finite"),
    ("preprocessing.scale_divisor", float("nan"), "scale_divisor\n  Input should be a finite"),
    ("preprocessing.input_size", [8193, 520], "preprocessing.input_size.0\n  Input should be less"),
    ("preprocessing.input_size", [520, 0], "preprocessing.input_size.1\n  Input should be greater"),
    ("preprocessing.resize_size", 100_000, "resize_size\n  Input should be less than"),
    ("num_params", -1, "num_params\n  Input should be greater than 0"),
    ("num_params", 10**14, "num_params\n  Input should be less than or equal to 10000000000000"),
    ("num_params_with_aux", 10**14, "num_params_with_aux\n  Input should be less than or equal"),
    ("num_classes", 10_001, "num_classes\n  Input should be less than or equal to 10000"),
    ("output.channels", 10**6, "output.channels\n  Input should be less than or equal to 10000"),
    ("gflops", float("inf"), "gflops\n  Input should be a finite number"),
    ("weights.0.size", 2**50, "weights.0.size\n  Input should be less than or equal to"),
    ("weights.0.metrics.0.value", float("nan"), "metrics.0.value\n  Input should be a finite"),
    # text and lists are bounded
    ("name", "a" * 101, "name\n  String should have at most 100 characters"),
    ("family", "f" * 101, "family\n  String should have at most 100 characters"),
    ("description", "d" * 4001, "description\n  String should have at most 4000 characters"),
    ("labels.3", "l" * 201, "labels.3\n  String should have at most 200 characters"),
    ("license", "x" * 201, "license\n  String should have at most 200 characters"),
    ("weights.0.urls", ["https://example.invalid/w"] * 65, "weights.0.urls\n  List should have at"),
    ("weights.0.urls", ["https://e.invalid/" + "u" * 2048], "weights.0.urls.0\n  String should"),
    ("links.0.url", "javascript:alert(1)", "'javascript:alert(1)' must be an absolute http(s)"),
    ("links.0.title", "t" * 201, "links.0.title\n  String should have at most 200 characters"),
    ("palettes", {"p" * 101: _PALETTE_21}, "must match [a-z0-9_]+ (at most 100 characters)"),
    # architecture names a registered builder, never an import path
    ("architecture", "os:system", "'os:system' must name a builder a plugin registered"),
    ("architecture", "pkg.mod:build", "import paths such as 'module:function' are not allowed"),
    ("architecture", "../x", "must name a builder a plugin registered"),
]


@pytest.mark.parametrize(
    ("path", "value", "message"), INVALID, ids=[f"{p}={v!r}"[:40] for p, v, _ in INVALID]
)
def test_invalid_card_is_rejected_with_the_field_named(path: str, value: Any, message: str) -> None:
    card = with_change(base_card(), path, value)
    with pytest.raises(ValidationError) as info:
        ModelCard.model_validate(card)
    assert message in str(info.value)


def test_duplicate_weights_names_are_rejected() -> None:
    card = base_card()
    card["weights"].append(copy.deepcopy(card["weights"][0]))
    with pytest.raises(ValidationError, match=r"weights: duplicate names"):
        ModelCard.model_validate(card)


@pytest.mark.parametrize("missing", ["name", "labels", "palette", "preprocessing", "output"])
def test_required_fields(missing: str) -> None:
    card = base_card()
    del card[missing]
    with pytest.raises(ValidationError, match=rf"{missing}\n  Field required"):
        ModelCard.model_validate(card)


def _weights(**hashes: str) -> dict[str, Any]:
    return {"name": "w", "urls": ["https://example.invalid/w.pth"], "trained_on": "x", **hashes}


def test_sha256_prefix_is_accepted_only_as_8_lowercase_hex() -> None:
    assert (
        WeightsSource.model_validate(_weights(sha256_prefix="586e9e4e")).expected_hash == "586e9e4e"
    )
    for bad in ("586e9e4", "586e9e4e0", "586E9E4E", "586e9e4z"):
        with pytest.raises(
            ValidationError, match=r"sha256_prefix '\w+' must be exactly 8 lowercase hex"
        ):
            WeightsSource.model_validate(_weights(sha256_prefix=bad))
    with pytest.raises(ValidationError, match="give exactly one of"):
        WeightsSource.model_validate(_weights(sha256="a" * 64, sha256_prefix="aaaaaaaa"))


def test_rgb_bounds_are_inclusive() -> None:
    card = with_change(base_card(), "palette.1", [255, 255, 255])
    assert ModelCard.model_validate(card).palette[1] == (255, 255, 255)


def test_cards_are_frozen() -> None:
    card = ModelCard.model_validate(base_card())
    with pytest.raises(ValidationError, match="frozen"):
        card.name = "other"  # type: ignore[misc]


def test_unknown_palette_name_lists_the_choices() -> None:
    from zoo.errors import UsageError

    card = ModelCard.model_validate(base_card())
    with pytest.raises(UsageError, match="choose from default, seed_app"):
        card.palette_named("neon")


# -- JSON Schema -------------------------------------------------------------------------------
#
# Apps in Swift or Kotlin validate manifests against `zoo schema`. No JSON Schema library is
# installed here, so this is a small validator for exactly the keywords pydantic emits; it
# refuses keywords it does not know, so a schema change cannot slip past it.

_ANNOTATIONS = {"title", "description", "default", "$defs"}
_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def schema_errors(
    value: Any, schema: dict[str, Any], root: dict[str, Any], at: str = "$"
) -> list[str]:
    unknown = (
        set(schema)
        - _ANNOTATIONS
        - {
            "$ref",
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "prefixItems",
            "minItems",
            "maxItems",
            "enum",
            "const",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "anyOf",
            "pattern",
            "minLength",
            "maxLength",
            "maxProperties",
        }
    )
    assert not unknown, f"validator does not know keywords {unknown} at {at}"
    errors: list[str] = []
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        errors += schema_errors(value, root["$defs"][ref.removeprefix("#/$defs/")], root, at)
    if "anyOf" in schema and all(schema_errors(value, s, root, at) for s in schema["anyOf"]):
        errors.append(f"{at}: matches none of anyOf")
    if "type" in schema:
        expected = _TYPES[schema["type"]]
        if not isinstance(value, expected) or (
            isinstance(value, bool) and schema["type"] != "boolean"
        ):
            return [*errors, f"{at}: expected {schema['type']}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{at}: {value!r} != {schema['const']!r}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{at}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, str) and not schema.get("minLength", 0) <= len(value) <= schema.get(
        "maxLength", len(value)
    ):
        errors.append(f"{at}: length {len(value)} outside the schema's bounds")
    if isinstance(value, dict) and len(value) > schema.get("maxProperties", len(value)):
        errors.append(f"{at}: {len(value)} properties > maxProperties")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{at}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{at}: {value} > maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{at}: {value} <= exclusiveMinimum {schema['exclusiveMinimum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{at}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key in props:
                errors += schema_errors(item, props[key], root, f"{at}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{at}: unexpected {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(item, schema["additionalProperties"], root, f"{at}.{key}")
    if isinstance(value, list):
        low, high = schema.get("minItems", 0), schema.get("maxItems", len(value))
        if not low <= len(value) <= high:
            errors.append(f"{at}: {len(value)} items outside [{low}, {high}]")
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items")
            if sub is not None:
                errors += schema_errors(item, sub, root, f"{at}[{i}]")
    return errors


@pytest.fixture(scope="module")
def card_schema() -> dict[str, Any]:
    # Round-trip through JSON: what an app receives from `zoo schema`.
    return json.loads(json.dumps(ModelCard.model_json_schema()))


def test_json_schema_accepts_every_builtin_card(card_schema: dict[str, Any]) -> None:
    assert card_schema["type"] == "object"
    assert card_schema["additionalProperties"] is False
    for raw in builtin_cards():
        dumped = ModelCard.model_validate(raw).model_dump(mode="json")
        assert schema_errors(dumped, card_schema, card_schema) == [], raw["name"]


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        ("palette.3", [256, 0, 0], "$.palette[3][0]: 256 > maximum 255"),
        ("palette.3", [0, 0], "$.palette[3]: 2 items outside [3, 3]"),
        ("preprocessing.mean", [0.5, 0.5], "$.preprocessing.mean: 2 items outside [3, 3]"),
        ("preprocessing.std", [0.2, 0.0, 0.2], "$.preprocessing.std[1]: 0.0 <= exclusiveMinimum 0"),
        ("name", "Deeplab-V3", "$.name: 'Deeplab-V3' does not match ^[a-z0-9_]+$"),
        ("weights.0.sha256", "cd0a2569", "$.weights[0].sha256: 'cd0a2569' does not match"),
        ("output.kind", "list", "$.output.kind: 'list' not in ['dict', 'tensor']"),
        ("licence", "MIT", "$: unexpected 'licence'"),
        ("preprocessing.input_size", [520, 9000], "$.preprocessing.input_size[1]: 9000 > maximum"),
        ("name", "n" * 101, "$.name: length 101 outside the schema's bounds"),
        ("architecture", "os:system", "$.architecture: 'os:system' does not match"),
        ("links.0.url", "file:///etc/passwd", "$.links[0].url: 'file:///etc/passwd' does not"),
    ],
)
def test_json_schema_rejects_what_the_card_rejects(
    card_schema: dict[str, Any], path: str, value: Any, complaint: str
) -> None:
    dumped = ModelCard.model_validate(base_card()).model_dump(mode="json")
    bad = with_change(dumped, path, value)
    with pytest.raises(ValidationError):
        ModelCard.model_validate(bad)
    errors = schema_errors(bad, card_schema, card_schema)
    assert any(complaint in e for e in errors), errors
