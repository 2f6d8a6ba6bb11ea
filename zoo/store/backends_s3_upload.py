"""Resumable S3 multipart uploads: a killed publish leaves its parts; the next one lists them,
checks each part's MD5 ETag against the local bytes and sends only what is missing."""

from __future__ import annotations

import asyncio
import hashlib
import math
from pathlib import Path
from typing import Any

from zoo.store.transport_core import Progress, classify


async def multipart_upload(fs: Any, path: str, source: Path, size: int, *, part_size: int,
                           concurrency: int, progress: Progress,
                           reported: dict[int, int]) -> None:
    """Upload ``source`` (``size`` bytes) to ``path`` on s3fs ``fs`` in parts of at least
    ``part_size`` bytes, ``concurrency`` at a time, reusing the parts of an unfinished upload
    of the same key. ``reported`` (part number: bytes) keeps a retry from counting twice."""
    bucket, key, _ = fs.split_path(path)
    part_size = max(part_size, math.ceil(size / 10_000))
    count = math.ceil(size / part_size)
    upload_id, existing = await _find_upload(fs, bucket, key, part_size, size)
    if upload_id is None:
        mpu = await fs._call_s3("create_multipart_upload", Bucket=bucket, Key=key)
        upload_id = mpu["UploadId"]
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)

    def read_part(number: int) -> bytes:
        with open(source, "rb") as fh:
            fh.seek((number - 1) * part_size)
            return fh.read(part_size)

    async def one(number: int) -> dict[str, Any]:
        async with sem:
            data = await loop.run_in_executor(None, read_part, number)
            old = existing.get(number)
            if old and old["Size"] == len(data) and \
                    str(old["ETag"]).strip('"') == hashlib.md5(data).hexdigest():
                etag = old["ETag"]
            else:
                resp = await fs._call_s3("upload_part", Bucket=bucket, Key=key,
                                         UploadId=upload_id, PartNumber=number, Body=data)
                etag = resp["ETag"]
            if number not in reported:
                reported[number] = len(data)
                progress(len(data))
            return {"PartNumber": number, "ETag": etag}

    # Let every part finish (or fail) before reporting, so a retry or a later publish finds
    # all the parts that made it.
    results = await asyncio.gather(*(one(n) for n in range(1, count + 1)),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    parts = [r for r in results if isinstance(r, dict)]
    try:
        await fs._call_s3("complete_multipart_upload", Bucket=bucket, Key=key,
                          UploadId=upload_id, MultipartUpload={"Parts": list(parts)})
    except Exception as exc:
        # A concurrent publisher of the same content may have completed this upload.
        if classify(exc)[0] == "missing" or "NoSuchUpload" in str(exc):
            info = await fs._info(path, refresh=True)
            if int(info.get("size", -1)) == size:
                return
        raise
    fs.invalidate_cache(path)


async def _find_upload(fs: Any, bucket: str, key: str, part_size: int,
                       size: int) -> tuple[str | None, dict[int, dict[str, Any]]]:
    """An unfinished multipart upload of this key whose parts fit our part size."""
    listing = await fs._call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
    uploads = sorted((u for u in listing.get("Uploads", []) if u.get("Key") == key),
                     key=lambda u: str(u.get("Initiated", "")), reverse=True)
    for upload in uploads[:5]:
        parts: dict[int, dict[str, Any]] = {}
        marker = 0
        while True:
            resp = await fs._call_s3("list_parts", Bucket=bucket, Key=key,
                                     UploadId=upload["UploadId"], PartNumberMarker=marker)
            for part in resp.get("Parts", []):
                parts[int(part["PartNumber"])] = part
            if not resp.get("IsTruncated"):
                break
            marker = int(resp.get("NextPartNumberMarker") or 0)
            if not marker:
                break
        last = math.ceil(size / part_size)
        if all(p["Size"] == (part_size if n < last else size - part_size * (last - 1))
               for n, p in parts.items() if n <= last):
            return upload["UploadId"], parts
    return None, {}
