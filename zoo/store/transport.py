"""One store's file system, reached through fsspec: bounded retries, plain errors, hashing.

Everything the store does to its URL goes through :class:`Transport`: small reads and writes
(records), listings, and object transfers that hash the bytes as they stream. Errors are
classified once (:func:`classify`): throttling (503 / SlowDown), 5xx, timeouts and refused
connections are retried ``attempts`` times with exponential backoff, then raise
:class:`~zoo.store.errors.StoreUnavailableError`; a missing bucket, denied access or missing
credentials raise :class:`~zoo.store.errors.StoreError` at once, each naming the way out.
The libraries' own retries are turned off (s3fs ``retries=1``, botocore
``total_max_attempts=1``) so the number of attempts is exactly ours.

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

import asyncio
import builtins
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from zoo.store.errors import StoreError
from zoo.store.transport_core import (  # noqa: F401 (re-exported: callers import them from here)
    CHUNK,
    NotRegularFile,
    Progress,
    SizeMismatch,
    _copy_hashing,
    classify,
    open_filesystem,
)
from zoo.store.transport_upload import Uploads


class Transport(Uploads):
    """The operations the store needs on its URL (paths are relative to the store root)."""

    def size(self, rel: str) -> int | None:
        """The object's size, or None when it does not exist."""
        if self.local is not None:  # only a regular file in real folders is an object
            try:
                fd = self._open_local(rel)
                try:
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
            except (FileNotFoundError, NotADirectoryError, NotRegularFile):
                return None
            except OSError as exc:
                raise self._error("error", exc.strerror or str(exc), f"checking {rel}", 1,
                                  0) from exc
            return st.st_size
        if self.s3:
            bucket, key, _ = self.fs.split_path(self.path(rel))
            try:
                head = self.call(f"checking {rel}", self.fs.call_s3, "head_object",
                                 Bucket=bucket, Key=key)
            except FileNotFoundError:
                return None
            return int(head.get("ContentLength") or 0)
        try:
            info = self.call(f"checking {rel}", self.fs.info, self.path(rel))
        except FileNotFoundError:
            return None
        if info.get("type") == "directory":
            return None
        return int(info.get("size") or 0)

    def list(self, prefix: str) -> builtins.list[tuple[str, int]]:
        """(relative path, size) of every object under ``prefix``, sorted (paged by fsspec)."""
        if self.local is not None:
            return self._local_list(prefix)
        if self.s3:
            return self._s3_list(prefix)
        try:
            infos = self.call(f"listing {prefix}", self.fs.find, self.path(prefix), detail=True)
        except FileNotFoundError:
            return []
        return sorted((self.rel(name), int(info.get("size") or 0))
                      for name, info in infos.items() if info.get("type") != "directory")

    def _s3_list(self, prefix: str) -> builtins.list[tuple[str, int]]:
        """ListObjectsV2 page by page (``page_size`` keys each), one retried call per page."""
        bucket, key, _ = self.fs.split_path(self.path(prefix))
        found: builtins.list[tuple[str, int]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key, "MaxKeys": self.page_size}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = self.call(f"listing {prefix}", self.fs.call_s3, "list_objects_v2",
                                 **kwargs)
            except FileNotFoundError:
                return []
            for item in page.get("Contents", []):
                found.append((self.rel(f"{bucket}/{item['Key']}"), int(item.get("Size", 0))))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return sorted(found)

    def read_many(self, rels: builtins.list[str], limit: int) -> dict[str, bytes | Exception]:
        """The first ``limit + 1`` bytes of each object (so oversize shows), concurrently
        where the file system can; a missing object maps to FileNotFoundError."""
        if not rels:
            return {}
        if self.local is not None:
            out: dict[str, bytes | Exception] = {}
            for rel in rels:
                try:
                    with os.fdopen(self._open_local(rel), "rb") as fh:
                        out[rel] = fh.read(limit + 1)
                except (OSError, NotRegularFile) as exc:
                    out[rel] = exc
            return out
        paths = [self.path(r) for r in rels]
        results = self.call(f"reading {len(rels)} records", self.fs.cat_ranges, paths,
                            [0] * len(paths), [limit + 1] * len(paths), on_error="return")
        out = {}
        for rel, value in zip(rels, results, strict=True):
            if isinstance(value, Exception) and classify(value)[0] != "missing":
                value = self._retry_one(rel, limit, value)
            elif isinstance(value, Exception):
                value = FileNotFoundError(rel)
            out[rel] = value
        return out

    def _retry_one(self, rel: str, limit: int, first: Exception) -> bytes | Exception:
        try:
            return bytes(self.call(f"reading {rel}", self.fs.cat_file, self.path(rel), 0,
                                   limit + 1))
        except FileNotFoundError as exc:
            return exc
        except StoreError:
            raise

    def write_new(self, rel: str, data: bytes) -> None:
        """Write a small object whole (records): atomically, never seen half-written."""
        if self.local is not None:
            self._local_install(rel, lambda fh: fh.write(data))
            return
        self.call(f"writing {rel}", self.fs.pipe_file, self.path(rel), data)

    # -- downloads ------------------------------------------------------------------------

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
            if self.local is not None:
                return self._local_get(rel, dest, size, report)
            if self.s3:
                from fsspec.asyn import sync

                return str(sync(self.fs.loop, self._s3_get, rel, dest, size, report))
            return self._generic_get(rel, dest, size, report)

        return str(self.call(f"downloading {rel}", once))

    def _generic_get(self, rel: str, dest: Path | None, size: int, progress: Progress) -> str:
        with self.fs.open(self.path(rel), "rb", block_size=self.part_size) as src:
            return _copy_hashing(src.read, dest, size, progress)

    async def _s3_get(self, rel: str, dest: Path | None, size: int, progress: Progress) -> str:
        fs = self.fs
        bucket, key, _ = fs.split_path(self.path(rel))
        digest = hashlib.sha256()
        sink = open(dest, "wb") if dest is not None else None  # noqa: SIM115
        try:
            if size <= self.part_size:
                resp = await fs._call_s3("get_object", Bucket=bucket, Key=key)
                body = resp["Body"]
                try:
                    if int(resp.get("ContentLength", -1)) != size:
                        raise SizeMismatch(rel)
                    got = 0
                    while chunk := await body.read(CHUNK):
                        got += len(chunk)
                        if got > size:
                            raise SizeMismatch(rel)
                        digest.update(chunk)
                        if sink:
                            sink.write(chunk)
                        progress(len(chunk))
                finally:
                    body.close()
                if got != size:
                    raise SizeMismatch(rel)
                return digest.hexdigest()
            return await self._s3_get_ranges(bucket, key, rel, sink, size, digest, progress)
        finally:
            if sink:
                sink.close()

    async def _s3_get_ranges(self, bucket: str, key: str, rel: str, sink: Any, size: int,
                             digest: Any, progress: Progress) -> str:
        """Ranges of ``part_size`` bytes, ``concurrency`` at a time; each part is handed, in
        order, to one worker thread that hashes and writes it while later parts download.
        At most ``2 * concurrency`` parts are held in memory."""
        fs = self.fs

        async def fetch(start: int) -> bytes:
            end = min(size, start + self.part_size) - 1
            resp = await fs._call_s3("get_object", Bucket=bucket, Key=key,
                                     Range=f"bytes={start}-{end}")
            body = resp["Body"]
            try:
                total = str(resp.get("ContentRange", "")).rpartition("/")[2]
                if total != str(size):
                    raise SizeMismatch(rel)
                data = await body.read()
            finally:
                body.close()
            if len(data) != end - start + 1:
                raise SizeMismatch(rel)
            return bytes(data)

        def consume(data: bytes) -> None:
            digest.update(data)
            if sink:
                sink.write(data)
            progress(len(data))

        loop = asyncio.get_running_loop()
        starts = list(range(0, size, self.part_size))
        window = 2 * self.concurrency
        cond = asyncio.Condition()
        sem = asyncio.Semaphore(self.concurrency)
        ready: dict[int, bytes] = {}
        state = {"next": 0, "failed": False}
        writes: builtins.list[asyncio.Future[None]] = []
        with ThreadPoolExecutor(1, thread_name_prefix="zoo-store-hash") as worker:
            async def part(i: int) -> None:
                async with cond:
                    await cond.wait_for(lambda: state["failed"] or i < state["next"] + window)
                    if state["failed"]:
                        return
                try:
                    async with sem:
                        data = await fetch(starts[i])
                except BaseException:
                    async with cond:
                        state["failed"] = True
                        cond.notify_all()
                    raise
                async with cond:
                    ready[i] = data
                    while state["next"] in ready:
                        writes.append(loop.run_in_executor(worker, consume,
                                                           ready.pop(state["next"])))
                        state["next"] += 1
                    cond.notify_all()

            results = await asyncio.gather(*(part(i) for i in range(len(starts))),
                                           return_exceptions=True)
            results += await asyncio.gather(*writes, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return str(digest.hexdigest())
