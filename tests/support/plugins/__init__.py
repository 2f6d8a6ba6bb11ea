"""Real plugin packages for tests, and the helpers that build and install them with pip.

Each folder beside this file is a pip-installable plugin package (its own ``pyproject.toml``,
entry point in the group ``zoo``); ``examples/zoo-example-plugin`` is the tidy one users copy.
Tests build wheels from copies of them once per session, ``pip install --target`` the wheels
into temporary folders, and run ``zoo`` with those folders on ``PYTHONPATH``: importlib.metadata
then discovers the ``.dist-info`` there exactly as it would in site-packages.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]  # tests/support/plugins -> the checkout
EXAMPLE = ROOT / "examples" / "zoo-example-plugin"

#: distribution name -> source folder
SOURCES: dict[str, Path] = {
    "zoo-example-plugin": EXAMPLE,
    "zoo-test-broken": HERE / "zoo-test-broken",
    "zoo-test-invalid-card": HERE / "zoo-test-invalid-card",
    "zoo-test-hook-raises": HERE / "zoo-test-hook-raises",
    "zoo-test-clash": HERE / "zoo-test-clash",
    "zoo-test-unruly": HERE / "zoo-test-unruly",
    "zoo-test-broken-exporter": HERE / "zoo-test-broken-exporter",
    "zoo-test-card-problems": HERE / "zoo-test-card-problems",
}

_BUILD_LEFTOVERS = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__")


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")


def build_wheels(names: Iterable[str], workdir: Path) -> dict[str, Path]:
    """Build one wheel per distribution in ``names``; returns name -> wheel path.

    Sources are copied first so no ``build/`` or ``.egg-info`` lands in the checkout. With
    setuptools in this environment the build runs offline (``--no-build-isolation``);
    without it pip fetches setuptools into an isolated build environment.
    """
    names = list(names)
    wheelhouse = workdir / "wheelhouse"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    sources = []
    for name in names:
        copy = workdir / "src" / name
        shutil.copytree(SOURCES[name], copy, ignore=_BUILD_LEFTOVERS, dirs_exist_ok=True)
        sources.append(str(copy))
    offline = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    _pip("wheel", "--no-deps", *offline, "-w", str(wheelhouse), *sources)
    wheels = {}
    for name in names:
        stem = name.replace("-", "_")
        found = sorted(wheelhouse.glob(f"{stem}-*.whl"))
        if len(found) != 1:
            raise RuntimeError(f"expected one wheel for {name} in {wheelhouse}, found {found}")
        wheels[name] = found[0]
    return wheels


def install(wheels: Iterable[Path], target: Path) -> Path:
    """``pip install --target`` the wheels (no deps, no index); returns ``target``."""
    _pip("install", "--no-deps", "--no-index", "--target", str(target), *map(str, wheels))
    return target


def uninstall(dist: str, target: Path) -> None:
    """Remove an installed distribution from a ``--target`` folder the way pip does.

    ``pip uninstall`` refuses folders outside its environment, so follow its recipe: delete
    every file the ``.dist-info/RECORD`` lists, then the folders left empty.
    """
    stem = dist.replace("-", "_")
    (dist_info,) = target.glob(f"{stem}-*.dist-info")
    with (dist_info / "RECORD").open(newline="") as fh:
        files = [target / row[0] for row in csv.reader(fh) if row]
    for path in files:
        path.unlink(missing_ok=True)
    for folder in sorted({p.parent for p in files}, key=lambda p: len(p.parts), reverse=True):
        shutil.rmtree(folder / "__pycache__", ignore_errors=True)
        if folder != target and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


_WHEELS: dict[tuple[Path, str], Path] = {}
_SITES: dict[tuple[Path, str], Path] = {}


def session_wheels(workdir: Path) -> dict[str, Path]:
    """A wheel for every distribution in :data:`SOURCES`, built under ``workdir`` once per
    process, so test modules share one build. Returns name -> wheel."""
    missing = [name for name in SOURCES if (workdir, name) not in _WHEELS]
    if missing:
        for name, wheel in build_wheels(missing, workdir / "build").items():
            _WHEELS[workdir, name] = wheel
    return {name: _WHEELS[workdir, name] for name in SOURCES}


def session_site(workdir: Path) -> dict[str, Path]:
    """Every distribution in :data:`SOURCES` installed alone in its own ``--target`` folder
    under ``workdir``, once per process. Returns name -> folder."""
    wheels = session_wheels(workdir)
    for name, wheel in wheels.items():
        if (workdir, name) not in _SITES:
            _SITES[workdir, name] = install([wheel], workdir / "site" / name.replace("-", "_"))
    return {name: _SITES[workdir, name] for name in SOURCES}


def session_workdir(basetemp: Path) -> Path:
    """The folder the session's plugin wheels and sites live in (pytest's base temp)."""
    return basetemp / "plugin_packages"


def pythonpath(*targets: Path) -> dict[str, str]:
    """The environment entry that puts ``targets`` (in order) on a child's ``sys.path``."""
    return {"PYTHONPATH": os.pathsep.join(str(t) for t in targets)}
