"""The catalogue commands end to end, in subprocesses: output, exit codes, error lines.

``zoo list``, ``zoo info``, ``zoo plugins`` and ``zoo schema``; ``--registry`` and
``ZOO_REGISTRY``; ``--help``; and the rule that errors are one line without ``--debug``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BUILTIN_MODELS, run_zoo
from zoo.catalog.registry import builtin_registry_path
from zoo.catalog.schema import ModelCard
from zoo.catalog.yamlio import load_yaml

SEVEN = BUILTIN_MODELS


def ok_json(*args: str, env: dict[str, str] | None = None) -> Any:
    result = run_zoo([*args, "--json"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def extra_registry(path: Path, *names: str) -> Path:
    """A registry file holding copies of the single_conv card under ``names``."""
    raw = next(
        c for c in load_yaml(builtin_registry_path())["models"] if c["name"] == "single_conv"
    )
    cards = [{**copy.deepcopy(raw), "name": n} for n in names]
    path.write_text(yaml.safe_dump({"version": 1, "models": cards}, sort_keys=False))
    return path


def assert_one_error_line(stderr: str, expected: str) -> None:
    assert stderr.splitlines() == [expected], stderr
    assert "Traceback" not in stderr


# -- zoo list ------------------------------------------------------------------------------


def test_list_json_has_the_seven_models() -> None:
    rows = ok_json("list")
    assert [r["name"] for r in rows] == SEVEN
    by_name = {r["name"]: r for r in rows}
    assert by_name["deeplabv3_resnet50"] == {
        "name": "deeplabv3_resnet50",
        "family": "deeplabv3",
        "classes": 21,
        "output": "dict[out,aux?]",
        "params": 39638869,
        "weights_size": 168312177,
        "plugin": "deeplabv3",
    }
    assert by_name["lraspp_mobilenet_v3_large"]["output"] == "dict[out]"
    assert by_name["single_conv"] == {
        "name": "single_conv",
        "family": "single_conv",
        "classes": 23,
        "output": "tensor",
        "params": 644,
        "weights_size": None,
        "plugin": "single_conv",
    }


def test_list_table_and_glob() -> None:
    result = run_zoo(["list"])
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "name",
        "family",
        "classes",
        "output",
        "params",
        "weights",
        "plugin",
    ]
    assert [ln.split()[0] for ln in lines[1:]] == SEVEN
    assert "dict[out,aux?]" in lines[3] and "39.6M" in lines[3] and "160.5 MiB" in lines[3]

    assert [r["name"] for r in ok_json("list", "fcn_*")] == ["fcn_resnet101", "fcn_resnet50"]
    empty = run_zoo(["list", "vgg*"])
    assert (empty.returncode, empty.stdout) == (0, "no models match 'vgg*'\n")


# -- zoo info ------------------------------------------------------------------------------


def test_info_json_deeplabv3_resnet50() -> None:
    card = ok_json("info", "deeplabv3_resnet50")
    assert card["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert card["preprocessing"]["std"] == [0.229, 0.224, 0.225]
    assert card["preprocessing"]["color_order"] == "RGB"
    assert card["preprocessing"]["scale_divisor"] == 255
    assert card["output"]["kind"] == "dict"
    assert card["output"]["key"] == "out"
    assert card["output"]["optional_keys"] == ["aux"]
    assert card["num_classes"] == card["output"]["channels"] == 21
    assert len(card["labels"]) == 21
    assert card["labels"][15] == "person"
    assert len(card["palette"]) == 21
    assert card["palette"][15] == [192, 128, 128]  # VOC colour map
    assert card["palettes"]["seed_app"][15] == [255, 0, 0]
    assert card["num_params_with_aux"] == 42004074
    (weights,) = card["weights"]
    assert weights["sha256"].startswith("cd0a2569") and weights["includes_aux"] is True
    # the JSON is the validated card, whole
    assert ModelCard.model_validate(card).name == "deeplabv3_resnet50"


def test_info_json_single_conv() -> None:
    card = ok_json("info", "single_conv")
    assert card["num_classes"] == 23
    assert card["output"] == {
        "kind": "tensor",
        "key": None,
        "optional_keys": [],
        "channels": 23,
        "semantics": "logits",
    }
    assert len(card["labels"]) == len(card["palette"]) == 23
    assert card["num_params"] == 644
    assert card["weights"] == []


def test_info_for_humans() -> None:
    result = run_zoo(["info", "deeplabv3_resnet50"])
    assert result.returncode == 0
    out = result.stdout
    for fact in (
        "dict, read 'out' (optional: aux): [N, 21, H, W] logits",
        "[0.485, 0.456, 0.406] / [0.229, 0.224, 0.225]",
        "39,638,869 (42.0M with aux head)",
        "shorter side to 520",
        "seed_app",
    ):
        assert fact in out, fact
    assert " 15  person " in out
    tensor = run_zoo(["info", "single_conv"]).stdout
    assert "bare tensor: [N, 23, H, W] logits" in tensor
    assert "no published weights" in tensor


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x", "zoo: error: unknown model 'x'; see `zoo list`"),
        (
            "deeplab_resnet50",
            "zoo: error: unknown model 'deeplab_resnet50'; did you mean "
            "deeplabv3_resnet50, deeplabv3_resnet101, fcn_resnet50?",
        ),
        ("singleconv", "zoo: error: unknown model 'singleconv'; did you mean single_conv?"),
    ],
)
def test_unknown_model_exits_2_with_the_closest_names(name: str, message: str) -> None:
    result = run_zoo(["info", name])
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_error_line(result.stderr, message)


def test_debug_shows_the_traceback() -> None:
    result = run_zoo(["info", "x", "--debug"])
    assert result.returncode == 1  # the exception escapes: Python's own exit code
    assert "Traceback (most recent call last)" in result.stderr
    assert "zoo.errors.UnknownModelError: unknown model 'x'" in result.stderr


# -- extra registries ----------------------------------------------------------------------


def test_registry_option_merges_files_in_any_position(tmp_path: Path) -> None:
    a = extra_registry(tmp_path / "a.yaml", "extra_a")
    b = extra_registry(tmp_path / "b.yaml", "extra_b")
    for args in (
        ["list", "--registry", str(a)],
        ["--registry", str(a), "list"],
        ["list", "--registry", str(a), "--registry", str(b)],
        ["--registry", str(a), "list", "--registry", str(b)],
    ):
        names = [r["name"] for r in ok_json(*args)]
        expected = ["extra_a", "extra_b"] if str(b) in args else ["extra_a"]
        assert [n for n in names if n.startswith("extra")] == expected, args
        assert set(SEVEN) <= set(names)
    card = ok_json("info", "extra_b", "--registry", str(b))
    assert card["name"] == "extra_b" and card["plugin"] == "single_conv"


def test_zoo_registry_env_is_pathsep_separated(tmp_path: Path) -> None:
    a = extra_registry(tmp_path / "a.yaml", "env_a")
    b = extra_registry(tmp_path / "b.yaml", "env_b", "env_c")
    env = {"ZOO_REGISTRY": os.pathsep.join([str(a), str(b)])}
    names = [r["name"] for r in ok_json("list", "env_*", env=env)]
    assert names == ["env_a", "env_b", "env_c"]
    # the environment and the option add up
    c = extra_registry(tmp_path / "c.yaml", "opt_d")
    assert [r["name"] for r in ok_json("list", "*_[a-d]", "--registry", str(c), env=env)] == [
        "env_a",
        "env_b",
        "env_c",
        "opt_d",
    ]


def test_bad_registry_inputs_are_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run_zoo(["list"], env={"ZOO_REGISTRY": str(missing)})
    assert result.returncode == 2
    assert_one_error_line(
        result.stderr,
        f"zoo: error: ZOO_REGISTRY names {missing}, which is not a file; fix or unset it",
    )

    result = run_zoo(["list", "--registry", str(missing)])
    assert result.returncode == 2
    assert_one_error_line(result.stderr, f"zoo: error: registry file {missing} does not exist")

    broken = tmp_path / "broken.yaml"
    broken.write_text("models:\n- name: a\n  name: b\n")
    result = run_zoo(["info", "single_conv", "--registry", str(broken)])
    assert result.returncode == 2
    assert_one_error_line(
        result.stderr, f"zoo: error: {broken}:3:3: YAML syntax error: duplicate key 'name'"
    )

    invalid = extra_registry(tmp_path / "invalid.yaml", "Bad-Name")
    result = run_zoo(["list", "--registry", str(invalid)])
    assert result.returncode == 2
    assert_one_error_line(
        result.stderr,
        f"zoo: error: {invalid}:3: model 'Bad-Name': field name: name 'Bad-Name' must match "
        "[a-z0-9_]+ (lowercase, digits, '_')",
    )


def test_plugins_still_shows_when_the_catalogue_is_broken(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [\n")
    result = run_zoo(["plugins", "--json"], env={"ZOO_REGISTRY": str(broken)})
    assert result.returncode == 0
    assert result.stderr.startswith(f"zoo: warning: {broken}:2:1: YAML syntax error")
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"deeplabv3", "fcn", "single_conv"} <= set(rows)
    assert rows["single_conv"]["status"] == "ok"


# -- zoo plugins, zoo schema, help ---------------------------------------------------------


def test_plugins_lists_the_builtins_with_their_models() -> None:
    rows = {r["name"]: r for r in ok_json("plugins")}
    assert rows["deeplabv3"]["models"] == [
        "deeplabv3_mobilenet_v3_large",
        "deeplabv3_resnet101",
        "deeplabv3_resnet50",
    ]
    assert rows["single_conv"] == {
        "name": "single_conv",
        "module": "zoo_plugins.single_conv",
        "dist": rows["single_conv"]["dist"],
        "status": "ok",
        "models": ["single_conv"],
        "error": None,
        "problems": [],
    }
    assert rows["single_conv"]["dist"].startswith("zoo ")


@pytest.mark.parametrize("args", [["schema"], ["schema", "card"]])
def test_schema_prints_the_card_json_schema(args: list[str]) -> None:
    result = run_zoo(args)
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema == json.loads(json.dumps(ModelCard.model_json_schema()))
    assert schema["title"] == "ModelCard" and schema["type"] == "object"
    assert set(schema["required"]) >= {"name", "labels", "palette", "preprocessing", "output"}
    refs = {v["$ref"] for v in schema["properties"].values() if "$ref" in v}
    assert refs == {"#/$defs/Preprocessing", "#/$defs/OutputContract"}
    assert all(ref.removeprefix("#/$defs/") in schema["$defs"] for ref in refs)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--help"],
            ["list", "info", "plugins", "schema", "ZOO_REGISTRY", "--registry", "--debug"],
        ),
        (["list", "--help"], ["pattern", "--json", "--registry"]),
        (["info", "--help"], ["name", "--json"]),
        (["plugins", "--help"], ["--json"]),
        (["schema", "--help"], ["card", "manifest"]),
    ],
)
def test_help(args: list[str], expected: list[str]) -> None:
    result = run_zoo(args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: zoo")
    for word in expected:
        assert word in result.stdout


def test_usage_errors() -> None:
    bare = run_zoo([])
    assert bare.returncode == 2 and bare.stderr.startswith("usage: zoo") and not bare.stdout
    bad = run_zoo(["list", "--bogus"])
    assert bad.returncode == 2
    assert_one_error_line(
        bad.stderr, "zoo: error: unrecognized arguments: --bogus (see `zoo --help`)"
    )
    nothing = run_zoo(["frobnicate"])
    assert nothing.returncode == 2
    assert "invalid choice: 'frobnicate'" in nothing.stderr and "Traceback" not in nothing.stderr
    version = run_zoo(["--version"])
    assert (version.returncode, version.stdout.split()[0]) == (0, "zoo")


# -- card text is shown as text ----------------------------------------------------------------

HOSTILE_TEXT = {
    "description": "[red]x[/] then \x1b[2J and \x1b]0;pwned\x07 and \u202eevil",
    "family": "[bold]fam[/]\x1b[31m",
    "license": "\x1b]8;;https://evil.invalid\x1b\\MIT",
}


def hostile_registry(path: Path) -> Path:
    raw = next(
        c for c in load_yaml(builtin_registry_path())["models"] if c["name"] == "single_conv"
    )
    card = {**copy.deepcopy(raw), "name": "hostile", **HOSTILE_TEXT}
    card["labels"] = ["[link=https://evil.invalid]bg[/link]", *card["labels"][1:]]
    card["links"] = [{"title": "[blink]paper[/]", "url": "https://example.invalid/[red]x"}]
    path.write_text(yaml.safe_dump({"models": [card]}, allow_unicode=True))
    return path


DANGEROUS = ("\x1b[2J", "\x1b]", "\x07", "\u202e", "\x1b[31m")


@pytest.mark.parametrize("force_colour", [False, True], ids=["pipe", "terminal-colours"])
def test_card_text_is_printed_literally_never_as_markup_or_escapes(
    tmp_path: Path, force_colour: bool
) -> None:
    path = hostile_registry(tmp_path / "hostile.yaml")
    env = {"FORCE_COLOR": "1", "COLUMNS": "200"} if force_colour else {}
    info = run_zoo(["info", "hostile", "--registry", str(path)], env=env)
    assert info.returncode == 0, info.stderr
    out = info.stdout
    for shown in ("[red]x[/] then \\x1b[2J and \\x1b]0;pwned\\x07 and \\u202eevil",
                  "[bold]fam[/]\\x1b[31m", "[link=https://evil.invalid]bg[/link]",
                  "[blink]paper[/]", "https://example.invalid/[red]x",
                  "\\x1b]8;;https://evil.invalid\\x1b\\MIT"):
        assert shown in out, shown
    assert not [seq for seq in DANGEROUS if seq in out]
    if not force_colour:
        assert "\x1b" not in out

    listed = run_zoo(["list", "hostile", "--registry", str(path)], env=env)
    assert listed.returncode == 0, listed.stderr
    assert "[bold]fam[/]\\x1b[31m" in listed.stdout
    assert "\x1b" not in listed.stdout  # piped: no colour at all
    as_json = json.loads(run_zoo(["list", "hostile", "--json", "--registry", str(path)]).stdout)
    assert as_json[0]["family"] == HOSTILE_TEXT["family"]  # data stays exact in JSON


def test_plugin_errors_are_shown_as_text_by_zoo_plugins(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from zoo.catalog.plugins import PluginHost, hookimpl
    from zoo.catalog.registry import Registry
    from zoo.cli.catalog import cmd_plugins

    class Hostile:
        @hookimpl
        def zoo_models(self) -> Any:
            raise RuntimeError("[red]boom[/] \x1b[2J")

    host = PluginHost()
    host.register(Hostile(), "hostile_plugin")
    registry = Registry(host=host)
    capsys.readouterr()
    assert cmd_plugins(argparse.Namespace(json=False), registry) == 0
    out = capsys.readouterr().out
    assert "[red]boom[/] \\x1b[2J" in out and "\x1b" not in out


def test_a_non_utf8_registry_file_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("models:\n- name: café\n".encode("latin-1"))
    for args in (["list", "--registry", str(path)], ["info", "x", "--registry", str(path)]):
        result = run_zoo(args)
        assert result.returncode == 2
        assert_one_error_line(
            result.stderr,
            f"zoo: error: {path}: not UTF-8 text (byte 0xe9 at offset 19); save the file as UTF-8",
        )
    env_result = run_zoo(["list"], env={"ZOO_REGISTRY": str(path)})
    assert env_result.returncode == 2 and "not UTF-8 text" in env_result.stderr


def test_list_is_the_same_cold_and_warm(tmp_path: Path) -> None:
    path = extra_registry(tmp_path / "a.yaml", "warm_a", "warm_b")
    cold = run_zoo(["list", "--registry", str(path)])
    warm = run_zoo(["list", "--registry", str(path)])
    assert cold.returncode == warm.returncode == 0
    assert cold.stdout == warm.stdout and "warm_b" in warm.stdout
