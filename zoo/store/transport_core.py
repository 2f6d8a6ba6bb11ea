"""The ground the store's transport stands on: file systems opened from URLs (fsspec, with
the libraries' own retries turned off so the number of attempts is exactly ours), failures
classified once (:func:`classify`: throttling, 5xx, timeouts and refused connections are
retried with backoff; a missing bucket, denied access or missing credentials are not), the
exceptions for bytes that are not what a listing promised (:class:`SizeMismatch`,
:class:`NotRegularFile`), and copying while hashing. :class:`TransportCore` holds the retry
rule (:meth:`TransportCore.call`) every backend's calls go through;
:class:`~zoo.store.transport.Transport` (its module docstring has the whole picture) is one.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from zoo.store.errors import StoreConfigError, StoreError, StoreUnavailableError
from zoo.weights.urls import redact_text
from zoo.weights.urls import redact_url as redact

Progress = Callable[[int], None]

CHUNK = 1 << 20
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF = 0.5
PART_SIZE = 50 << 20  # s3fs's chunk size: the same request pattern as a plain fs.put/get
MULTIPART_THRESHOLD = 100 << 20  # s3fs sends anything smaller in one PUT
CONCURRENCY = 10  # s3fs's max_concurrency
_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                   "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                   "RequestLimitExceeded", "TooManyRequests"}
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                 "InvalidToken", "AllAccessDisabled", "Forbidden", "403", "401"}
_TRANSIENT_ERRNOS = {errno.EBUSY, errno.ETIMEDOUT, errno.ECONNREFUSED, errno.ECONNRESET,
                     errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                     getattr(errno, "EREMOTEIO", errno.EIO)}


class SizeMismatch(Exception):
    """An object's bytes do not have the size its record claims (a refusal, not a fault)."""


class NotRegularFile(SizeMismatch):
    """A ``file://`` store entry that is not a regular file in real folders (a symbolic link,
    FIFO, socket, device or folder): refused, never opened for reading."""

    def __init__(self, rel: str, kind: str) -> None:
        from zoo._core.names import printable

        super().__init__(f"{printable(rel)} is {kind}, not a regular file; refused")
        self.rel = rel
        self.kind = kind


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 16:
        item = todo.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__]


def _client_error(exc: BaseException) -> tuple[str, int] | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        code = str(response["Error"].get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code, int(status or 0)
    return None


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, reason) of a failure: kind is ``missing``, ``nobucket``, ``denied``,
    ``credentials``, ``transient`` or ``error``."""
    for item in _chain(exc):
        found = _client_error(item)
        if found:
            code, status = found
            label = f"HTTP {status} {code}".strip() if status else code
            if code == "NoSuchBucket":
                return "nobucket", label
            if code in ("NoSuchKey", "NotFound", "404") or status == 404:
                return "missing", label
            if status in (401, 403) or code in _DENIED_CODES:
                return "denied", label
            if status in (500, 502, 503, 504) or code in _THROTTLE_CODES:
                return "transient", label
            return "error", label
        name = type(item).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
            return "credentials", redact_text(str(item))
        if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                    "ConnectionClosedError", "ProxyConnectionError", "HTTPClientError",
                    "ResponseStreamingError", "IncompleteReadError", "ClientPayloadError",
                    "ServerDisconnectedError", "ClientConnectorError", "ClientOSError",
                    "ServerTimeoutError", "IncompleteRead", "FSTimeoutError",
                    "ResponseParserError"):
            return "transient", redact_text(f"{name}: {item}")
        if isinstance(item, TimeoutError | socket.timeout | asyncio.TimeoutError |
                      ConnectionError):
            return "transient", redact_text(f"{name}: {item}")
    if isinstance(exc, FileNotFoundError):
        return "missing", redact_text(str(exc))
    if isinstance(exc, PermissionError):
        return "denied", redact_text(str(exc))
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return "transient", redact_text(exc.strerror or str(exc))
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return "error", redact_text(" ".join(f"{type(exc).__name__}: {text}".split())[:300])


def is_s3(fs: Any) -> bool:
    """Whether ``fs`` is s3fs (so S3's own calls are at hand)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return any(p in ("s3", "s3a") for p in protocols) and hasattr(fs, "_call_s3")


def is_local(fs: Any) -> bool:
    """Whether ``fs`` is fsspec's local file system (a ``file://`` store)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return any(p in ("file", "local") for p in protocols)


def open_filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """(fsspec file system, root path) for a store URL; StoreConfigError for what cannot work.

    A plain path is a ``file://`` store. For S3 the libraries' own retries are switched off
    (zoo retries; see the module docstring) unless ``options`` set them.
    """
    try:
        import fsspec
    except ModuleNotFoundError:
        raise StoreConfigError("the team store needs fsspec: pip install 'zoo[store]'") from None
    if "://" not in url:
        url = "file://" + str(Path(url).expanduser().absolute())
    protocol = url.split("://", 1)[0].lower()
    if protocol == "file":  # a file URL is percent-encoded (Path.as_uri writes %20)
        from urllib.parse import unquote
        from urllib.request import url2pathname

        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise StoreConfigError(f"--store {url}: a file:// URL names a local path "
                                   "(file:///shared/zoo); mount the share first")
        root = str(Path(url2pathname(unquote(parts.path))).expanduser().absolute())
        return fsspec.filesystem("file"), root
    if "@" in urlsplit(url).netloc:
        raise StoreConfigError(f"--store {redact(url)}: a store URL cannot carry credentials "
                               "(user:password@); use AWS_PROFILE, AWS_ACCESS_KEY_ID/"
                               "AWS_SECRET_ACCESS_KEY, or --store-option key/secret")
    opts = dict(options)
    if protocol in ("s3", "s3a"):
        config = dict(opts.pop("config_kwargs", {}) or {})
        config.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
        config.setdefault("connect_timeout", 10)
        config.setdefault("read_timeout", 60)
        opts["config_kwargs"] = config
    try:
        # fsspec caches file systems per (class, options, process, thread): a second store on
        # the same URL and options reuses the client instead of building a new one (~0.3 s).
        fs, root = fsspec.core.url_to_fs(url, **opts)
    except ValueError as exc:  # unknown protocol
        raise StoreConfigError(f"--store {redact(url)}: {str(exc).splitlines()[0]}") from None
    except ImportError as exc:
        name = getattr(exc, "name", None) or protocol
        raise StoreConfigError(f"--store {redact(url)}: the {protocol}:// backend needs "
                               f"{name}; pip install {name} (s3://: pip install 'zoo[store]')"
                               ) from None
    except TypeError as exc:
        raise StoreConfigError(f"--store-option: {redact_text(str(exc))} (options go to fsspec's "
                               f"{protocol} file system)") from None
    if is_s3(fs):
        fs.retries = 1  # zoo's Transport.call retries; s3fs's own loop would multiply them
        bucket = root.split("/", 1)[0]
        if not bucket:
            raise StoreConfigError(f"--store {redact(url)}: name a bucket, e.g. s3://team-zoo")
    return fs, root.rstrip("/")


class HashingSink:
    """Bytes on their way to ``dest`` (None: nowhere), hashed and reported as they pass;
    SizeMismatch as soon as there are more than ``size``, or at :meth:`finish` fewer."""

    def __init__(self, dest: Path | None, size: int, progress: Progress) -> None:
        self.size = size
        self.got = 0
        self.progress = progress
        self.digest = hashlib.sha256()
        self.file = open(dest, "wb") if dest is not None else None  # noqa: SIM115

    def add(self, chunk: bytes) -> None:
        """Take the next bytes."""
        self.got += len(chunk)
        if self.got > self.size:
            raise SizeMismatch("more bytes than recorded")
        self.digest.update(chunk)
        if self.file:
            self.file.write(chunk)
        self.progress(len(chunk))

    def finish(self) -> str:
        """The sha256 of all the bytes, which must be exactly ``size``."""
        if self.got != self.size:
            raise SizeMismatch("fewer bytes than recorded")
        return self.digest.hexdigest()

    def close(self) -> None:
        if self.file:
            self.file.close()

    def __enter__(self) -> HashingSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def copy_hashing(read: Callable[[int], bytes], dest: Path | None, size: int,
                 progress: Progress) -> str:
    """Copy what ``read`` gives into ``dest`` (never asking for more than ``size + 1``
    bytes) and return its sha256; SizeMismatch unless it is exactly ``size`` bytes."""
    with HashingSink(dest, size, progress) as sink:
        while chunk := read(min(CHUNK, size + 1 - sink.got)):
            sink.add(chunk)
        return sink.finish()


class TransportCore:
    """The one home of the retry and error rules every backend's calls go through, and of the
    transfer settings they share (read at each use, so a change applies at once)."""

    def __init__(self, url: str, root: str, *, attempts: int = DEFAULT_ATTEMPTS,
                 backoff: float = DEFAULT_BACKOFF, part_size: int = PART_SIZE,
                 multipart_threshold: int = MULTIPART_THRESHOLD,
                 concurrency: int = CONCURRENCY, page_size: int = 1000,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = redact(url)
        self.root = root
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.part_size = max(5 << 20, part_size)
        self.multipart_threshold = max(self.part_size, multipart_threshold)
        self.concurrency = max(1, concurrency)
        self.page_size = max(1, min(1000, page_size))
        self.sleep = sleep

    # -- errors and retries ---------------------------------------------------------------

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with bounded retries of transient failures.

        FileNotFoundError (a missing object) and SizeMismatch pass through; everything else
        becomes a StoreError naming the store, what was being done and the way out.
        """
        start = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                return fn(*args, **kwargs)
            except (SizeMismatch, StoreError):
                raise
            except Exception as exc:
                kind, reason = classify(exc)
                if kind == "missing":
                    raise FileNotFoundError(reason) from exc
                if kind == "transient" and attempt < self.attempts:
                    self.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise self.error(kind, reason, what, attempt, time.monotonic() - start) from exc
        raise AssertionError("unreachable")

    def error(self, kind: str, reason: str, what: str, attempts: int = 1,
              elapsed: float = 0.0) -> StoreError | StoreConfigError:
        """The StoreError for a failure of ``kind`` (see :func:`classify`) while ``what``."""
        where = f"store {self.url}"
        reason = redact_text(reason)
        if kind == "transient":
            return StoreUnavailableError(
                f"{where} is unreachable or throttled while {what} ({reason}); gave up after "
                f"{attempts} attempt{'s' * (attempts > 1)} in {elapsed:.1f} s; check the URL, "
                "the endpoint and the network, or use --no-store")
        if kind == "nobucket":
            bucket = self.root.split("/", 1)[0]
            return StoreError(f"{where}: the bucket {bucket!r} does not exist; create it "
                              f"(e.g. `aws s3 mb s3://{bucket}`) or fix --store / ZOO_STORE")
        if kind == "denied":
            return StoreError(f"{where}: access denied while {what} ({reason}); check the "
                              "credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...) and the "
                              "bucket policy")
        if kind == "credentials":
            return StoreError(f"{where}: no credentials ({reason}); set AWS_PROFILE or "
                              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or --store-option "
                              "anon=true for a public bucket")
        if "unexpected keyword argument" in reason:
            return StoreConfigError(f"{where}: a --store-option is not understood ({reason})")
        return StoreError(f"{where}: {what} failed: {reason}")
