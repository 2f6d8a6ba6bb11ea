"""The HTTP downloader: streaming sha256, Range resume, bounded retries, atomic results.

Discipline (pooch's, made resumable): bytes go to a ``.part`` file in the destination folder
and are hashed as they arrive; a dropped connection, a stall or a 5xx is retried with
exponential backoff and resumes from the ``.part`` file with ``Range`` (``If-Range`` guards
against the file changing underneath). A process killed with ``kill -9`` leaves the ``.part``
file behind, so the next run resumes too. A 4xx is final. A server that ignores ``Range``
gets a clean restart from zero. On a hash mismatch the ``.part`` file is deleted. Callers
move a verified ``.part`` file into place with ``os.replace``.

Bounds (curl's and cargo's low-speed rule, plus a deadline):

- *time*: an attempt that receives less than ``min_rate`` bytes/s (and at least one byte)
  over a ``timeout``-second window is stalled, whether the server sends nothing or trickles
  a byte a second, before or after the headers; a watchdog thread cuts its socket.
  ``retries`` bounds the retries, ``deadline`` the whole call (attempts, backoff, all).
- *space*: a body larger than the expected size (plus slack when approximate), or than
  ``max_size`` when no size is expected, is refused as soon as it is announced or exceeded;
  free space is checked before a transfer of known size starts; a full disk (ENOSPC,
  EDQUOT) removes the ``.part`` file and says how much space was needed.
- *hops*: redirects are followed by hand, at most :data:`~zoo.weights.urls.MAX_REDIRECTS`, each
  under the same URL rules as the first (:mod:`zoo.weights.urls`).

The ``.part`` file survives an exhausted retry budget or deadline, so running the command
again continues where it stopped. URLs appear in messages and records redacted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from zoo._core.fs import (
    FULL_ERRNOS,
    atomic_write_text,
    disk_error_message,
    free_bytes,
    human_size,
    read_json_record,
    warn_once,
)
from zoo._core.settings import counted
from zoo.errors import DownloadError, HashMismatchError
from zoo.weights.policy import (
    DEFAULT_MAX_SIZE,
    DEFAULT_MIN_RATE,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
)
from zoo.weights.urls import (
    MAX_REDIRECTS,
    check_url_allowed,
    follow_redirect,
    hash_matches,
    is_loopback,
    redact_url,
    size_limit,
    url_digest,
)
from zoo.weights.watchdog import (
    BackgroundHash,
    Clock,
    location_of,
    new_session,
    secs,
    watching,
)

__all__ = ["DownloadResult", "check_url_allowed", "download", "download_file", "hash_matches",
           "is_loopback", "size_limit"]

CHUNK = 1 << 20
BACKOFF_CAP = 8.0
REDIRECTS = (301, 302, 303, 307, 308)
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
    """A failure worth retrying (connection, stall, 5xx)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Again(Exception):
    """Start the attempt over from zero without spending a retry (416, bad Content-Range)."""


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
    atomic_write_text(path, json.dumps(data))


def _open_part(path: Path) -> Any:
    """Open the ``.part`` file for appending (one seam: the simulated-disk tests wrap it)."""
    return open(path, "ab")


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


def _meta_ok(data: dict[str, Any]) -> bool:
    """A ``.part.json`` record of the expected shape (validators are printable strings)."""
    for key in ("etag", "last_modified"):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) and len(value) <= 1024
                                      and value.isprintable()):
            return False
    return all(isinstance(data.get(k, ""), str) for k in ("url", "url_sha256"))


@dataclass
class _Limits:
    timeout: float
    allow_http: bool
    limit: int | None  # from the expected size
    max_size: int | None  # when no size is expected
    home_hint: str


class _Transfer:
    """One download into one ``.part`` file, across attempts."""

    def __init__(self, url: str, part: Path, limits: _Limits, clock: Clock,
                 bar: _Progress, log: Log) -> None:
        self.url, self.shown, self.part = url, redact_url(url), part
        self.limits, self.clock, self.bar, self.log = limits, clock, bar, log
        self.meta_path = part.with_name(part.name + ".json")
        self.hasher = hashlib.sha256()
        self.offset = 0
        self.total: int | None = None
        self.transferred = 0
        self.meta: dict[str, Any] = {}

    @property
    def cap(self) -> int | None:
        """The most bytes this download may hold."""
        return self.limits.limit if self.limits.limit is not None else self.limits.max_size

    def adopt_partial(self) -> int:
        """Hash what a previous attempt or process left in the ``.part`` file."""
        if not self.part.is_file():
            return 0
        size = self.part.stat().st_size
        if self.cap is not None and size > self.cap:
            self.reset()
            return 0
        with open(self.part, "rb") as fh:
            while block := fh.read(CHUNK):
                self.hasher.update(block)
        self.offset = size
        self.meta = self._read_meta()
        return size

    def _read_meta(self) -> dict[str, Any]:
        data, why = read_json_record(self.meta_path)
        if data is not None and not _meta_ok(data):
            data, why = None, "fields of the wrong kind"
        if why is not None:
            warn_once(str(self.meta_path), f"damaged download record {self.meta_path} ({why}); "
                      "removed (the partial bytes are still checked against the hash)")
            with contextlib.suppress(OSError):
                self.meta_path.unlink()
            return {}
        if data is None:
            return {}
        same = (data.get("url_sha256") == url_digest(self.url) if "url_sha256" in data
                else data.get("url") == self.url)
        return data if same else {}  # another mirror's validators mean nothing here

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
        for path in (self.part, self.meta_path):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def check_space(self, size: int | None) -> None:
        """Refuse to start when the disk cannot hold the rest of a ``size``-byte file."""
        if size is None:
            return
        needed = size - self.offset
        free = free_bytes(self.part.parent)
        if free is not None and needed > free:
            hint = f", or {self.limits.home_hint}" if self.limits.home_hint else ""
            raise DownloadError(
                f"not enough disk space for {self.shown}: {human_size(needed)} ({needed} "
                f"bytes) needed in {self.part.parent}, {human_size(free)} free; free some "
                f"space{hint}"
            )

    def disk_error(self, exc: OSError) -> DownloadError:
        """A write failed: a full disk removes the partial file; say what was needed."""
        full = exc.errno in FULL_ERRNOS
        if full:
            self.discard()
        message = disk_error_message(
            exc, self.part, needed=self.total if full else None, written=self.offset,
            removed=full, home_hint=self.limits.home_hint)
        return DownloadError(f"cannot download {self.shown}: {message}")

    def attempt(self, session: requests.Session) -> None:
        """One GET, following redirects by hand; returns when the body is complete, raises
        _Transient/_Again/DownloadError."""
        headers = {"Accept-Encoding": "identity", "User-Agent": "zoo-downloader"}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
            validator = self.meta.get("etag") or self.meta.get("last_modified")
            if validator and not str(validator).startswith("W/"):
                headers["If-Range"] = validator
        url = self.url
        for _hop in range(MAX_REDIRECTS + 1):
            resp = self._get(session, url, headers)
            with resp:
                if resp.status_code in REDIRECTS:
                    location = location_of(resp)
                    if not location:
                        raise DownloadError(f"{redact_url(url)} answered HTTP "
                                            f"{resp.status_code} with no Location; refused")
                    url = follow_redirect(url, location, self.limits.allow_http)
                    continue
                if self._check_response(resp, url):
                    self._stream(resp)
                return
        raise DownloadError(f"cannot download {self.shown}: more than {MAX_REDIRECTS} "
                            "redirects (a redirect loop?); refused")

    def _get(self, session: requests.Session, url: str,
             headers: dict[str, str]) -> requests.Response:
        connect = self.limits.timeout
        left = self.clock.remaining()
        if left is not None:
            connect = max(0.01, min(connect, left))
        try:
            return session.get(url, headers=headers, stream=True, allow_redirects=False,
                               timeout=(connect, self.limits.timeout))
        except ValueError as exc:  # InvalidURL, InvalidHeader, IDNA errors: not worth a retry
            raise DownloadError(f"cannot download {redact_url(url)}: {_why(exc)}") from None
        except requests.Timeout as exc:
            raise _Transient(self.clock.check() or
                             f"timed out: no answer for {self.limits.timeout:g} s") from exc
        except requests.RequestException as exc:
            raise _Transient(self.clock.check() or f"connection failed: {_why(exc)}") from exc

    def _check_response(self, resp: requests.Response, url: str) -> bool:
        """Validate status and headers; False when there is no body left to read."""
        status = resp.status_code
        where = self.shown if url == self.url else f"{self.shown} (via {redact_url(url)})"
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
            raise DownloadError(f"HTTP {status} {resp.reason} for {where}")
        if status not in (200, 206):
            raise DownloadError(f"unexpected HTTP {status} {resp.reason} for {where}")
        length = resp.headers.get("Content-Length")
        body = int(length) if length and length.isdigit() else None
        if status == 206:
            span = _content_range(resp.headers.get("Content-Range"))
            if span is None or span[0] != self.offset:
                self.reset()
                raise _Again
            total = span[1] if span[1] is not None else (
                self.offset + body if body is not None else None)
        else:
            if self.offset:
                self.log(f"{self.shown}: server ignored the Range request; restarting from zero")
                self.reset()
            total = body
        self._check_total(total)
        self.total = total
        if self.offset == 0:
            self.meta = {"url": self.shown, "url_sha256": url_digest(self.url),
                         "etag": resp.headers.get("ETag"),
                         "last_modified": resp.headers.get("Last-Modified")}
            if not _meta_ok(self.meta):
                self.meta = {"url": self.shown, "url_sha256": url_digest(self.url)}
            _write_json(self.meta_path, self.meta)
        self.bar.update(self.offset, total)
        return True

    def _check_total(self, total: int | None) -> None:
        if total is None:
            return
        limit, max_size = self.limits.limit, self.limits.max_size
        if limit is not None and total > limit:
            self.discard()
            raise DownloadError(
                f"{self.shown} announces {total} bytes but at most {limit} are expected; "
                "refusing to download it (wrong file or a misconfigured mirror?)"
            )
        if limit is None and max_size is not None and total > max_size:
            self.discard()
            raise DownloadError(
                f"{self.shown} announces {total} bytes ({human_size(total)}), more than the "
                f"--max-size of {human_size(max_size)}; refusing to download it (raise "
                "--max-size if you expect a file this big)"
            )
        self.check_space(total)

    def _over_cap(self) -> DownloadError:
        self.discard()
        if self.limits.limit is not None:
            return DownloadError(
                f"{self.shown} sent more than the {self.limits.limit} bytes expected; refused "
                "and the partial file was removed")
        return DownloadError(
            f"{self.shown} sent more than the --max-size of {human_size(self.cap or 0)} "
            "without announcing its size; refused and the partial file was removed (raise "
            "--max-size if you expect a file this big)")

    def _stream(self, resp: requests.Response) -> None:
        raw = resp.raw
        read = raw.read1 if hasattr(raw, "read1") else raw.read
        start, cap, clock = self.offset, self.cap, self.clock
        hashing = BackgroundHash(self.hasher)
        fh = None
        try:
            fh = _open_part(self.part)
            write, feed = fh.write, hashing.feed
            while True:
                try:
                    chunk = read(CHUNK, decode_content=True)
                except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
                    raise _Transient(clock.check() or (
                        f"timed out: no data for {self.limits.timeout:g} s "
                        f"(at byte {self.offset})")) from exc
                except (urllib3.exceptions.HTTPError, requests.RequestException,
                        OSError) as exc:
                    raise _Transient(clock.check() or (
                        f"connection dropped at byte {self.offset}: {_why(exc)}")) from exc
                if not chunk:
                    break
                write(chunk)
                feed(chunk)
                self.offset += len(chunk)
                clock.offset = self.offset
                if cap is not None and self.offset > cap:
                    raise self._over_cap()
                if clock.reason is not None:
                    raise _Transient(clock.reason)
                if self.bar.bar is not None:
                    self.bar.update(self.offset)
            fh.flush()
        except OSError as exc:  # reads are handled above: this is the disk
            raise self.disk_error(exc) from None
        finally:
            if fh is not None:
                with contextlib.suppress(OSError):
                    fh.close()
            hashing.finish()  # the digest now covers exactly the bytes written
            self.transferred += self.offset - start
        reason = clock.stop()
        if reason is not None:  # the watchdog cut the socket: that EOF was not the end
            raise _Transient(reason)
        if self.total is not None and self.offset < self.total:
            raise _Transient(f"connection closed at byte {self.offset} of {self.total}")


def download(
    url: str,
    part: Path,
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    size_exact: bool = True,
    allow_http: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = 0.5,
    progress: str = "auto",
    label: str | None = None,
    log: Log | None = None,
    deadline: float | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
    min_rate: float = DEFAULT_MIN_RATE,
    home_hint: str = "",
) -> DownloadResult:
    """Download ``url`` into ``part`` (resuming what is there) and verify it.

    ``expected_sha256`` is a full hash or a prefix (8 hex). ``timeout`` is the stall window:
    an attempt that gets less than ``min_rate`` bytes/s over it (or nothing) is retried, at
    most ``retries`` times, all within ``deadline`` seconds (None: no deadline).
    ``max_size`` caps a download with no ``expected_size`` (None: no cap). ``progress`` is
    ``"auto"`` (a bar when stderr is a terminal), ``"always"`` or ``"never"``; ``log``
    receives retry notes; ``home_hint`` ends disk-error messages (how to move the folder).
    Raises DownloadError (final HTTP status, refused URL, redirect or size, full or read-only
    disk, retries or deadline exhausted: the ``.part`` file is kept for a later resume unless
    the disk was full) or HashMismatchError (``.part`` deleted).
    """
    check_url_allowed(url, allow_http)
    shown = redact_url(url)
    note = log or (lambda m: print(f"zoo: {m}", file=sys.stderr) if progress != "never" else None)
    clock = Clock(timeout, min_rate, deadline)
    limits = _Limits(timeout, allow_http, size_limit(expected_size, size_exact), max_size,
                     home_hint)
    bar = _Progress(progress, label or urlsplit(url).path.rsplit("/", 1)[-1] or shown,
                    expected_size, 0)
    xfer = _Transfer(url, part, limits, clock, bar, note)
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        resumed_from = xfer.adopt_partial()
        xfer.check_space(expected_size)
        with watching(clock):
            attempts = _attempts(xfer, clock, expected_sha256, expected_size, size_exact,
                                 retries, backoff, resumed_from)
    except OSError as exc:
        raise xfer.disk_error(exc) from None
    finally:
        bar.close()
    digest = xfer.hasher.hexdigest()
    if not hash_matches(digest, expected_sha256):
        xfer.discard()
        kind = "sha256" if expected_sha256 and len(expected_sha256) == 64 else "sha256 prefix"
        raise HashMismatchError(
            f"{kind} mismatch for {shown}: expected {expected_sha256}, got {digest}; "
            "the download was deleted"
        )
    if expected_size is not None and size_exact and xfer.offset != expected_size:
        xfer.discard()
        raise HashMismatchError(
            f"size mismatch for {shown}: expected {expected_size} bytes, got {xfer.offset}; "
            "the download was deleted"
        )
    with contextlib.suppress(OSError):
        xfer.meta_path.unlink(missing_ok=True)
    return DownloadResult(part, digest, xfer.offset, xfer.transferred, attempts, resumed_from)


def _attempts(xfer: _Transfer, clock: Clock, expected_sha256: str | None,
              expected_size: int | None, size_exact: bool, retries: int, backoff: float,
              resumed_from: int) -> int:
    """Run attempts until the body is complete; the number of attempts made."""
    attempts = failures = restarts = 0
    restarted = False
    while True:
        if xfer.offset and size_exact and expected_size == xfer.offset and \
                hash_matches(xfer.hasher.hexdigest(), expected_sha256):
            return attempts  # a previous run got every byte but died before the rename
        if clock.expired():
            raise _gave_up(xfer, clock, f"the --deadline of {secs(clock.deadline)} s is over",
                           attempts)
        attempts += 1
        clock.arm(xfer.offset)
        try:
            with new_session() as session:
                xfer.attempt(session)
        except _Again as exc:
            restarts += 1
            if restarts > 3:
                raise DownloadError(
                    f"cannot download {xfer.shown}: the server keeps answering the Range "
                    "request inconsistently"
                ) from exc
            continue
        except _Transient as exc:
            failures += 1
            if failures > retries or clock.expired():
                raise _gave_up(xfer, clock, str(exc), attempts) from exc
            delay = min(BACKOFF_CAP, backoff * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
            if exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, BACKOFF_CAP))
            left = clock.remaining()
            if left is not None:
                delay = max(0.0, min(delay, left))
            xfer.log(f"{xfer.shown}: {exc}; retry {failures}/{retries} in {delay:.1f} s")
            time.sleep(delay)
            continue
        finally:
            clock.stop()
            clock.release()
        if not hash_matches(xfer.hasher.hexdigest(), expected_sha256) and resumed_from and \
                not restarted:
            xfer.log(f"{xfer.shown}: resumed file does not verify; downloading it again from "
                     "zero")
            restarted = True
            xfer.reset()
            continue
        return attempts


def _gave_up(xfer: _Transfer, clock: Clock, reason: str, attempts: int) -> DownloadError:
    if clock.expired() and "--deadline" not in reason:
        reason += f"; the --deadline of {secs(clock.deadline)} s is over"
    kept = f"; {xfer.offset} bytes kept to resume" if xfer.offset else ""
    return DownloadError(
        f"cannot download {xfer.shown}: {reason} (gave up after "
        f"{counted(attempts, 'attempt')}{kept})"
    )


def download_file(url: str, dest: Path, **kwargs: Any) -> DownloadResult:
    """:func:`download` into ``dest`` via ``dest.part`` and an atomic rename."""
    part = dest.with_name(dest.name + ".part")
    result = download(url, part, **kwargs)
    os.replace(part, dest)
    return DownloadResult(dest, result.sha256, result.size, result.transferred,
                          result.attempts, result.resumed_from)
