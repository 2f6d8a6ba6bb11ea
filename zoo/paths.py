"""Where zoo keeps its files: one root (``ZOO_HOME``) with a folder per kind of thing.

``ZOO_HOME`` wins; otherwise the platform's user cache folder (``~/.cache/zoo`` on Linux,
``~/Library/Caches/zoo`` on macOS, ``%LOCALAPPDATA%\\zoo\\Cache`` on Windows) via platformdirs.
Nothing here creates folders: the code that writes into one creates it.

Layout::

    ZOO_HOME/
      weights/      downloaded weights, content-addressed (see zoo.weights.cache)
      artifacts/    the export cache (zoo.export.cache): entries, records/, locks/
      registry/     compiled registry sources (zoo.catalog.compiled; rebuilt when missing)
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


# -- is the local state ours? ----------------------------------------------------------------

_home_checked: dict[str, str | None] = {}


def _unsafe(path: Path) -> str | None:
    """Why ``path`` (a folder) could be changed by another user, or None."""
    import stat

    try:
        st = path.lstat()
    except FileNotFoundError:
        return None  # created later by this process, with its own umask
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        try:
            st = path.stat()
        except OSError as exc:
            return f"is a dangling link ({exc.strerror or exc})"
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    if uid is not None and st.st_uid not in (uid, 0):
        return f"belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def home_problem() -> str | None:
    """Why ``ZOO_HOME`` cannot be trusted (another user could change what is cached there),
    or None. Like ssh with its key files: ``ZOO_HOME`` and the folders zoo keeps in it must
    belong to this user (or root) and be writable by no one else. Checked once per process
    and ``ZOO_HOME`` value; Windows is not checked (ACLs, not modes)."""
    if os.name == "nt":
        return None
    home = zoo_home()
    key = str(home)
    if key not in _home_checked:
        problem = None
        for folder in (home, home / "weights", home / "artifacts", home / "artifacts" /
                       "records", home / "registry", home / "store"):
            why = _unsafe(folder)
            if why is not None:
                problem = f"{folder} {why}"
                break
        _home_checked[key] = problem
        if problem is not None:
            from zoo._core.log import warn

            warn(f"ZOO_HOME is not trusted: {problem}; its caches and compiled registry are "
                 "ignored (nothing is read from or written to them). Fix: chmod go-w the "
                 "folder, or point ZOO_HOME at a folder only you can write")
    return _home_checked[key]
