"""A plugin's card problems are its own, named, and shown where an author looks (issue 21).

The plugins are ``tests/support/plugins/zoo-test-card-problems``, built into a wheel and
installed with pip like the others: ``cards_partial`` (two good cards and one whose ``mean``
has two values, in one YAML file), ``cards_twice`` (one name in its YAML file and again as a
card dict) and ``cards_unknown`` (a card whose architecture no plugin registers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BUILTIN_MODELS, run_zoo
from tests.support.plugins import pythonpath, session_site, session_workdir

DIST = "zoo-test-card-problems"
SPOTS = "zoo_test_card_problems"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return session_site(session_workdir(tmp_path_factory.getbasetemp()))


@pytest.fixture
def env(site: dict[str, Path]) -> dict[str, str]:
    return pythonpath(site[DIST])


def plugin_rows(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    result = run_zoo(["plugins", "--json"], env=env)
    assert result.returncode == 0, result.stderr
    return {r["name"]: r for r in json.loads(result.stdout)}


def line_of(path: Path, text: str, after: str = "") -> int:
    """The 1-based line of the first line equal to ``text`` (stripped) after line ``after``."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    start = lines.index(after) if after else 0
    return lines.index(text, start) + 1


def test_one_bad_card_disables_only_itself_and_says_where(
        site: dict[str, Path], env: dict[str, str]) -> None:
    yaml_file = site[DIST] / SPOTS / "partial.yaml"
    mean = line_of(yaml_file, "mean: [0.5, 0.5]")
    detail = (f"{yaml_file}:{mean}: model 'partial_bad': field preprocessing.mean: too few "
              "items (got 2)")

    listing = run_zoo(["list", "--json"], env=env)
    assert listing.returncode == 0, listing.stderr
    names = {r["name"] for r in json.loads(listing.stdout)}
    assert {"partial_good_a", "partial_good_b"} <= names and "partial_bad" not in names
    assert (f"zoo: warning: plugin 'cards_partial': {detail}; this model is unavailable, the "
            "plugin's other models are not affected") in listing.stderr.splitlines()

    row = plugin_rows(env)["cards_partial"]
    assert row["status"] == "partial" and row["error"] is None
    assert row["models"] == ["partial_good_a", "partial_good_b"]
    assert row["problems"] == [detail]

    info = run_zoo(["info", "partial_bad"], env=env)
    assert info.returncode == 2
    assert info.stderr.splitlines()[-1] == (
        f"zoo: error: model 'partial_bad' is unavailable: plugin 'cards_partial' ({DIST} "
        f"0.1.0): {detail}; the plugin must fix this card (its other models work)")
    assert "Traceback" not in info.stderr
    good = run_zoo(["info", "partial_good_b", "--json"], env=env)
    assert good.returncode == 0 and json.loads(good.stdout)["plugin"] == "cards_partial"


def test_a_name_one_plugin_defines_twice_says_so_with_both_places(
        site: dict[str, Path], env: dict[str, str]) -> None:
    yaml_file = site[DIST] / SPOTS / "twice.yaml"
    text = (f"plugin 'cards_twice' ({DIST} 0.1.0) defines model 'twice_model' twice "
            f"({yaml_file}:{line_of(yaml_file, '- name: twice_model')} and zoo_models() item 2 "
            "(a card dict))")
    listing = run_zoo(["list", "--json"], env=env)
    names = {r["name"] for r in json.loads(listing.stdout)}
    assert "twice_only" in names and "twice_model" not in names
    assert f"zoo: warning: {text}; it is unavailable until one is removed" in \
        listing.stderr.splitlines()
    assert "defined by both" not in listing.stderr

    row = plugin_rows(env)["cards_twice"]
    assert (row["status"], row["models"]) == ("partial", ["twice_only"])
    assert row["problems"] == [f"{text}; it is unavailable until one is removed"]

    info = run_zoo(["info", "twice_model"], env=env)
    assert info.returncode == 1  # the plugin's mistake
    assert info.stderr.splitlines()[-1] == (
        f"zoo: error: {text}; the plugin must rename or drop one of them")


def test_an_unknown_architecture_is_reported_by_plugins_list_and_info(
        env: dict[str, str]) -> None:
    problem_start = ("model 'unknown_arch_model': no plugin provides architecture "
                     "'no_such_builder' (known: ")
    listing = run_zoo(["list"], env=env)
    assert listing.returncode == 0
    assert "unknown_arch_model" in listing.stdout  # a valid card: listed, and warned about
    warned = [ln for ln in listing.stderr.splitlines() if "no_such_builder" in ln]
    assert len(warned) == 1 and warned[0].startswith(f"zoo: warning: {problem_start}")
    for known in ("partial_arch", "twice_arch", "single_conv", "deeplabv3_resnet50"):
        assert known in warned[0]
    assert warned[0].endswith("); install the plugin or fix 'architecture'")

    row = plugin_rows(env)["cards_unknown"]
    assert (row["status"], row["models"]) == ("partial", ["unknown_arch_model"])
    assert len(row["problems"]) == 1 and row["problems"][0].startswith(problem_start)

    info = run_zoo(["info", "unknown_arch_model"], env={**env, "COLUMNS": "400"})
    assert info.returncode == 0, info.stderr
    assert "builder" in info.stdout and "unavailable: model 'unknown_arch_model'" in info.stdout
    assert next(ln for ln in info.stderr.splitlines() if "no_such_builder" in ln).startswith(
        f"zoo: warning: {problem_start}")
    as_json = run_zoo(["info", "unknown_arch_model", "--json"], env=env)
    assert json.loads(as_json.stdout)["architecture"] == "no_such_builder"
    assert problem_start in as_json.stderr
    fine = run_zoo(["info", "partial_good_a"], env=env)
    assert fine.returncode == 0 and "no plugin provides" not in fine.stdout + fine.stderr


_MODULES_AFTER = """
import json, sys
from zoo.cli.main import main
code = main(sys.argv[1:])
sys.stdout.flush()
print(json.dumps([code, sorted(sys.modules)]), file=sys.stderr)
"""


def test_list_and_info_import_no_builder_and_no_torch(env: dict[str, str]) -> None:
    for args in (["list"], ["info", "unknown_arch_model"], ["info", "partial_good_a"]):
        proc = subprocess.run([sys.executable, "-c", _MODULES_AFTER, *args],
                              capture_output=True, text=True, env={**os.environ, **env},
                              timeout=120, check=False)
        code, imported = json.loads(proc.stderr.splitlines()[-1])
        assert code == 0, proc.stderr
        assert "zoo_test_card_problems.partial" in imported  # the plugin was loaded ...
        assert "zoo_test_card_problems.model" not in imported  # ... its builder was not
        assert not {m for m in imported if m.split(".")[0] == "torch"}, args


def test_a_builder_installed_later_is_seen_despite_the_compiled_registry(
        site: dict[str, Path], tmp_path: Path) -> None:
    """The architecture check is made on every run, never frozen into a compiled entry."""
    from zoo.catalog.registry import builtin_registry_path
    from zoo.catalog.yamlio import load_yaml

    raw = next(c for c in load_yaml(builtin_registry_path())["models"]
               if c["name"] == "single_conv")
    card = {**raw, "name": "needs_tiny", "architecture": "tiny_segnet"}  # the example's builder
    registry = tmp_path / "team.yaml"
    registry.write_text(yaml.safe_dump({"version": 1, "models": [card]}, sort_keys=False))
    env = {"ZOO_REGISTRY": str(registry)}
    for _ in range(2):  # cold, then from the compiled entry
        before = run_zoo(["list"], env=env)
        assert before.returncode == 0 and "needs_tiny" in before.stdout
        assert "'needs_tiny': no plugin provides architecture 'tiny_segnet'" in before.stderr
    after = run_zoo(["list"], env={**env, **pythonpath(site["zoo-example-plugin"])})
    assert after.returncode == 0 and "needs_tiny" in after.stdout
    assert after.stderr == ""
    # a card of a registry file has no plugin row: `zoo plugins` says it on stderr
    plugins = run_zoo(["plugins", "--json"], env=env)
    assert plugins.returncode == 0
    assert "'needs_tiny': no plugin provides architecture 'tiny_segnet'" in plugins.stderr


def test_yaml_field_errors_in_a_list_name_the_line(tmp_path: Path) -> None:
    from zoo.catalog.registry import builtin_registry_path
    from zoo.catalog.yamlio import load_yaml

    raw = next(c for c in load_yaml(builtin_registry_path())["models"]
               if c["name"] == "single_conv")
    short_mean = {**raw, "name": "short_mean",
                  "preprocessing": {**raw["preprocessing"], "mean": [0.5, 0.5]}}
    bad_colour = {**raw, "name": "bad_colour"}
    bad_colour["palette"] = [list(c) for c in raw["palette"]]
    bad_colour["palette"][3] = [0, 300, 0]
    for card, field, found, problem in [
        (short_mean, "preprocessing.mean", "mean: [0.5, 0.5]", "too few items (got 2)"),
        (bad_colour, "palette.3.1", "- [0, 300, 0]",
         "Input should be less than or equal to 255"),
    ]:
        path = tmp_path / f"{card['name']}.yaml"
        path.write_text(yaml.safe_dump({"version": 1, "models": [raw | {"name": "fine"}, card]},
                                       sort_keys=False, default_flow_style=None))
        line = line_of(path, found, after=f"- name: {card['name']}")
        result = run_zoo(["list", "--registry", str(path)])
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"zoo: error: {path}:{line}: model {card['name']!r}: field {field}: {problem}"]


def test_the_builtin_catalogue_has_no_problems() -> None:
    listing = run_zoo(["list", "--json"])
    assert listing.returncode == 0 and listing.stderr == ""
    assert {r["name"] for r in json.loads(listing.stdout)} == set(BUILTIN_MODELS)
    rows = plugin_rows({})
    assert all(r["status"] == "ok" and r["problems"] == [] for r in rows.values())
