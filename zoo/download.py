"""The HTTP downloader: streaming sha256, Range resume, bounded retries, atomic results.

Discipline (pooch's, made resumable): bytes go to a ``.part`` file in the destination folder
and are hashed as they arrive; a dropped connection, a timeout or a 5xx is retried with
exponential backoff and resumes from the ``.part`` file with ``Range`` (``If-Range`` guards
against the file changing underneath). A process killed with ``kill -9`` leaves the ``.part``
file behind, so the next run resumes too. A 4xx is final. A server that ignores ``Range``
gets a clean restart from zero. A ``Content-Length`` larger than the expected size (plus
slack) is refused before a byte of body is read. On a hash mismatch the ``.part`` file is
deleted. Callers move a verified ``.part`` file into place with ``os.replace``.

``retries`` bounds the retries of one call; the ``.part`` file survives an exhausted budget,
so running the command again continues where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from zoo.errors import DownloadError, HashMismatchError

CHUNK = 1 << 20
BACKOFF_CAP = 8.0
Log = Callable[[str], None]


@dataclass(frozen=True)
class DownloadResult:
    """A complete, verified download (still at ``path``, the ``.part`` file)."""

    path: Path
    sha256: str
    size: int
    transferred: int  # body bytes received over the network by this call
    attempts: int
    resumed_from: int  # bytes already on disk when the first attempt started


class _Transient(Exception):
    """A failure worth retrying (connection, timeout, 5xx)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Again(Exception):
    """Start the attempt over from zero without spending a retry (416, bad Content-Range)."""


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url_allowed(url: str, allow_http: bool = False) -> None:
    """Refuse anything but https, or http to a loopback host, unless ``allow_http``."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme == "http":
        if allow_http or is_loopback(parts.hostname):
            return
        raise DownloadError(
            f"refusing plain http:// URL {url}: its bytes can be altered in transit; "
            "use https, or pass --allow-http if you trust the network"
        )
    raise DownloadError(f"cannot download {url}: only http(s) URLs are supported")


def size_limit(size: int | None, exact: bool = True) -> int | None:
    """Most bytes accepted for a file published as ``size`` (approximate sizes get 5% + 1 MiB)."""
    if size is None:
        return None
    return size if exact else size + size // 20 + (1 << 20)


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """``'bytes 100-199/1000'`` -> (100, 1000); total None for ``*``."""
    if not value or not value.startswith("bytes "):
        return None
    span, _, total = value[6:].partition("/")
    start, _, _end = span.partition("-")
    try:
        return int(start), (None if total.strip() == "*" else int(total))
    except ValueError:
        return None


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _why(exc: BaseException) -> str:
    """A short, one-line reason from a requests/urllib3 exception chain."""
    seen = exc
    while seen.__context__ is not None and isinstance(seen.__context__, Exception):
        seen = seen.__context__
    text = " ".join(str(seen).split()) or type(seen).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


class _Progress:
    """A rich progress bar on stderr (bytes, rate, ETA), or nothing."""

    def __init__(self, mode: str, label: str, total: int | None, done: int) -> None:
        self.bar: Any = None
        if mode == "never" or (mode == "auto" and not sys.stderr.isatty()):
            return
        from rich import progress as rp
        from rich.console import Console

        self.bar = rp.Progress(
            rp.TextColumn("{task.description}"), rp.BarColumn(), rp.DownloadColumn(),
            rp.TransferSpeedColumn(), rp.TimeRemainingColumn(), console=Console(file=sys.stderr),
        )
        self.task = self.bar.add_task(label, total=total, completed=done)
        self.bar.start()

    def update(self, completed: int, total: int | None = None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _Transfer:
    """One download into one ``.part`` file, across attempts."""

    def __init__(self, url: str, part: Path, limit: int | None, timeout: float,
                 session: requests.Session, bar: _Progress, log: Log) -> None:
        self.url, self.part, self.limit, self.timeout = url, part, limit, timeout
        self.meta_path = part.with_name(part.name + ".json")
        self.session, self.bar, self.log = session, bar, log
        self.hasher = hashlib.sha256()
        self.offset = 0
        self.total: int | None = None
        self.transferred = 0
        self.meta: dict[str, Any] = {}

    def adopt_partial(self) -> int:
        """Hash what a previous attempt or process left in the ``.part`` file."""
        if not self.part.is_file():
            return 0
        size = self.part.stat().st_size
        if self.limit is not None and size > self.limit:
            self.reset()
            return 0
        with open(self.part, "rb") as fh:
            while block := fh.read(CHUNK):
                self.hasher.update(block)
        self.offset = size
        with contextlib.suppress(OSError, ValueError):
            self.meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        if self.meta.get("url") not in (None, self.url):
            self.meta = {}  # another mirror's validators mean nothing here; the hash still checks
        return size

    def reset(self) -> None:
        """Forget the partial bytes and start from zero."""
        self.part.parent.mkdir(parents=True, exist_ok=True)
        self.part.write_bytes(b"")
        self.meta_path.unlink(missing_ok=True)
        self.hasher = hashlib.sha256()
        self.offset = 0
        self.meta = {}

    def discard(self) -> None:
        """Delete the ``.part`` file and its validators."""
        self.part.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)

    def attempt(self) -> None:
        """One GET; returns when the body is complete, raises _Transient/_Again/DownloadError."""
        headers = {"Accept-Encoding": "identity", "User-Agent": "zoo-downloader"}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
            validator = self.meta.get("etag") or self.meta.get("last_modified")
            if validator and not str(validator).startswith("W/"):
                headers["If-Range"] = validator
        try:
            resp = self.session.get(self.url, headers=headers, stream=True,
                                    timeout=(self.timeout, self.timeout))
        except requests.Timeout as exc:
            raise _Transient(f"timed out after {self.timeout:g} s ({_why(exc)})") from exc
        except requests.RequestException as exc:
            raise _Transient(f"connection failed: {_why(exc)}") from exc
        with resp:
            if self._check_response(resp):
                self._stream(resp)

    def _check_response(self, resp: requests.Response) -> bool:
        """Validate status and headers; False when there is no body left to read."""
        status = resp.status_code
        if resp.url != self.url:
            parts = urlsplit(resp.url)
            if parts.scheme != "https" and not is_loopback(parts.hostname) and \
                    urlsplit(self.url).scheme == "https":
                raise DownloadError(f"{self.url} redirected to plain http ({resp.url}); refused")
        if status >= 500 or status in (408, 429):
            raise _Transient(f"HTTP {status} {resp.reason}", _retry_after(resp))
        if status == 416 and self.offset:
            span = _content_range(resp.headers.get("Content-Range"))
            if span is not None and span[1] == self.offset:
                self.total = self.offset  # we already hold every byte
                return False
            self.reset()
            raise _Again
        if status >= 400:
            raise DownloadError(f"HTTP {status} {resp.reason} for {self.url}")
        length = resp.headers.get("Content-Length")
        body = int(length) if length and length.isdigit() else None
        if status == 206 and self.offset:
            span = _content_range(resp.headers.get("Content-Range"))
            if span is None or span[0] != self.offset:
                self.reset()
                raise _Again
            total = span[1] if span[1] is not None else (
                self.offset + body if body is not None else None)
        else:
            if self.offset:
                self.log(f"{self.url}: server ignored the Range request; restarting from zero")
                self.reset()
            total = body
        if self.limit is not None and total is not None and total > self.limit:
            self.discard()
            raise DownloadError(
                f"{self.url} announces {total} bytes but at most {self.limit} are expected; "
                "refusing to download it (wrong file or a misconfigured mirror?)"
            )
        self.total = total
        if self.offset == 0:
            self.meta = {"url": self.url, "etag": resp.headers.get("ETag"),
                         "last_modified": resp.headers.get("Last-Modified")}
            _write_json(self.meta_path, self.meta)
        self.bar.update(self.offset, total)
        return True

    def _stream(self, resp: requests.Response) -> None:
        raw = resp.raw
        read = raw.read1 if hasattr(raw, "read1") else raw.read
        start = self.offset
        hashing = _BackgroundHash(self.hasher)
        try:
            with open(self.part, "ab") as fh:
                write, feed = fh.write, hashing.feed
                while True:
                    try:
                        chunk = read(CHUNK, decode_content=True)
                    except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
                        raise _Transient(
                            f"timed out after {self.timeout:g} s waiting for data at byte "
                            f"{self.offset}"
                        ) from exc
                    except (urllib3.exceptions.HTTPError, requests.RequestException,
                            OSError) as exc:
                        raise _Transient(
                            f"connection dropped at byte {self.offset}: {_why(exc)}"
                        ) from exc
                    if not chunk:
                        break
                    write(chunk)
                    feed(chunk)
                    self.offset += len(chunk)
                    if self.limit is not None and self.offset > self.limit:
                        self.discard()
                        raise DownloadError(
                            f"{self.url} sent more than the {self.limit} bytes expected; refused"
                        )
                    if self.bar.bar is not None:
                        self.bar.update(self.offset)
        finally:
            hashing.finish()  # the digest now covers exactly the bytes written
            self.transferred += self.offset - start
        if self.total is not None and self.offset < self.total:
            raise _Transient(f"connection closed at byte {self.offset} of {self.total}")


class _BackgroundHash:
    """Feed a digest on a second thread (hashlib releases the GIL), so sha256 overlaps the
    socket and the disk instead of adding to them. ``finish()`` waits for the backlog."""

    def __init__(self, digest: Any, depth: int = 16) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._run, args=(digest.update,), daemon=True)
        self.thread.start()

    def _run(self, update: Callable[[bytes], None]) -> None:
        get = self.queue.get
        while (chunk := get()) is not None:
            update(chunk)

    def feed(self, chunk: bytes) -> None:
        self.queue.put(chunk)

    def finish(self) -> None:
        self.queue.put(None)
        self.thread.join()


def hash_matches(digest: str, expected: str | None) -> bool:
    """True when ``expected`` (full sha256 or a prefix of it) agrees with ``digest``."""
    return expected is None or digest.startswith(expected.lower())


def download(
    url: str,
    part: Path,
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    size_exact: bool = True,
    allow_http: bool = False,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 0.5,
    progress: str = "auto",
    label: str | None = None,
    log: Log | None = None,
) -> DownloadResult:
    """Download ``url`` into ``part`` (resuming what is there) and verify it.

    ``expected_sha256`` is a full hash or a prefix (8 hex). ``progress`` is ``"auto"`` (a bar
    when stderr is a terminal), ``"always"`` or ``"never"``; ``log`` receives retry notes.
    Raises DownloadError (final HTTP status, refused URL or size, retries exhausted; the
    ``.part`` file is kept for a later resume) or HashMismatchError (``.part`` deleted).
    """
    check_url_allowed(url, allow_http)
    note = log or (lambda m: print(f"zoo: {m}", file=sys.stderr) if progress != "never" else None)
    limit = size_limit(expected_size, size_exact)
    part.parent.mkdir(parents=True, exist_ok=True)
    bar = _Progress(progress, label or urlsplit(url).path.rsplit("/", 1)[-1] or url,
                    expected_size, 0)
    attempts, failures, restarted = 0, 0, False
    try:
        with requests.Session() as session:
            xfer = _Transfer(url, part, limit, timeout, session, bar, note)
            resumed_from = xfer.adopt_partial()
            restarts = 0
            while True:
                if xfer.offset and size_exact and expected_size == xfer.offset and \
                        hash_matches(xfer.hasher.hexdigest(), expected_sha256):
                    break  # a previous run got every byte but died before the rename
                attempts += 1
                try:
                    xfer.attempt()
                except _Again as exc:
                    restarts += 1
                    if restarts > 3:
                        raise DownloadError(
                            f"cannot download {url}: the server keeps answering the Range "
                            "request inconsistently"
                        ) from exc
                    continue
                except _Transient as exc:
                    failures += 1
                    if failures > retries:
                        kept = f"; {xfer.offset} bytes kept to resume" if xfer.offset else ""
                        raise DownloadError(
                            f"cannot download {url}: {exc} (gave up after {attempts} "
                            f"attempt{'s' if attempts > 1 else ''}{kept})"
                        ) from exc
                    delay = min(BACKOFF_CAP, backoff * 2 ** (failures - 1))
                    delay *= random.uniform(0.8, 1.2)
                    if exc.retry_after is not None:
                        delay = max(delay, min(exc.retry_after, BACKOFF_CAP))
                    note(f"{url}: {exc}; retry {failures}/{retries} in {delay:.1f} s")
                    time.sleep(delay)
                    continue
                digest = xfer.hasher.hexdigest()
                if not hash_matches(digest, expected_sha256) and resumed_from and not restarted:
                    note(f"{url}: resumed file does not verify; downloading it again from zero")
                    restarted = True
                    xfer.reset()
                    continue
                break
    finally:
        bar.close()
    digest = xfer.hasher.hexdigest()
    if not hash_matches(digest, expected_sha256):
        xfer.discard()
        kind = "sha256" if expected_sha256 and len(expected_sha256) == 64 else "sha256 prefix"
        raise HashMismatchError(
            f"{kind} mismatch for {url}: expected {expected_sha256}, got {digest}; "
            "the download was deleted"
        )
    if expected_size is not None and size_exact and xfer.offset != expected_size:
        xfer.discard()
        raise HashMismatchError(
            f"size mismatch for {url}: expected {expected_size} bytes, got {xfer.offset}; "
            "the download was deleted"
        )
    xfer.meta_path.unlink(missing_ok=True)
    return DownloadResult(part, digest, xfer.offset, xfer.transferred, attempts, resumed_from)


def download_file(url: str, dest: Path, **kwargs: Any) -> DownloadResult:
    """:func:`download` into ``dest`` via ``dest.part`` and an atomic rename."""
    part = dest.with_name(dest.name + ".part")
    result = download(url, part, **kwargs)
    os.replace(part, dest)
    return DownloadResult(dest, result.sha256, result.size, result.transferred,
                          result.attempts, result.resumed_from)
