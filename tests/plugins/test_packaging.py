"""zoo installed from its wheel (not editable) works from any folder, catalogue included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import BUILTIN_MODELS, ROOT
from tests.support.plugins import install

_SOURCES = ("pyproject.toml", "README.md", "zoo", "zoo_plugins")


def test_wheel_install_works_from_any_folder(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in _SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("zoo-*.whl")
    target = install([wheel], tmp_path / "site")
    catalogue = target / "zoo" / "catalog" / "registry.yaml"
    assert catalogue.is_file() and not catalogue.is_symlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import json, zoo; print(json.dumps([zoo.__file__, zoo.list_models(), "
            "zoo.get('deeplabv3_resnet50').labels[15]]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONPATH": str(target)})
    where, models, person = json.loads(proc.stdout)
    assert Path(where).is_relative_to(target)
    assert models == BUILTIN_MODELS and person == "person"
    # every package is in the wheel: each command's module imports (an editable install
    # hides a package missing from pyproject's list; a wheel does not)
    env = {**os.environ, "PYTHONPATH": str(target)}
    for command in ("fetch", "bench", "site", "sync", "store", "verify", "run", "cache"):
        proc = subprocess.run([sys.executable, "-m", "zoo", command, "--help"], cwd=elsewhere,
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0, (command, proc.stderr[-500:])
    packages = {p.parent.relative_to(target).as_posix() for p in target.glob("zoo/**/*.py")}
    source = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "zoo").glob("**/*.py")}
    assert packages == source
