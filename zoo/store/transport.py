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
and exception texts only through :func:`zoo.urls.redact_url` / :func:`~zoo.urls.redact_text`.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import math
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from zoo.store.errors import StoreConfigError, StoreError, StoreUnavailableError
from zoo.urls import redact_text
from zoo.urls import redact_url as redact

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


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FD = os.open in os.supports_dir_fd


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


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


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


def _is_s3(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return any(p in ("s3", "s3a") for p in protocols) and hasattr(fs, "_call_s3")


def _is_local(fs: Any) -> bool:
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
    if _is_s3(fs):
        fs.retries = 1  # zoo's Transport.call retries; s3fs's own loop would multiply them
        bucket = root.split("/", 1)[0]
        if not bucket:
            raise StoreConfigError(f"--store {redact(url)}: name a bucket, e.g. s3://team-zoo")
    return fs, root.rstrip("/")


class Transport:
    """The operations the store needs on its URL (paths are relative to the store root)."""

    def __init__(self, url: str, fs: Any, root: str, *, attempts: int = DEFAULT_ATTEMPTS,
                 backoff: float = DEFAULT_BACKOFF, part_size: int = PART_SIZE,
                 multipart_threshold: int = MULTIPART_THRESHOLD,
                 concurrency: int = CONCURRENCY, page_size: int = 1000,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = redact(url)
        self.fs = fs
        self.root = root
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.part_size = max(5 << 20, part_size)
        self.multipart_threshold = max(self.part_size, multipart_threshold)
        self.concurrency = max(1, concurrency)
        self.page_size = max(1, min(1000, page_size))
        self.sleep = sleep
        self.s3 = _is_s3(fs)
        self.local = Path(root) if _is_local(fs) else None
        #: ``file://`` entries the last listings found and refused (relative path: reason)
        self.refused: dict[str, str] = {}

    # -- is there a store at all ----------------------------------------------------------

    def check_root(self) -> None:
        """Raise a StoreError (exit 1) unless the store exists and can be read: a ``file://``
        store's folder must exist and be readable; an S3 store's bucket must answer (an empty
        prefix is an empty store). Transient failures are retried like every call."""
        if self.local is not None:
            try:
                st = os.stat(self.local)
                if not stat.S_ISDIR(st.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "not a folder")
                with os.scandir(self.local):
                    pass
            except FileNotFoundError:
                raise StoreError(f"store {self.url}: the folder {self.local} does not exist; "
                                 "check --store / ZOO_STORE (`zoo publish` creates a new "
                                 "store)") from None
            except OSError as exc:
                raise StoreError(f"store {self.url}: cannot read the folder {self.local} "
                                 f"({exc.strerror or exc}); check --store / ZOO_STORE and "
                                 "its permissions") from None
            return
        if self.s3:
            bucket = self.root.split("/", 1)[0]
            try:
                self.call("checking the bucket", self.fs.call_s3, "head_bucket", Bucket=bucket)
            except FileNotFoundError:
                raise self._error("nobucket", "", "checking the bucket", 1, 0) from None
            return
        top = self.root.split("/", 1)[0]
        try:
            self.call("checking the store", self.fs.info, top or self.root)
        except FileNotFoundError:
            raise StoreError(f"store {self.url}: {top or self.root} does not exist; check "
                             "--store / ZOO_STORE") from None

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
                raise self._error(kind, reason, what, attempt, time.monotonic() - start) from exc
        raise AssertionError("unreachable")

    def _error(self, kind: str, reason: str, what: str, attempts: int,
               elapsed: float) -> StoreError:
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

    # -- paths ----------------------------------------------------------------------------

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root else rel

    def rel(self, full: str) -> str:
        full = full.rstrip("/")
        prefix = self.root + "/" if self.root else ""
        if self.local is not None:
            full = full.replace("\\", "/")
            prefix = prefix.replace("\\", "/")
        return full[len(prefix):] if full.startswith(prefix) else full

    # -- small things ---------------------------------------------------------------------

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

    def list(self, prefix: str) -> list[tuple[str, int]]:
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

    def _s3_list(self, prefix: str) -> list[tuple[str, int]]:
        """ListObjectsV2 page by page (``page_size`` keys each), one retried call per page."""
        bucket, key, _ = self.fs.split_path(self.path(prefix))
        found: list[tuple[str, int]] = []
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

    def read_many(self, rels: list[str], limit: int) -> dict[str, bytes | Exception]:
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

    # -- local stores ---------------------------------------------------------------------

    def _local_list(self, prefix: str) -> list[tuple[str, int]]:
        """Regular files under ``prefix``, through real folders only; anything else found
        (symbolic links, FIFOs, sockets, devices) is listed too, with its reason kept in
        :attr:`refused`, so readers see it and refuse it rather than miss it."""
        assert self.local is not None
        found: list[tuple[str, int]] = []
        base = self.local / prefix
        try:
            self._real_folders(prefix.rstrip("/"), base)
        except FileNotFoundError:
            return []
        except NotRegularFile as exc:
            self.refused[exc.rel] = str(exc)
            return [(exc.rel, 0)]
        try:
            for dirpath, dirs, names in os.walk(base):  # never follows symbolic links
                for name in [*dirs, *names]:
                    full = Path(dirpath, name)
                    rel = full.relative_to(self.local).as_posix()
                    try:
                        st = os.lstat(full)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        self.refused[rel] = str(NotRegularFile(rel, _kind(st.st_mode)))
                    found.append((rel, st.st_size))
        except OSError as exc:
            raise self._error("error", exc.strerror or str(exc), f"listing {prefix}", 1,
                              0) from exc
        return sorted(found)

    def _real_folders(self, rel: str, full: Path) -> None:
        """NotRegularFile unless every folder of ``rel`` below the root is a real folder
        (FileNotFoundError when one is missing)."""
        assert self.local is not None
        parts = [p for p in rel.split("/") if p]
        for i in range(1, len(parts) + 1):
            st = os.lstat(self.local.joinpath(*parts[:i]))
            if not stat.S_ISDIR(st.st_mode):
                raise NotRegularFile("/".join(parts[:i]), _kind(st.st_mode))

    def _open_local(self, rel: str) -> int:
        """A read-only descriptor of the regular file ``rel``, reached through real folders
        (no symbolic link is followed, a FIFO is not waited on). NotRegularFile otherwise."""
        assert self.local is not None
        parts = [p for p in rel.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise NotRegularFile(rel, "not a path inside the store")
        flags = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC
        if not _DIR_FD:
            self._real_folders("/".join(parts[:-1]), self.local)
            fd = self._open_checked(rel, str(self.local.joinpath(*parts)), flags, None)
        else:
            dfd = os.open(self.local, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
            try:
                for i, part in enumerate(parts[:-1]):
                    try:
                        nfd = os.open(part, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW |
                                      _O_CLOEXEC, dir_fd=dfd)
                    except OSError as exc:
                        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                            raise
                        st = os.lstat(part, dir_fd=dfd)
                        raise NotRegularFile("/".join(parts[:i + 1]), _kind(st.st_mode)) \
                            from None
                    os.close(dfd)
                    dfd = nfd
                fd = self._open_checked(rel, parts[-1], flags, dfd)
            finally:
                os.close(dfd)
        return fd

    @staticmethod
    def _open_checked(rel: str, name: str, flags: int, dir_fd: int | None) -> int:
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except NotADirectoryError:
            raise FileNotFoundError(errno.ENOENT, "not found", rel) from None
        if not stat.S_ISREG(st.st_mode):  # devices and FIFOs are never opened
            raise NotRegularFile(rel, _kind(st.st_mode))
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # replaced by a symbolic link since the lstat
                raise NotRegularFile(rel, "a symbolic link") from None
            raise
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise NotRegularFile(rel, _kind(mode))
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
        return fd

    def _local_install(self, rel: str, fill: Callable[[Any], Any]) -> None:
        assert self.local is not None
        final = self.local / rel
        tmp_dir = self.local / "tmp"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp_dir.mkdir(parents=True, exist_ok=True)
            # never write through a symbolic link someone planted in the store
            self._real_folders(Path(rel).parent.as_posix(), final.parent)
            self._real_folders("tmp", tmp_dir)
            fd, tmp = tempfile.mkstemp(prefix=f"{final.name[:40]}.", suffix=".tmp",
                                       dir=tmp_dir)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fill(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, final)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except NotRegularFile as exc:
            raise StoreError(f"store {self.url}: cannot write {rel}: {exc}") from None
        except OSError as exc:
            raise self._error("error", exc.strerror or str(exc), f"writing {rel}", 1, 0) from exc

    # -- uploads --------------------------------------------------------------------------

    def put(self, source: Path | bytes, rel: str, size: int, progress: Progress) -> None:
        """Upload ``source`` (a file or bytes) to ``rel``; the object appears whole or not."""
        if self.local is not None:
            def fill(fh: Any) -> None:
                if isinstance(source, bytes):
                    fh.write(source)
                    progress(len(source))
                    return
                with open(source, "rb") as src:
                    while chunk := src.read(CHUNK):
                        fh.write(chunk)
                        progress(len(chunk))
            self._local_install(rel, fill)
            return
        if self.s3 and isinstance(source, Path) and size >= self.multipart_threshold:
            from fsspec.asyn import sync

            done: dict[int, int] = {}  # part -> bytes reported, so a retry never counts twice

            def once() -> None:
                sync(self.fs.loop, self._s3_multipart, source, rel, size, progress, done)

            self.call(f"uploading {rel}", once)
            return
        what = f"uploading {rel}"
        if isinstance(source, bytes):
            self.call(what, self.fs.pipe_file, self.path(rel), source)
        else:
            self.call(what, self.fs.put_file, str(source), self.path(rel))
        progress(size)

    async def _s3_multipart(self, source: Path, rel: str, size: int, progress: Progress,
                            reported: dict[int, int]) -> None:
        fs = self.fs
        bucket, key, _ = fs.split_path(self.path(rel))
        part_size = max(self.part_size, math.ceil(size / 10_000))
        count = math.ceil(size / part_size)
        upload_id, existing = await self._s3_find_upload(bucket, key, part_size, size)
        if upload_id is None:
            mpu = await fs._call_s3("create_multipart_upload", Bucket=bucket, Key=key)
            upload_id = mpu["UploadId"]
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(self.concurrency)

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
                info = await fs._info(self.path(rel), refresh=True)
                if int(info.get("size", -1)) == size:
                    return
            raise
        fs.invalidate_cache(self.path(rel))

    async def _s3_find_upload(self, bucket: str, key: str, part_size: int,
                              size: int) -> tuple[str | None, dict[int, dict[str, Any]]]:
        """An unfinished multipart upload of this key whose parts fit our part size."""
        fs = self.fs
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

    def _local_get(self, rel: str, dest: Path | None, size: int, progress: Progress) -> str:
        assert self.local is not None
        with os.fdopen(self._open_local(rel), "rb") as src:
            if os.fstat(src.fileno()).st_size != size:
                raise SizeMismatch(rel)
            return _copy_hashing(src.read, dest, size, progress)

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
        writes: list[asyncio.Future[None]] = []
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


def _copy_hashing(read: Callable[[int], bytes], dest: Path | None, size: int,
                  progress: Progress) -> str:
    digest = hashlib.sha256()
    got = 0
    sink = open(dest, "wb") if dest is not None else None  # noqa: SIM115
    try:
        while chunk := read(min(CHUNK, size + 1 - got)):
            got += len(chunk)
            if got > size:
                raise SizeMismatch("more bytes than recorded")
            digest.update(chunk)
            if sink:
                sink.write(chunk)
            progress(len(chunk))
    finally:
        if sink:
            sink.close()
    if got != size:
        raise SizeMismatch("fewer bytes than recorded")
    return digest.hexdigest()
