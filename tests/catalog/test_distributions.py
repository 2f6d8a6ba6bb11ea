"""zoo.catalog.distributions reads entry points and versions exactly as importlib.metadata does."""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
import zipfile
from pathlib import Path

import pytest

from zoo.catalog import distributions


def _from_metadata(group: str) -> list[tuple[str, str, str]]:
    found = []
    for ep in md.entry_points(group=group):
        found.append((ep.name, ep.value, f"{ep.dist.metadata['Name']} {ep.dist.version}"))
    return sorted(found)


@pytest.mark.parametrize("group", ["zoo", "console_scripts", "pytest11"])
def test_entry_points_match_importlib_metadata(group: str) -> None:
    ours = sorted(tuple(ep) for ep in distributions.entry_points(group))
    assert ours == _from_metadata(group)
    if group != "pytest11":
        assert ours  # the comparison is not of two empty lists


def test_versions_match_importlib_metadata() -> None:
    names = ["pydantic", "pydantic-core", "PyYAML", "pyyaml", "torch", "Pluggy", "zoo"]
    got = distributions.versions(*names, "no-such-dist-zoo")
    assert got == {**{n: md.version(n) for n in names}, "no-such-dist-zoo": None}


def _fake_dist(root: Path, name: str, version: str, entry_points: str) -> None:
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n"
                                   "Name: not-a-header\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_first_distribution_on_path_wins_and_sections_parse_like_importlib(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    text = ("# comment\n[zoo]\n  alpha = pkg.alpha : plugin [extra]\n\n[other]\nbeta = x:y\n"
            "[zoo]\ngamma=pkg.gamma\n")
    _fake_dist(first, "Zoo-Fake.Plugin", "1.0", text)
    _fake_dist(second, "zoo_fake-plugin", "2.0", "[zoo]\nshadowed = pkg.shadowed\n")
    monkeypatch.setattr(sys, "path", [str(first), str(second), *sys.path])
    ours = [tuple(ep) for ep in distributions.entry_points("zoo")]
    assert sorted(ours) == _from_metadata("zoo")
    assert ("alpha", "pkg.alpha : plugin [extra]", "Zoo-Fake.Plugin 1.0") in ours
    assert not any(name == "shadowed" for name, _, _ in ours)
    assert distributions.versions("zoo-fake-plugin") == {"zoo-fake-plugin": "1.0"}


def test_zip_on_sys_path_falls_back_to_importlib_metadata(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("zipped-3.0.dist-info/METADATA", "Name: zipped\nVersion: 3.0\n\n")
        zf.writestr("zipped-3.0.dist-info/entry_points.txt", "[zoo]\nzipped = zipped_mod\n")
    monkeypatch.setattr(sys, "path", [*sys.path, os.fspath(archive)])
    ours = [tuple(ep) for ep in distributions.entry_points("zoo")]
    assert ("zipped", "zipped_mod", "zipped 3.0") in ours
    assert sorted(ours) == _from_metadata("zoo")
    assert distributions.versions("zipped") == {"zipped": "3.0"}


def test_load_follows_entry_point_semantics() -> None:
    assert distributions.load("os.path:join") is os.path.join
    assert distributions.load("os.path") is os.path
    assert distributions.load("os: path.join [extra]") is os.path.join
    with pytest.raises(ValueError, match="not 'module:attribute'"):
        distributions.load("not a value!")
    with pytest.raises(ModuleNotFoundError):
        distributions.load("zoo_no_such_module:thing")


def test_headers_are_case_insensitive_and_eggs_fall_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "site" / "lower-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("metadata-version: 2.1\nname: lower\nversion: 1.0\n\n")
    (info / "entry_points.txt").write_text("[zoo]\nlower = lower_mod\n")
    egg = tmp_path / "eggy-2.0-py3.11.egg" / "EGG-INFO"
    egg.mkdir(parents=True)
    (egg / "PKG-INFO").write_text("Name: eggy\nVersion: 2.0\n\n")
    (egg / "entry_points.txt").write_text("[zoo]\neggy = eggy_mod\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), *sys.path])
    assert ("lower", "lower_mod", "lower 1.0") in distributions.entry_points("zoo")
    assert distributions.versions("lower") == {"lower": "1.0"}
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path / "eggy-2.0-py3.11.egg")])
    ours = [tuple(ep) for ep in distributions.entry_points("zoo")]
    assert ("eggy", "eggy_mod", "eggy 2.0") in ours  # the directory egg is found
    assert sorted(ours) == _from_metadata("zoo")
