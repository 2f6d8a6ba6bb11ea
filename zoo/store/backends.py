"""What a store backend does (:class:`Backend`) and the generic one, any fsspec file system.

A backend is chosen once, when the transport opens the store URL
(:func:`zoo.store.transport.backend_for`): ``file://`` gets
:class:`~zoo.store.backends_local.LocalBackend`, S3 (s3fs) gets
:class:`~zoo.store.backends_s3.S3Backend`, and every other fsspec protocol gets
:class:`FsspecBackend`, so a file system fsspec knows works as a store with no change here.
Backends make their remote calls through the transport's one retry rule
(:meth:`~zoo.store.transport_core.TransportCore.call`); paths are relative to the store root.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from zoo.store.errors import StoreError
from zoo.store.transport_core import Progress, TransportCore, classify, copy_hashing


@runtime_checkable
class Backend(Protocol):
    """The operations a store needs from where its bytes live."""

    #: entries the listings found and refused (relative path: reason); file:// only
    refused: dict[str, str]

    @property
    def folder(self) -> Path | None:
        """The store's folder on this machine (``file://`` stores), else None."""

    def check_root(self) -> None:
        """StoreError unless the store exists and can be read (an empty one is fine)."""

    def size(self, rel: str) -> int | None:
        """The object's size, or None when there is no such object."""

    def list(self, prefix: str, start_after: str | None = None
             ) -> builtins.list[tuple[str, int]]:
        """(relative path, size) of every object under ``prefix``, sorted; with
        ``start_after`` (a relative path), only those that sort after it."""

    def read_many(self, rels: builtins.list[str], limit: int) -> dict[str, bytes | Exception]:
        """The first ``limit + 1`` bytes of each object, or the exception reading it raised
        (FileNotFoundError for a missing one)."""

    def write_new(self, rel: str, data: bytes) -> None:
        """Write a small object whole, never seen half-written."""

    def get(self, rel: str, dest: Path | None, size: int, progress: Progress) -> str:
        """One attempt at streaming ``rel`` into ``dest`` (None: nowhere); its sha256.
        SizeMismatch unless it is ``size`` bytes, FileNotFoundError when it is missing."""

    def put(self, source: Path | bytes, rel: str, size: int, progress: Progress) -> None:
        """Upload ``source`` to ``rel``; the object appears whole or not at all."""

    def path(self, rel: str) -> str:
        """The backend's own path of ``rel``."""

    def rel(self, full: str) -> str:
        """``full`` (a backend path) relative to the store root."""


def relative(full: str, root: str) -> str:
    """``full`` without the leading ``root/`` (unchanged when it is not under ``root``)."""
    full = full.rstrip("/")
    prefix = root + "/" if root else ""
    return full[len(prefix):] if full.startswith(prefix) else full


class Rooted:
    """What every backend shares: the store root, paths under it, the transport's rules."""

    folder: Path | None = None

    def __init__(self, root: str, core: TransportCore) -> None:
        self.root = root
        self.core = core
        self.refused: dict[str, str] = {}

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root else rel

    def rel(self, full: str) -> str:
        return relative(full, self.root)


class FsspecBackend(Rooted):
    """A store on any fsspec file system (``memory://``, ``gs://``, ``az://``, ...)."""

    def __init__(self, fs: Any, root: str, core: TransportCore) -> None:
        super().__init__(root, core)
        self.fs = fs

    def check_root(self) -> None:
        top = self.root.split("/", 1)[0]
        try:
            self.core.call("checking the store", self.fs.info, top or self.root)
        except FileNotFoundError:
            raise StoreError(f"store {self.core.url}: {top or self.root} does not exist; check "
                             "--store / ZOO_STORE") from None

    def size(self, rel: str) -> int | None:
        try:
            info = self.core.call(f"checking {rel}", self.fs.info, self.path(rel))
        except FileNotFoundError:
            return None
        if info.get("type") == "directory":
            return None
        return int(info.get("size") or 0)

    def list(self, prefix: str, start_after: str | None = None
             ) -> builtins.list[tuple[str, int]]:
        """Every object under ``prefix`` (paged by fsspec), after ``start_after``."""
        try:
            infos = self.core.call(f"listing {prefix}", self.fs.find, self.path(prefix),
                                   detail=True)
        except FileNotFoundError:
            return []
        found = [(self.rel(name), int(info.get("size") or 0)) for name, info in infos.items()
                 if info.get("type") != "directory"]
        return sorted(item for item in found if start_after is None or item[0] > start_after)

    def read_many(self, rels: builtins.list[str], limit: int) -> dict[str, bytes | Exception]:
        """One concurrent ``cat_ranges`` for all; a failure other than a missing object is
        retried alone."""
        paths = [self.path(r) for r in rels]
        results = self.core.call(f"reading {len(rels)} records", self.fs.cat_ranges, paths,
                                 [0] * len(paths), [limit + 1] * len(paths), on_error="return")
        out: dict[str, bytes | Exception] = {}
        for rel, value in zip(rels, results, strict=True):
            if isinstance(value, Exception) and classify(value)[0] != "missing":
                value = self._read_one(rel, limit)
            elif isinstance(value, Exception):
                value = FileNotFoundError(rel)
            out[rel] = value
        return out

    def _read_one(self, rel: str, limit: int) -> bytes | Exception:
        try:
            return bytes(self.core.call(f"reading {rel}", self.fs.cat_file, self.path(rel), 0,
                                        limit + 1))
        except FileNotFoundError as exc:
            return exc

    def write_new(self, rel: str, data: bytes) -> None:
        self.core.call(f"writing {rel}", self.fs.pipe_file, self.path(rel), data)

    def get(self, rel: str, dest: Path | None, size: int, progress: Progress) -> str:
        with self.fs.open(self.path(rel), "rb", block_size=self.core.part_size) as src:
            return copy_hashing(src.read, dest, size, progress)

    def put(self, source: Path | bytes, rel: str, size: int, progress: Progress) -> None:
        what = f"uploading {rel}"
        if isinstance(source, bytes):
            self.core.call(what, self.fs.pipe_file, self.path(rel), source)
        else:
            self.core.call(what, self.fs.put_file, str(source), self.path(rel))
        progress(size)
