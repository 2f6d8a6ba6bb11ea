"""What is installed is named: a broken distribution is one warning (never an internal error),
another distribution cannot take a built-in plugin's name, and one registry file reached by
two paths is read once. Real ``python -m zoo`` processes with their own ZOO_HOME, and fake
distributions in a folder on ``PYTHONPATH``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.catalog.test_registry import card_data, write_registry
from tests.conftest import run_zoo
from zoo.catalog import distributions
from zoo.catalog.registry import Registry


def _dist(site: Path, name: str, entry_points: bytes, metadata: bytes | None = None) -> Path:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_bytes(
        metadata if metadata is not None else
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n".encode())
    (info / "entry_points.txt").write_bytes(entry_points)
    return info


def _env(site: Path, home: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(site), "ZOO_HOME": str(home)}


def test_a_non_utf8_entry_points_file_is_one_warning_and_zoo_list_works(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = _dist(site, "brokenpkg", b"[zoo]\nbroken = broken_mod\xff\xfe\n[console_scripts]\nx=y\n")
    _dist(site, "latin", b"[zoo]\n", metadata=b"Name: latin\nVersion: 1.0\nSummary: caf\xe9\n\n")
    for args in (["list"], ["plugins", "--json"]):  # a cold ZOO_HOME: cards are validated
        proc = run_zoo(args, env=_env(site, tmp_path / f"home-{args[0]}"), timeout=300)
        assert proc.returncode == 0, proc.stderr
        warnings = [line for line in proc.stderr.splitlines() if "brokenpkg" in line]
        assert len(warnings) == 1, proc.stderr
        assert "not UTF-8" in warnings[0] and str(info) in warnings[0]
        assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert "single_conv" in run_zoo(["list"], env=_env(site, tmp_path / "home-list"),
                                    timeout=300).stdout
    names = {row["name"] for row in json.loads(proc.stdout)}
    assert "single_conv" in names and "broken" not in names


def test_unreadable_metadata_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site"
    info = _dist(site, "nometa", b"[zoo]\nnometa = nometa_mod\n")
    (info / "METADATA").unlink()
    (info / "METADATA").mkdir()  # unreadable as a file, whoever runs the test
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    found = [ep for ep in distributions.entry_points("zoo") if ep.name == "nometa"]
    assert found == [distributions.EntryPointInfo("nometa", "nometa_mod", "?")]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nometa" in err and "METADATA cannot be read" in err


def test_a_distribution_cannot_take_a_builtin_plugins_name(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _dist(site, "clash", b"[zoo]\ndeeplabv3 = clash_mod\n")
    (site / "clash_mod.py").write_text("raise SystemExit('clash_mod was imported')\n")
    env = _env(site, tmp_path / "home")
    proc = run_zoo(["plugins", "--json"], env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["deeplabv3"]["dist"].startswith("zoo ") and rows["deeplabv3"]["status"] == "ok"
    assert "deeplabv3_resnet50" in rows["deeplabv3"]["models"]
    [ignored] = [row for row in rows.values() if row["dist"] == "clash 1.0"]
    assert ignored["module"] == "clash_mod" and "built-in" in ignored["error"]
    [warning] = [line for line in proc.stderr.splitlines() if "clash" in line]
    assert "clash 1.0" in warning and "'deeplabv3'" in warning and "built-in" in warning
    assert "clash_mod was imported" not in proc.stderr
    proc = run_zoo(["info", "deeplabv3_resnet50"], env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_one_registry_file_reached_by_several_paths_is_read_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_registry(tmp_path / "team.yaml", card_data("team_seg"))
    link = tmp_path / "link.yaml"
    link.symlink_to(path)
    monkeypatch.chdir(tmp_path)
    reg = Registry(extra_files=[path, Path("team.yaml"), Path("./team.yaml"), link])
    assert "team_seg" in reg.names() and reg.conflicts == {}
    assert reg.source("team_seg") == str(path)

    env = {"ZOO_REGISTRY": os.pathsep.join([str(path), str(link)])}
    proc = run_zoo(["list", "--registry", str(path), "--json"], env=env, cwd=tmp_path,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "team_seg" in {row["name"] for row in json.loads(proc.stdout)}
    assert "defined by both" not in proc.stderr
