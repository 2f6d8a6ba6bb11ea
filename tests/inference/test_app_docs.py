"""docs/apps.md: the iOS and Android snippets say what a real manifest says.

Every constant marked ``// manifest: FIELD`` is compared with that field of a manifest that
``zoo fetch`` really writes (lraspp_mobilenet_v3_large, which shares deeplabv3_resnet50's
preprocessing, output key, labels and palettes) and with deeplabv3_resnet50's card facts, the
model the snippets name. The code that reads the manifest at run time is parsed too: Swift's
``Decodable`` structs against ``zoo schema manifest`` (field names, optionality, types), and
the Kotlin/Java ``getJSONObject("...")`` and Objective-C ``dict[@"..."]`` chains against the
real manifest's keys.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from typing import Any

import pytest

import zoo
from tests.conftest import ROOT
from zoo.cli.main import main
from zoo.export.manifest import model_facts

DOC = ROOT / "docs" / "apps.md"
LANGUAGES = ("swift", "objc", "kotlin", "java")
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
MARK = re.compile(r"^(?P<code>.*?)//\s*manifest:\s*(?P<path>[\w.\[\]]+)\s*$")
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?=[fF]?\b)")
STRING = re.compile(r'"([^"]*)"')
JSON_CHAIN = re.compile(r'\b([A-Za-z_]\w*)((?:\s*\.\s*(?:get|opt)\w*\("[^"]*"\))+)')
JSON_ASSIGN = re.compile(r'\b(\w+)\s*=\s*([A-Za-z_]\w*)((?:\.(?:get|opt)\w*\("[^"]*"\))+)')
OBJC_CHAIN = re.compile(r'\b([A-Za-z_]\w*)((?:\[@"[^"]*"\])+)')
OBJC_ASSIGN = re.compile(r'\*\s*(\w+)\s*=\s*([A-Za-z_]\w*)((?:\[@"[^"]*"\])+)')
SWIFT_STRUCT = re.compile(r"struct (\w+): Decodable \{\n(.*?)\n\}", re.S)
SWIFT_FIELD = re.compile(r"^\s*let (\w+): ([^/\n]+?)\s*(?://.*)?$", re.M)
READS = {"untrained", "model.preprocessing.mean", "model.preprocessing.std",
         "model.preprocessing.input_size", "output.kind", "output.key", "model.palette"}
MARKS = {"model.preprocessing.mean", "model.preprocessing.std", "output.key",
         "output.channels"}


@pytest.fixture(scope="module")
def blocks() -> dict[str, str]:
    found: dict[str, str] = {}
    for lang, code in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        if lang in LANGUAGES:
            found[lang] = found.get(lang, "") + code
    assert sorted(found) == sorted(LANGUAGES)
    return found


@pytest.fixture(scope="module")
def real_manifest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A manifest written by ``zoo fetch`` (untrained: only its facts matter here)."""
    out = tmp_path_factory.mktemp("app_docs")
    mp = pytest.MonkeyPatch()
    mp.setenv("ZOO_HOME", str(out / "home"))
    try:
        code = main(["fetch", "lraspp_mobilenet_v3_large", "--format", "lite", "--weights",
                     "none", "--input-size", "64x96", "-o", str(out), "--quiet"])
    finally:
        mp.undo()
    assert code == 0
    path = out / "lraspp_mobilenet_v3_large.ptl.manifest.json"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def manifest_schema() -> dict[str, Any]:
    """``zoo schema manifest``, as an app would fetch it."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["schema", "manifest"]) == 0
    return json.loads(buffer.getvalue())


def deeplab_facts() -> dict[str, Any]:
    card = zoo.get("deeplabv3_resnet50")
    return {"model": model_facts(card).model_dump(mode="json"),
            "output": card.output.model_dump(mode="json")}


def lookup(doc: Any, path: str) -> Any:
    """``model.palettes.seed_app[15]`` in a JSON document; KeyError names the missing part."""
    value = doc
    for part in path.split("."):
        name, _, index = part.partition("[")
        if not isinstance(value, dict) or name not in value:
            raise KeyError(f"{path}: no {name!r}")
        value = value[name]
        if index:
            value = value[int(index.rstrip("]"))]
    return value


def flat_numbers(value: Any) -> list[float]:
    if isinstance(value, list):
        return [x for item in value for x in flat_numbers(item)]
    return [float(value)]


def marked_constants(code: str) -> list[tuple[str, str]]:
    """(path, code before the comment) of every ``// manifest: PATH`` line."""
    return [(m["path"], m["code"]) for line in code.splitlines() if (m := MARK.match(line))]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_marked_constants_match_the_manifest_and_the_card(
    lang: str, blocks: dict[str, str], real_manifest: dict[str, Any]
) -> None:
    marks = marked_constants(blocks[lang])
    paths = {p for p, _ in marks}
    assert paths >= MARKS, f"{lang}: missing {sorted(MARKS - paths)}"
    assert any(p.startswith("model.palette") for p in paths), f"{lang}: no palette colour"
    for path, code in marks:
        for source, doc in (("manifest", real_manifest), ("deeplabv3_resnet50", deeplab_facts())):
            want = lookup(doc, path)
            if isinstance(want, str):
                got: Any = STRING.findall(code)
                assert got == [want], f"{lang}: {path} is {want!r} in the {source}: {code}"
            else:
                got = [float(n) for n in NUMBER.findall(code)]
                assert got == pytest.approx(flat_numbers(want), abs=1e-12), \
                    f"{lang}: {path} is {want} in the {source}: {code.strip()}"


def resolve_chains(code: str, chain: re.Pattern[str], assign: re.Pattern[str],
                   split: re.Pattern[str], doc: dict[str, Any]) -> set[str]:
    """Every key path the code reads from ``manifest`` (following simple assignments), each
    checked to exist in ``doc``."""
    roots: dict[str, list[str]] = {"manifest": []}
    read: set[str] = set()
    for line in code.splitlines():
        for base, tail in chain.findall(line):
            if base not in roots:
                continue
            path = ".".join([*roots[base], *split.findall(tail)])
            lookup(doc, path)  # raises KeyError naming the field that is not there
            read.add(path)
        for name, base, tail in assign.findall(line):
            if base in roots:
                roots[name] = [*roots[base], *split.findall(tail)]
    return read


@pytest.mark.parametrize("lang", ["kotlin", "java", "objc"])
def test_runtime_reads_use_the_manifest_field_names(
    lang: str, blocks: dict[str, str], real_manifest: dict[str, Any]
) -> None:
    if lang == "objc":
        read = resolve_chains(blocks[lang], OBJC_CHAIN, OBJC_ASSIGN, re.compile(r'\[@"([^"]*)"\]'),
                              real_manifest)
    else:
        read = resolve_chains(blocks[lang], JSON_CHAIN, JSON_ASSIGN,
                              re.compile(r'\("([^"]*)"\)'), real_manifest)
    assert read >= READS, f"{lang}: never reads {sorted(READS - read)}"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _schema_type(prop: dict[str, Any]) -> tuple[str, bool]:
    """(type or $defs name, nullable) of a JSON Schema property."""
    options = prop.get("anyOf") or prop.get("allOf") or [prop]
    nullable = any(o.get("type") == "null" for o in options)
    main_option = next(o for o in options if o.get("type") != "null")
    ref = main_option.get("$ref")
    return (ref.rsplit("/", 1)[-1] if ref else main_option["type"]), nullable


SWIFT_TYPES = {"string": ("String",), "number": ("Float", "Double"), "integer": ("Int",),
               "boolean": ("Bool",), "array": ("[",), "object": ("[String:",)}


def test_swift_decodables_match_zoo_schema_manifest(
    blocks: dict[str, str], manifest_schema: dict[str, Any], real_manifest: dict[str, Any]
) -> None:
    structs = {name: SWIFT_FIELD.findall(body)
               for name, body in SWIFT_STRUCT.findall(blocks["swift"])}
    assert sorted(structs) == ["Manifest", "ModelFacts", "OutputContract", "Preprocessing"]
    defs = manifest_schema["$defs"]
    paths: set[str] = set()

    def walk(struct: str, schema: dict[str, Any], prefix: str) -> None:
        for field, swift_type in structs[struct]:
            key = _snake(field)
            assert key in schema["properties"], f"{struct}.{field}: no {key!r} in the schema"
            kind, nullable = _schema_type(schema["properties"][key])
            assert swift_type.endswith("?") == nullable, f"{struct}.{field}: {swift_type}"
            bare = swift_type.rstrip("?")
            path = f"{prefix}{key}"
            lookup(real_manifest, path)
            paths.add(path)
            if kind in defs:
                assert bare == kind, f"{struct}.{field} should decode a {kind}"
                walk(kind, defs[kind], f"{path}.")
            else:
                assert bare.startswith(SWIFT_TYPES[kind]), f"{struct}.{field}: {swift_type}"

    walk("Manifest", manifest_schema, "")
    assert paths >= READS
    assert "keyDecodingStrategy = .convertFromSnakeCase" in blocks["swift"]


def test_docs_name_only_palettes_and_labels_that_exist(real_manifest: dict[str, Any]) -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in set(re.findall(r'"(seed_app|\w+_app)"', text)):
        assert name in real_manifest["model"]["palettes"]
    card = zoo.get("deeplabv3_resnet50")
    for label, colour in (("person", "red"), ("dog", "green"), ("sheep", "blue")):
        rgb = card.palette_named("seed_app")[card.labels.index(label)]
        assert rgb == {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}[colour]
        assert f"{label} {colour}" in text


JS_CHAIN = re.compile(r"\b([A-Za-z_]\w*)((?:\.[a-z_][a-z0-9_]*)+)")
JS_ASSIGN = re.compile(r"\bconst (\w+) = ([A-Za-z_]\w*)((?:\.[a-z_][a-z0-9_]*)+);")
JS_READS = {"untrained", "model.preprocessing.mean", "model.preprocessing.std",
            "model.preprocessing.scale_divisor", "model.preprocessing.color_order",
            "model.preprocessing.resize", "model.preprocessing.resize_size", "output.kind",
            "output.key", "output.channels", "model.palette", "export.input_shape"}


def test_javascript_reads_use_the_manifest_field_names(real_manifest: dict[str, Any]) -> None:
    """The ONNX Runtime (Node/web) snippet reads only fields a real manifest has, and every
    fact an app needs."""
    code = "".join(c for lang, c in BLOCK.findall(DOC.read_text(encoding="utf-8"))
                   if lang == "javascript")
    assert "onnxruntime" in code
    roots: dict[str, list[str]] = {"manifest": []}
    read: set[str] = set()
    for line in code.splitlines():
        for name, base, tail in JS_ASSIGN.findall(line):
            if base in roots:
                roots[name] = [*roots[base], *tail.strip(".").split(".")]
        for base, tail in JS_CHAIN.findall(line):
            if base not in roots:
                continue
            parts = [p for p in tail.strip(".").split(".") if p != "length"]
            path = ".".join([*roots[base], *parts])
            if path:
                lookup(real_manifest, path)  # KeyError names a field that is not there
                read.add(path)
    assert read >= JS_READS, f"never reads {sorted(JS_READS - read)}"


def test_every_2026_runtime_has_its_app_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    for heading in ("## iOS, Swift: Core ML", "## iOS, Swift: ExecuTorch", "## iOS, Swift: LiteRT",
                    "## Android, Kotlin: ExecuTorch", "## Android, Kotlin: LiteRT",
                    "## JavaScript: ONNX Runtime (Node and web)"):
        assert heading in text, heading
    assert text.count("deprecated") >= 3  # the lite interpreter is kept, and marked
