"""Fixtures shared by every test module.

Every test gets its own ZOO_HOME (cache) and no ZOO_REGISTRY / ZOO_MIRROR / ZOO_OFFLINE from the
developer's shell, and the in-process registry/plugin caches are reset around it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_ZOO_VARS = ("ZOO_HOME", "ZOO_REGISTRY", "ZOO_MIRROR", "ZOO_OFFLINE", "ZOO_CACHE_MAX", "ZOO_STORE",
             "ZOO_TRUSTED_KEYS", "ZOO_KEY_PASSPHRASE", "ZOO_MAX_IMAGE_PIXELS",
             "ZOO_MAX_IMAGE_ASPECT", "ZOO_REQUIRE_SIGNED")
BUILTIN_MODELS = [  # registry.yaml's models, sorted
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_resnet101",
    "deeplabv3_resnet50",
    "fcn_resnet101",
    "fcn_resnet50",
    "lraspp_mobilenet_v3_large",
    "single_conv",
]


@pytest.fixture(autouse=True)
def zoo_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A fresh, empty ZOO_HOME for each test; zoo's in-process caches reset."""
    from zoo.catalog.registry import reset_default_registry

    for var in _ZOO_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path_factory.mktemp("zoo_home")
    monkeypatch.setenv("ZOO_HOME", str(home))
    reset_default_registry()
    yield home
    reset_default_registry()


def run_zoo(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m zoo ARGS`` in a fresh process with the test's environment (+ ``env``)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


pytest_plugins = ["tests.support.httpserver", "tests.support.s3server"]
