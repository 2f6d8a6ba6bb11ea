"""A real HTTP server on 127.0.0.1 for tests and benchmarks, with fault injection and counters.

    url = server.serve("/w.pth", data_or_path, drop_after=1000)   # faults are keywords
    ... fetch url ...
    assert server.stats("/w.pth").full_downloads == 1

Weights to serve: :func:`state_dict_bytes` (a real built-in model's state dict, random init)
and :func:`card_with_weights` / :func:`write_registry` (a card whose weights point at it).

Ranges are honoured (206 + Content-Range, If-Range against the ETag) unless
``ignore_range=True``. Each response counts bytes as they go out, so a test can watch a
transfer in flight. ``python -m tests.support.httpserver FILE [--route /x]`` serves one file in the
foreground (benchmarks run it in a separate process) and prints its URL.

Fault modes (keywords of :meth:`HTTPTestServer.serve`, see :class:`Faults`): ``status``,
``fail_first`` (HTTP errors); ``drop_after`` (cut the connection); ``slow``/``rate`` (pacing);
``stall_after`` (send N body bytes, then nothing while the client waits: 0 is "headers then
nothing"); ``trickle`` (N bytes/s in 1-byte writes); ``slow_headers`` (the status line and
headers at N bytes/s); ``endless`` (a body that never ends, no Content-Length);
``corrupt``, ``content_length``, ``ignore_range``; and redirects via
:meth:`HTTPTestServer.redirect` (a Location, relative or absolute; chain them).

Disk faults live on the client's side: :func:`tmpfs` mounts a real size-limited file system
(root only; the test is skipped, with the reason, where mounting is refused), :func:`readonly`
mounts a read-only view, and :func:`simulate_full_disk` is the honest fallback: a SIMULATED
full disk, failing zoo's ``.part`` writes with ENOSPC after a byte budget.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import hashlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml


@dataclass(frozen=True)
class Faults:
    """What goes wrong on a path. ``*_times`` count responses; None means every response."""

    status: int | None = None  # always answer this status, e.g. 404
    fail_first: tuple[int, ...] = ()  # statuses of the first requests, e.g. (503, 503)
    retry_after: int | None = None  # Retry-After header on failures
    drop_after: int | None = None  # close the connection after this many body bytes...
    drop_times: int | None = 1  # ...in this many responses
    slow: float = 0.0  # sleep this long after each chunk...
    slow_times: int | None = None  # ...in this many responses
    corrupt: bool = False  # flip one byte in the middle of the body (same length)
    ignore_range: bool = False  # answer Range requests with 200 and the whole body
    content_length: int | None = None  # announce this Content-Length instead of the truth
    chunk: int = 64 * 1024  # body is written in chunks of this size
    zero_copy: bool = True  # files go out with os.sendfile when no fault needs the bytes
    rate: float | None = None  # pace the body at this many bytes per second (a network link)
    stall_after: int | None = None  # send this many body bytes, then nothing (0: headers only)
    trickle: float | None = None  # send the body at this many bytes/s, one byte per write
    slow_headers: float | None = None  # send the status line and headers at this many bytes/s
    endless: bool = False  # a body that never ends (repeats the content; no Content-Length)
    redirect: str | None = None  # answer redirect_status with this Location
    redirect_status: int = 302


@dataclass
class Stats:
    """Counters for one path."""

    requests: int = 0
    range_requests: int = 0  # answered 206
    full_downloads: int = 0  # 200 answers whose whole body was sent
    bytes_sent: int = 0  # body bytes written to sockets
    active: int = 0  # responses still sending a body
    statuses: list[int] = field(default_factory=list)


@dataclass
class _Entry:
    data: bytes | None
    file: Path | None
    size: int
    etag: str
    faults: Faults
    stats: Stats = field(default_factory=Stats)
    failed: int = 0
    dropped: int = 0
    slowed: int = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError):  # a client that hangs up is not news
            self.close_connection = True

    def flush_headers(self) -> None:
        rate = getattr(self, "_slow_headers", None)
        buffered = getattr(self, "_headers_buffer", None)
        if not rate or not buffered:
            super().flush_headers()
            return
        data = b"".join(buffered)
        self._headers_buffer = []
        for i in range(len(data)):
            if self.server.owner.closing.is_set():
                raise ConnectionAbortedError("server closing")
            self.wfile.write(data[i:i + 1])
            time.sleep(1 / rate)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def do_GET(self) -> None:
        self._respond(head=False)

    def _status_only(self, status: int, entry: _Entry | None, extra: dict[str, str]) -> None:
        body = f"{status}\n".encode()
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if entry is not None:
            with self.server.owner.lock:
                entry.stats.statuses.append(status)

    def _respond(self, head: bool) -> None:
        try:
            self._answer(head)
        except (ConnectionError, OSError):  # the client went away: that is its business
            self.close_connection = True

    def _answer(self, head: bool) -> None:
        self._slow_headers = None
        path = self.path.split("?", 1)[0]
        owner = self.server.owner
        entry = owner.entries.get(path)
        if entry is None:
            self._status_only(404, None, {})
            return
        f = entry.faults
        with owner.lock:
            entry.stats.requests += 1
            fail = f.status
            if fail is None and entry.failed < len(f.fail_first):
                fail = f.fail_first[entry.failed]
                entry.failed += 1
        self._slow_headers = f.slow_headers
        if fail is not None:
            extra = {"Retry-After": str(f.retry_after)} if f.retry_after is not None else {}
            self._status_only(fail, entry, extra)
            return
        if f.redirect is not None:
            self._status_only(f.redirect_status, entry, {"Location": f.redirect})
            return
        if f.endless:
            self._endless(entry, head)
            return
        start, status = self._range(entry)
        if status == 416:
            self._status_only(416, entry, {"Content-Range": f"bytes */{entry.size}"})
            return
        count = entry.size - start
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", entry.etag)
        if not f.ignore_range:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{entry.size - 1}/{entry.size}")
        length = f.content_length if f.content_length is not None else count
        self.send_header("Content-Length", str(length))
        self.end_headers()
        with owner.lock:
            entry.stats.statuses.append(status)
            if status == 206:
                entry.stats.range_requests += 1
        if head:
            return
        stats = entry.stats
        with owner.lock:
            stats.active += 1
        try:
            complete = self._body(entry, start, count)
        finally:
            with owner.lock:
                stats.active -= 1
        if complete and status == 200:
            with owner.lock:
                entry.stats.full_downloads += 1

    def _range(self, entry: _Entry) -> tuple[int, int]:
        header = self.headers.get("Range", "")
        if entry.faults.ignore_range or not header.startswith("bytes="):
            return 0, 200
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range != entry.etag:
            return 0, 200
        first = header[6:].split(",")[0].split("-")[0].strip()
        if not first.isdigit():
            return 0, 200
        start = int(first)
        return (start, 206) if start < entry.size else (start, 416)

    def _body(self, entry: _Entry, start: int, count: int) -> bool:
        """Send the body with the path's faults; True when every byte went out."""
        owner, f = self.server.owner, entry.faults
        with owner.lock:
            drop = f.drop_after is not None and (
                f.drop_times is None or entry.dropped < f.drop_times)
            slow = f.slow > 0 and (f.slow_times is None or entry.slowed < f.slow_times)
            entry.dropped += drop
            entry.slowed += slow
        paced = f.rate or f.trickle
        plain = f.zero_copy and not (drop or slow or f.corrupt or paced or
                                     f.stall_after is not None) and entry.file is not None
        if plain:  # zero-copy path for benchmarks
            return self._sendfile(entry, start, count)
        limit = min(count, f.drop_after) if drop and f.drop_after is not None else count
        if f.stall_after is not None:
            limit = min(limit, f.stall_after)
        chunk_size = 1 if f.trickle else f.chunk
        rate = f.trickle or f.rate
        flip = entry.size // 2
        sent = 0
        began = time.monotonic()
        with _Reader(entry) as read:
            while sent < limit:
                if owner.closing.is_set():
                    return False
                n = min(chunk_size, limit - sent)
                chunk = read(start + sent, n)
                pos = start + sent
                if f.corrupt and pos <= flip < pos + n:
                    mutable = bytearray(chunk)
                    mutable[flip - pos] ^= 0xFF
                    chunk = bytes(mutable)
                try:
                    self.wfile.write(chunk)
                except OSError:
                    self.close_connection = True
                    return False
                sent += n
                with owner.lock:
                    entry.stats.bytes_sent += n
                if slow:
                    time.sleep(f.slow)
                if rate:
                    time.sleep(max(0.0, began + sent / rate - time.monotonic()))
        if f.stall_after is not None and sent < count:
            self._hold()
            self.close_connection = True
            return False
        if sent < count:
            self.close_connection = True
            _abort(self.connection)
            return False
        return True

    def _hold(self) -> None:
        """Send nothing, keeping the connection open until the client leaves (or the
        server closes)."""
        conn = self.connection
        while not self.server.owner.closing.is_set():
            readable, _, _ = select.select([conn], [], [], 0.05)
            if readable:
                try:
                    if not conn.recv(1, socket.MSG_PEEK):
                        return  # the client closed or shut down its side
                except OSError:
                    return
                return

    def _endless(self, entry: _Entry, head: bool) -> None:
        """200 with no Content-Length (unless the faults announce one) and a body that
        repeats the content until the client leaves."""
        f = entry.faults
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if f.content_length is not None:
            self.send_header("Content-Length", str(f.content_length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        with self.server.owner.lock:
            entry.stats.statuses.append(200)
        if head:
            return
        block = (entry.data if entry.data is not None else b"x") or b"x"
        block = (block * (1 + (64 << 10) // len(block)))[: 64 << 10]
        began, sent = time.monotonic(), 0
        with self.server.owner.lock:
            entry.stats.active += 1
        try:
            while not self.server.owner.closing.is_set():
                self.wfile.write(block)
                sent += len(block)
                with self.server.owner.lock:
                    entry.stats.bytes_sent += len(block)
                if f.rate:
                    time.sleep(max(0.0, began + sent / f.rate - time.monotonic()))
        finally:
            with self.server.owner.lock:
                entry.stats.active -= 1

    def _sendfile(self, entry: _Entry, start: int, count: int) -> bool:
        assert entry.file is not None
        self.wfile.flush()
        step = 8 << 20
        with open(entry.file, "rb") as fh:
            offset, end = start, start + count
            while offset < end:
                try:
                    n = os.sendfile(self.connection.fileno(), fh.fileno(), offset,
                                    min(step, end - offset))
                except OSError:
                    self.close_connection = True
                    return False
                if n == 0:
                    break
                offset += n
                with self.server.owner.lock:
                    entry.stats.bytes_sent += n
        return offset == end


class _Reader:
    """``read(offset, n)`` over bytes or a file, as a context manager."""

    def __init__(self, entry: _Entry) -> None:
        self.entry = entry
        self.fh = None

    def __enter__(self):
        if self.entry.data is not None:
            view = memoryview(self.entry.data)
            return lambda off, n: view[off:off + n]
        assert self.entry.file is not None
        self.fh = open(self.entry.file, "rb")

        def read(off: int, n: int) -> bytes:
            assert self.fh is not None
            self.fh.seek(off)
            return self.fh.read(n)

        return read

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.close()


def _abort(sock: socket.socket) -> None:
    """Close the connection abruptly, the way a dropped network link looks to the client."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: HTTPTestServer


class HTTPTestServer:
    """A ThreadingHTTPServer on 127.0.0.1 (random port) serving registered paths."""

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        """The full URL of ``path``."""
        return self.base_url + path

    def start(self) -> HTTPTestServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port (stalled and endless responses end too)."""
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()

    def serve(self, path: str, content: bytes | Path, **faults: object) -> str:
        """Serve ``content`` (bytes, or a file streamed from disk) at ``path``; returns the URL."""
        if isinstance(content, Path):
            size = content.stat().st_size
            etag = f'"{size:x}-{content.stat().st_mtime_ns:x}"'
            entry = _Entry(None, content, size, etag, Faults(**faults))  # type: ignore[arg-type]
        else:
            etag = f'"{hashlib.sha256(content).hexdigest()[:16]}"'
            entry = _Entry(bytes(content), None, len(content), etag, Faults(**faults))  # type: ignore[arg-type]
        with self.lock:
            self.entries[path] = entry
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer ``path`` with ``status`` and ``Location: location`` (made safe to send as a
        header: latin-1, no line breaks); returns the URL of ``path``."""
        safe = location.encode("latin-1", "replace").decode("latin-1")
        safe = safe.replace("\r", "").replace("\n", "")
        return self.serve(path, b"", redirect=safe, redirect_status=status)

    def set_faults(self, path: str, **faults: object) -> None:
        """Replace the faults of ``path`` (counters of earlier faults restart)."""
        with self.lock:
            entry = self.entries[path]
            entry.faults = Faults(**faults)  # type: ignore[arg-type]
            entry.failed = entry.dropped = entry.slowed = 0

    def stats(self, path: str) -> Stats:
        """A snapshot of ``path``'s counters."""
        with self.lock:
            s = self.entries[path].stats
            return replace(s, statuses=list(s.statuses))

    def reset_stats(self, path: str, timeout: float = 10.0) -> None:
        """Zero ``path``'s counters once no response is still sending (a client killed
        mid-body leaves its handler writing until the socket error arrives)."""
        deadline = time.monotonic() + timeout
        while self.stats(path).active and time.monotonic() < deadline:
            time.sleep(0.01)
        with self.lock:
            self.entries[path].stats = Stats()


@pytest.fixture
def http_server() -> Iterator[HTTPTestServer]:
    """A running :class:`HTTPTestServer`, closed after the test."""
    server = HTTPTestServer().start()
    try:
        yield server
    finally:
        server.close()


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(cmd, 1, "", str(exc))


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m", *, read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``path`` (a small disk that really fills up).

    Needs root (or CAP_SYS_ADMIN); where mounting is refused the calling test is skipped with
    the reason (the SIMULATED disk-full tests cover such machines).
    """
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")  # 1777 is shared
    proc = _run("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path))
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount refused'}); "
                    "the SIMULATED disk-full tests cover this machine")
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


@contextlib.contextmanager
def readonly(source: Path, view: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``view``: a read-only bind mount as root, file modes
    (``a-w``) otherwise (root ignores modes, so it needs the mount). Skips with the reason
    when neither can work here."""
    view.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        bind = _run("mount", "--bind", str(source), str(view))
        if bind.returncode != 0:
            pytest.skip(f"cannot bind-mount here ({bind.stderr.strip()}) and root ignores "
                        "file modes: no read-only folder to test with")
        ro = _run("mount", "-o", "remount,bind,ro", str(view))
        if ro.returncode != 0:
            _run("umount", "-l", str(view))
            pytest.skip(f"cannot remount read-only here ({ro.stderr.strip()})")
        try:
            yield view
        finally:
            _run("umount", "-l", str(view))
        return
    view.rmdir()
    os.symlink(source, view)
    modes = {p: p.stat().st_mode for p in [source, *source.rglob("*")] if not p.is_symlink()}
    for p, mode in modes.items():
        p.chmod(mode & ~0o222)
    try:
        yield view
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


class _CappedFile:
    """A file whose writes fail with ENOSPC once a shared byte budget is spent (SIMULATED)."""

    def __init__(self, fh: Any, budget: list[int], path: Path, error: int) -> None:
        self.fh, self.budget, self.path, self.error = fh, budget, path, error

    def write(self, data: bytes) -> int:
        room = self.budget[0]
        if len(data) > room:
            if room:
                self.fh.write(data[:room])
                self.fh.flush()
            self.budget[0] = 0
            raise OSError(self.error, os.strerror(self.error), str(self.path))
        self.budget[0] -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


def simulate_full_disk(monkeypatch: pytest.MonkeyPatch, capacity: int,
                       error: int = errno.ENOSPC) -> None:
    """SIMULATED disk-full (not a real file system): zoo's ``.part`` writes (the one write
    seam, ``zoo.weights.download._open_part``) fail with ``error`` (ENOSPC; EDQUOT for a quota,
    EFBIG for a file-size limit) after ``capacity`` bytes in all."""
    import zoo.weights.download

    real = zoo.weights.download._open_part
    budget = [capacity]
    monkeypatch.setattr(zoo.weights.download, "_open_part",
                        lambda path: _CappedFile(real(path), budget, path, error))


@functools.lru_cache(maxsize=8)
def state_dict_bytes(model: str, aux: bool = False, seed: int = 0) -> bytes:
    """``torch.save`` bytes of built-in ``model``'s state dict (random init, seeded)."""
    import io

    import torch

    from zoo.catalog.registry import Registry

    registry = Registry()
    card = registry.get(model)
    torch.manual_seed(seed)
    net = registry.builder(card)(card, aux=aux)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getvalue()


def card_with_weights(base: str, name: str, url: str | list[str], data: bytes | None = None,
                      **source: Any) -> Any:
    """A copy of built-in card ``base`` called ``name`` whose only (default) weights are
    ``url``; sha256 and size come from ``data`` unless given in ``source``."""
    from zoo.catalog.registry import Registry
    from zoo.catalog.schema import WeightsSource

    fields: dict[str, Any] = {"name": "test_v1", "urls": [url] if isinstance(url, str) else url,
                              "trained_on": "random init (tests)"}
    if data is not None:
        fields["size"] = len(data)
        if "sha256_prefix" not in source:
            fields["sha256"] = hashlib.sha256(data).hexdigest()
    fields.update(source)
    card = Registry().get(base)
    return card.model_copy(update={
        "name": name, "plugin": None, "default_weights": fields["name"],
        "weights": [WeightsSource(**fields)],
    })


def write_registry(path: Path, *cards: Any) -> Path:
    """Write ``cards`` as a registry YAML file (for ``--registry`` / ``ZOO_REGISTRY``)."""
    docs = [c.model_dump(mode="json", exclude={"plugin"}) for c in cards]
    path.write_text(yaml.safe_dump({"version": 1, "models": docs}, sort_keys=False),
                    encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """Serve one file until killed; print its URL on the first line of stdout."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--route", default=None, help="URL path (default: /FILENAME)")
    parser.add_argument("--chunked", type=int, default=0, metavar="BYTES",
                        help="write the body from Python in chunks of BYTES (like http.server) "
                        "instead of os.sendfile")
    parser.add_argument("--rate-mb", type=float, default=0, metavar="MB_PER_S",
                        help="pace the body like a network link of this many MB/s")
    args = parser.parse_args(argv)
    server = HTTPTestServer()
    faults: dict[str, Any] = {"zero_copy": False, "chunk": args.chunked} if args.chunked else {}
    if args.rate_mb:
        faults.update(rate=args.rate_mb * 1e6, chunk=args.chunked or 1 << 20)
    url = server.serve(args.route or f"/{args.file.name}", args.file, **faults)
    print(url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
