"""S3 through s3fs's own client (``fs._call_s3``): HEAD for sizes, ListObjectsV2 page by page,
concurrent ranged downloads hashed while they arrive, resumable multipart uploads
(:mod:`zoo.store.backends_s3_upload`). Everything else is the generic fsspec backend's."""

from __future__ import annotations

import builtins
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from zoo.store.backends import FsspecBackend
from zoo.store.backends_s3_upload import multipart_upload
from zoo.store.ordered_parts import fetch_in_order
from zoo.store.transport_core import CHUNK, HashingSink, Progress, SizeMismatch


class S3Backend(FsspecBackend):
    """A store in an S3 bucket (``s3://bucket/prefix``, any S3 API through s3fs)."""

    def check_root(self) -> None:
        """The bucket must answer (an empty prefix is an empty store)."""
        bucket = self.root.split("/", 1)[0]
        try:
            self.core.call("checking the bucket", self.fs.call_s3, "head_bucket", Bucket=bucket)
        except FileNotFoundError:
            raise self.core.error("nobucket", "", "checking the bucket") from None

    def size(self, rel: str) -> int | None:
        bucket, key, _ = self.fs.split_path(self.path(rel))
        try:
            head = self.core.call(f"checking {rel}", self.fs.call_s3, "head_object",
                                  Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        return int(head.get("ContentLength") or 0)

    def list(self, prefix: str, start_after: str | None = None
             ) -> builtins.list[tuple[str, int]]:
        """ListObjectsV2 page by page (``page_size`` keys each), one retried call per page;
        ``start_after`` is S3's StartAfter (only keys after it are sent)."""
        bucket, key, _ = self.fs.split_path(self.path(prefix))
        found: builtins.list[tuple[str, int]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key,
                                      "MaxKeys": self.core.page_size}
            if token:
                kwargs["ContinuationToken"] = token
            elif start_after:
                kwargs["StartAfter"] = self.fs.split_path(self.path(start_after))[1]
            try:
                page = self.core.call(f"listing {prefix}", self.fs.call_s3, "list_objects_v2",
                                      **kwargs)
            except FileNotFoundError:
                return []
            for item in page.get("Contents", []):
                found.append((self.rel(f"{bucket}/{item['Key']}"), int(item.get("Size", 0))))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return sorted(found)

    # -- transfers ------------------------------------------------------------------------

    def get(self, rel: str, dest: Path | None, size: int, progress: Progress) -> str:
        """One GET up to ``part_size`` bytes, else concurrent ranges (:meth:`_get_ranges`)."""
        from fsspec.asyn import sync

        return str(sync(self.fs.loop, self._get, rel, dest, size, progress))

    def put(self, source: Path | bytes, rel: str, size: int, progress: Progress) -> None:
        """A file of ``multipart_threshold`` bytes or more goes as a resumable multipart
        upload; anything smaller in one PUT."""
        if not isinstance(source, Path) or size < self.core.multipart_threshold:
            super().put(source, rel, size, progress)
            return
        from fsspec.asyn import sync

        done: dict[int, int] = {}  # part -> bytes reported, so a retry never counts twice

        def once() -> None:
            sync(self.fs.loop, multipart_upload, self.fs, self.path(rel), source, size,
                 part_size=self.core.part_size, concurrency=self.core.concurrency,
                 progress=progress, reported=done)

        self.core.call(f"uploading {rel}", once)

    async def _get(self, rel: str, dest: Path | None, size: int, progress: Progress) -> str:
        bucket, key, _ = self.fs.split_path(self.path(rel))
        with HashingSink(dest, size, progress) as sink:
            if size > self.core.part_size:
                await self._get_ranges(bucket, key, rel, sink)
                return sink.finish()
            resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            body = resp["Body"]
            try:
                if int(resp.get("ContentLength", -1)) != size:
                    raise SizeMismatch(rel)
                while chunk := await body.read(CHUNK):
                    sink.add(chunk)
            finally:
                body.close()
            return sink.finish()

    async def _get_ranges(self, bucket: str, key: str, rel: str, sink: HashingSink) -> None:
        """Ranges of ``part_size`` bytes, ``concurrency`` at a time; each part is handed, in
        order, to one worker thread that hashes and writes it while later parts download.
        At most ``2 * concurrency`` parts are held fetched and not yet written
        (:func:`~zoo.store.ordered_parts.fetch_in_order`)."""
        fs, size, part_size = self.fs, sink.size, self.core.part_size

        async def fetch(start: int) -> bytes:
            end = min(size, start + part_size) - 1
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

        starts = range(0, size, part_size)
        with ThreadPoolExecutor(1, thread_name_prefix="zoo-store-hash") as worker:
            await fetch_in_order(len(starts), lambda i: fetch(starts[i]), sink.add,
                                 concurrency=self.core.concurrency,
                                 window=2 * self.core.concurrency, executor=worker)
