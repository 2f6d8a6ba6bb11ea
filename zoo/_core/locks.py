"""Owned cross-process locks, written once for every cache.

A lock is ``<folder>/<name>.lock`` (filelock: flock on POSIX, so a holder that dies releases
it with its last file descriptor) plus ``<name>.owner.json``: who holds it (pid, host, since
when, what for), so a waiter can say whom it waits for. The same rules everywhere:

* re-entrant within a process (the lock object is a per-path singleton);
* a bounded wait: after ``timeout`` seconds (None: no bound) :class:`LockTimeout` names the
  holder; ``on_wait`` hears once, after a short poll, whom it waits for;
* the owner record is written when the outermost hold starts and removed when it ends;
* :meth:`OwnedLocks.is_free` tells whether anybody holds a lock (False when that cannot be
  told), for housekeeping that must not remove what a live process uses.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from zoo._core.fs import atomic_write_text, process_alive, read_json_record

POLL = 0.2  # seconds before a waiter says whom it waits for
OWNER_MAX = 4096  # bytes: a bigger owner record is damaged


class LockTimeout(Exception):
    """Waiting for a lock ran out of time; ``holder`` says who holds it."""

    def __init__(self, path: Path, holder: str, waited: float) -> None:
        super().__init__(f"gave up after {waited:g} s waiting for {path}: held by {holder}")
        self.path, self.holder, self.waited = path, holder, waited


class OwnedLocks:
    """The locks kept in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.lock"

    def owner_path(self, name: str) -> Path:
        return self.folder / f"{name}.owner.json"

    def _lock(self, name: str) -> FileLock:
        return FileLock(str(self.path(name)), is_singleton=True)

    def acquire(self, name: str, timeout: float | None,
                on_wait: Callable[[str], None] | None = None, what: str = "") -> FileLock:
        """Take lock ``name`` (see the module's rules); raises :class:`LockTimeout`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = self._lock(name)
        first = POLL if timeout is None else min(POLL, timeout)
        try:
            lock.acquire(timeout=first)
        except Timeout:
            if on_wait is not None:
                on_wait(self.holder(name))
            rest = -1.0 if timeout is None else max(0.0, timeout - first)
            try:
                lock.acquire(timeout=rest)
            except Timeout:
                raise LockTimeout(self.path(name), self.holder(name),
                                  round(timeout or 0.0, 1)) from None
        if lock.lock_counter == 1:
            with contextlib.suppress(OSError):
                atomic_write_text(self.owner_path(name), json.dumps(
                    {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                     "what": what[:200]}))
        return lock

    def release(self, name: str, lock: FileLock) -> None:
        """Give back a lock taken with :meth:`acquire` (the owner record goes with the last)."""
        if lock.lock_counter == 1:
            with contextlib.suppress(OSError):
                self.owner_path(name).unlink(missing_ok=True)
        lock.release()

    @contextlib.contextmanager
    def hold(self, name: str, timeout: float | None = None,
             on_wait: Callable[[str], None] | None = None, what: str = "") -> Iterator[None]:
        """Hold lock ``name`` for the ``with`` block (raises :class:`LockTimeout`)."""
        lock = self.acquire(name, timeout, on_wait, what)
        try:
            yield
        finally:
            self.release(name, lock)

    @contextlib.contextmanager
    def try_hold(self, name: str, timeout: float) -> Iterator[bool]:
        """Hold lock ``name`` if it can be had within ``timeout``; yields whether it is held."""
        try:
            lock: FileLock | None = self.acquire(name, timeout)
        except (LockTimeout, OSError):
            lock = None
        try:
            yield lock is not None
        finally:
            if lock is not None:
                self.release(name, lock)

    def holder(self, name: str) -> str:
        """Who holds lock ``name``, as its owner record tells (for messages)."""
        data, _why = read_json_record(self.owner_path(name), OWNER_MAX)
        if data is None or not isinstance(data.get("pid"), int) or \
                isinstance(data.get("pid"), bool) or not isinstance(data.get("host"), str) or \
                not isinstance(data.get("started"), int | float):
            return "another process (it left no owner record)"
        pid, host, started = data["pid"], data["host"][:100], float(data["started"])
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        text = f"pid {pid} on {host!r} (since {since}, {max(0.0, time.time() - started):.0f} s ago)"
        if host == socket.gethostname() and not process_alive(pid):
            text += " (no longer running)"
        return text

    def is_free(self, name: str) -> bool:
        """True when nobody holds lock ``name`` (False when that cannot be told, or when this
        process holds it)."""
        path = self.path(name)
        if not path.exists():
            return True
        lock = self._lock(name)
        if lock.is_locked:
            return False
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            return False
        lock.release()
        return True
