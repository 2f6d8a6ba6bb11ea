"""Where zoo keeps its files: one root (``ZOO_HOME``) with a folder per kind of thing.

``ZOO_HOME`` wins; otherwise the platform's user cache folder (``~/.cache/zoo`` on Linux,
``~/Library/Caches/zoo`` on macOS, ``%LOCALAPPDATA%\\zoo\\Cache`` on Windows) via platformdirs.
Nothing here creates folders: the code that writes into one creates it.

Layout::

    ZOO_HOME/
      weights/      downloaded weights, content-addressed (see zoo.cache)
      artifacts/    the export cache (zoo.artifact_cache): entries, records/, locks/
      registry/     compiled registry sources (zoo.registry_cache; rebuilt when missing)
      locks/        locks of output folders while exports are installed into them
      store/records team-store records already read (content-addressed: a record file's
                    name is its sha256, so a cached copy is proved by its name)
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "ZOO_HOME"


def zoo_home() -> Path:
    """The root of everything zoo caches: ``$ZOO_HOME`` or the user cache dir."""
    env = os.environ.get(HOME_ENV, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("zoo", appauthor=False)).absolute()


def weights_dir() -> Path:
    """Root of the weights store (blobs, sidecars, index, locks, partial downloads)."""
    return zoo_home() / "weights"


def artifacts_dir() -> Path:
    """Root of the exported-artifact cache (owned by the exporter)."""
    return zoo_home() / "artifacts"
