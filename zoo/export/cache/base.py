"""The export cache's common ground: where things are, whether the root can be written or
trusted, and its owned cross-process locks (:mod:`zoo._core.locks`)."""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from zoo._core.locks import LockTimeout, OwnedLocks
from zoo.errors import ExportError
from zoo.export.cache.budget import cache_budget
from zoo.export.cache.entries import (
    LOCK_TIMEOUT,
    Warn,
    _check_key,
)


def _warn_stderr(message: str) -> None:
    """A warning on zoo's channel (:mod:`zoo._core.log`), once per process."""
    from zoo._core.log import warn

    warn(message)


def _home() -> Path:
    from zoo.paths import zoo_home

    return zoo_home()


class CacheBase:
    """Names, locks and trust of the export cache (what every part below shares)."""

    def __init__(self, root: Path | None = None, *, warn: Warn | None = None,
                 budget: int | Literal["env"] | None = "env") -> None:
        if root is None:
            from zoo.paths import artifacts_dir

            root = artifacts_dir()
        self.root = Path(root)
        self.records = self.root / "records"
        self.locks = self.root / "locks"
        self._locks = OwnedLocks(self.locks)
        self.budget = cache_budget() if budget == "env" else budget
        self._warn = warn or _warn_stderr
        self._reported: set[tuple[str, str]] = set()
        self._writable: bool | None = None
        self._private: Path | None = None
        #: (key, problem) of every damaged entry or record this instance met.
        self.repaired: builtins.list[tuple[str, str]] = []

    # -- names ---------------------------------------------------------------------------

    @staticmethod
    def key(identity: dict[str, Any]) -> str:
        """The 64-hex sha256 of ``identity``'s canonical JSON (sorted keys, no spaces)."""
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def folder(self, key: str) -> Path:
        """Where the entry for ``key`` lives (whether or not it exists)."""
        return self.root / key

    def may_hold(self, name: str) -> bool:
        """Whether an entry may hold an artifact file named ``name``: a cheap hint (one folder
        listing, a stat per entry) for callers deciding what to prepare; False means a lookup
        of any identity with that artifact name misses. Unknown (unreadable) is True."""
        try:
            with os.scandir(self.root) as entries:
                return any(len(e.name) == 64 and e.is_dir(follow_symlinks=False)
                           and os.path.lexists(os.path.join(e.path, name)) for e in entries)
        except FileNotFoundError:
            return False
        except OSError:
            return True

    def record_path(self, key: str) -> Path:
        """Where the record for ``key`` lives."""
        return self.records / f"{key}.json"

    @property
    def writable(self) -> bool:
        """Whether this process can write under ``root`` (probed once by creating a file)."""
        if self._writable is None:
            from zoo.paths import home_problem

            if home_problem() is not None and self.root.parent == _home():
                self._writable = False
                return False
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=self.root)
                os.close(fd)
                os.unlink(probe)
                self._writable = True
            except OSError:
                self._writable = False
        return self._writable

    @property
    def trusted(self) -> bool:
        """False when the cache lies under a ``ZOO_HOME`` other users can write to: nothing
        in it is served (:func:`zoo.paths.home_problem` warns once)."""
        from zoo.paths import home_problem

        return self.root.parent != _home() or home_problem() is None

    # -- locks ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Warn | None = None,
             timeout: float | None = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold the cross-process lock for ``key`` (re-entrant within a process).

        If another process holds it, ``on_wait`` gets one message naming that process; after
        ``timeout`` seconds (None: no bound) waiting gives up with an :class:`ExportError`
        naming the holder. On a read-only root there is no lock (only reads happen there).
        """
        _check_key(key)
        if not self.writable:
            yield
            return
        held = self._acquire(key, timeout, on_wait)
        if held is None:
            raise ExportError(
                f"gave up after {timeout:g} s waiting for the export cache lock on {key[:16]}: "
                f"it is held by {self.lock_holder(key)}; if that process is stuck, end it (its "
                f"lock goes with it) (lock file {self.locks / f'{key}.lock'})")
        try:
            yield
        finally:
            self._release(key, held)

    def lock_holder(self, key: str) -> str:
        """Who holds the lock for ``key``, as its owner record tells (for messages)."""
        return self._locks.holder(key)

    def _acquire(self, key: str, timeout: float | None, on_wait: Warn | None = None,
                 ) -> FileLock | None:
        def waiting(holder: str) -> None:
            if on_wait is not None:
                on_wait(f"waiting for {holder}, which holds the export cache lock on {key[:16]}")

        try:
            return self._locks.acquire(key, timeout, waiting)
        except LockTimeout:
            return None

    def _release(self, key: str, lock: FileLock) -> None:
        self._locks.release(key, lock)

    @contextlib.contextmanager
    def _try_hold(self, key: str, timeout: float) -> Iterator[bool]:
        """Hold ``key``'s lock if it can be had within ``timeout``; yields whether it is held."""
        if not self.writable:
            yield False
            return
        with self._locks.try_hold(key, timeout) as held:
            yield held

    def _lock_free(self, name: str) -> bool:
        """True when nobody holds ``locks/NAME.lock`` (False when that cannot be told)."""
        return self._locks.is_free(name)
