"""One store's file system, reached through fsspec: bounded retries, plain errors, hashing.

Everything the store does to its URL goes through :class:`Transport`: small reads and writes
(records), listings, and object transfers that hash the bytes as they stream. Errors are
classified once (:func:`classify`): throttling (503 / SlowDown), 5xx, timeouts and refused
connections are retried ``attempts`` times with exponential backoff, then raise
:class:`~zoo.store.errors.StoreUnavailableError`; a missing bucket, denied access or missing
credentials raise :class:`~zoo.store.errors.StoreError` at once, each naming the way out.
The libraries' own retries are turned off (s3fs ``retries=1``, botocore
``total_max_attempts=1``) so the number of attempts is exactly ours.

Where the bytes live is a backend (:class:`~zoo.store.backends.Backend`), chosen once when the
transport opens the URL (:func:`backend_for`): ``file://`` stores
(:class:`~zoo.store.backends_local.LocalBackend`), S3
(:class:`~zoo.store.backends_s3.S3Backend`) and any other fsspec file system
(:class:`~zoo.store.backends.FsspecBackend`: ``memory://``, ``gs://``, ... with no code here).
Every backend's remote calls go through the one retry rule, :meth:`TransportCore.call`.

S3 (s3fs) gets two transfers of its own, both through s3fs's client (``fs._call_s3``):
uploads of ``multipart_threshold`` bytes or more are *resumable* multipart uploads (a killed
publish leaves its parts; the next one lists them, checks their MD5 ETags against the local
bytes and sends only what is missing), and large downloads fetch ranges concurrently while a
worker thread writes and hashes the previous window. ``file://`` stores write a temporary
file under ``tmp/`` and rename it into place, so a reader never sees a partial object.

A store is hostile until checked. :meth:`Transport.check_root` tells a missing, unreachable or
unreadable store from an empty one (a ``file://`` store's folder must exist; an S3 store's
bucket must answer). A ``file://`` store is read through real folders to regular files only:
every folder on the way is opened without following symbolic links and the file with
``O_NOFOLLOW | O_NONBLOCK`` (a FIFO cannot block the read), then checked with ``fstat``; a
symbolic link, FIFO, socket or device is refused with a one-line reason
(:class:`NotRegularFile`, listed in :attr:`Transport.refused`). Messages carry the store URL
and exception texts only through :func:`zoo._core.redact.redact_url` /
:func:`~zoo._core.redact.redact_text`.
"""
from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

from zoo.store.backends import Backend, FsspecBackend
from zoo.store.backends_local import LocalBackend
from zoo.store.backends_s3 import S3Backend
from zoo.store.transport_core import (  # noqa: F401 (re-exported: callers import them from here)
    CHUNK,
    NotRegularFile,
    Progress,
    SizeMismatch,
    TransportCore,
    classify,
    is_local,
    is_s3,
    open_filesystem,
)


def backend_for(fs: Any, root: str, core: TransportCore) -> Backend:
    """The backend for fsspec file system ``fs`` (as :func:`open_filesystem` opened it)."""
    if is_local(fs):
        return LocalBackend(root, core)
    if is_s3(fs):
        return S3Backend(fs, root, core)
    return FsspecBackend(fs, root, core)


class Transport(TransportCore):
    """The operations the store needs on its URL (paths are relative to the store root),
    each handed to the backend chosen when the transport was made, with bounded retries."""

    def __init__(self, url: str, fs: Any, root: str, **settings: Any) -> None:
        """``settings``: :class:`TransportCore`'s (attempts, backoff, part_size, ...)."""
        super().__init__(url, root, **settings)
        self.fs = fs
        self.backend: Backend = backend_for(fs, root, self)

    @property
    def local(self) -> Path | None:
        """A ``file://`` store's folder, else None."""
        return self.backend.folder

    @property
    def s3(self) -> bool:
        """Whether the store is in S3 (s3fs)."""
        return isinstance(self.backend, S3Backend)

    @property
    def refused(self) -> dict[str, str]:
        """``file://`` entries the last listings found and refused (relative path: reason)."""
        return self.backend.refused

    def path(self, rel: str) -> str:
        """The file system's path of ``rel``."""
        return self.backend.path(rel)

    def rel(self, full: str) -> str:
        """A file system path relative to the store root."""
        return self.backend.rel(full)

    def check_root(self) -> None:
        """Raise a StoreError (exit 1) unless the store exists and can be read: a ``file://``
        store's folder must exist and be readable; an S3 store's bucket must answer (an empty
        prefix is an empty store). Transient failures are retried like every call."""
        self.backend.check_root()

    def size(self, rel: str) -> int | None:
        """The object's size, or None when it does not exist."""
        return self.backend.size(rel)

    def list(self, prefix: str, start_after: str | None = None
             ) -> builtins.list[tuple[str, int]]:
        """(relative path, size) of every object under ``prefix``, sorted (paged); with
        ``start_after``, only those after it (S3 lists only those)."""
        if start_after is None:
            return self.backend.list(prefix)
        return self.backend.list(prefix, start_after)

    def read_many(self, rels: builtins.list[str], limit: int) -> dict[str, bytes | Exception]:
        """The first ``limit + 1`` bytes of each object (so oversize shows), concurrently
        where the file system can; a missing object maps to FileNotFoundError."""
        if not rels:
            return {}
        return self.backend.read_many(rels, limit)

    def holds(self, rel: str, data: bytes) -> bool:
        """Whether object ``rel`` holds exactly ``data`` (a small object: same size, then its
        bytes read back; a planted object of the same size is not taken for it)."""
        if self.size(rel) != len(data):
            return False
        found = self.read_many([rel], len(data)).get(rel)
        return isinstance(found, bytes) and found == data

    def write_new(self, rel: str, data: bytes) -> None:
        """Write a small object whole (records): atomically, never seen half-written."""
        self.backend.write_new(rel, data)

    def put(self, source: Path | bytes, rel: str, size: int, progress: Progress) -> None:
        """Upload ``source`` (a file or bytes) to ``rel``; the object appears whole or not."""
        self.backend.put(source, rel, size, progress)

    def get(self, rel: str, dest: Path | None, size: int, progress: Progress) -> str:
        """Stream object ``rel`` into ``dest`` (None: nowhere) and return its sha256.

        Raises SizeMismatch when the object is not ``size`` bytes (nothing more than ``size``
        bytes is ever read), FileNotFoundError when it is missing.
        """
        counted = [0]

        def report(n: int) -> None:
            counted[0] += n
            progress(n)

        def once() -> str:
            if counted[0]:  # a retry: un-count what the failed attempt reported
                progress(-counted[0])
                counted[0] = 0
            return self.backend.get(rel, dest, size, report)

        return str(self.call(f"downloading {rel}", once))
