"""The download watchdog: stall and deadline detection over live sockets, and the HTTP
session whose connections it can cut; plus hashing on a second thread.

:class:`Clock` counts bytes per ``window``; a watchdog thread (:func:`watching`) checks it
and shuts down the sockets of a transfer that stalls or runs out of time, so a read that
would block forever returns. Only the connections made by the downloading thread are
watched (urllib3 connection classes below register their sockets with the active clock).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


def secs(value: float | None) -> str:
    """Seconds for messages: a deadline handed down as 2.98451 s left reads as 3."""
    return f"{round(value or 0.0, 1):g}"


class Clock:
    """Stall and deadline detection for one download, across its attempts.

    The streaming loop reports its byte offset; :meth:`check` (run by the loop and by a
    watchdog thread) trips when a ``window``-second span brought fewer than ``need`` bytes
    (none at all, or a trickle below ``min_rate``), or when the deadline passes. Tripping
    shuts down the sockets of the current attempt, so a read blocked in the kernel, on the
    headers or on the body, returns at once.
    """

    def __init__(self, window: float, min_rate: float, deadline: float | None) -> None:
        self.window, self.min_rate, self.deadline = window, min_rate, deadline
        self.need = max(1, int(min_rate * window))
        self.ends = None if deadline is None else time.monotonic() + deadline
        self.offset = 0
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._armed = False
        self._mark_t = 0.0
        self._mark_offset = 0

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.ends is None else self.ends - time.monotonic()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def arm(self, offset: int) -> None:
        """An attempt starts at byte ``offset``; its first window starts now."""
        with self._lock:
            self._armed, self.reason = True, None
            self._mark_t, self._mark_offset, self.offset = time.monotonic(), offset, offset

    def stop(self) -> str | None:
        """The attempt's I/O is over: the reason if the clock tripped before that."""
        with self._lock:
            self._armed = False
            return self.reason

    def release(self) -> None:
        """Close the watched duplicates of the attempt's sockets."""
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()

    def register(self, sock: socket.socket) -> None:
        """Watch a new socket of the current attempt (through a duplicate we own)."""
        try:
            dup = sock.dup()
        except OSError:
            return
        with self._lock:
            self._socks.append(dup)
            tripped = self.reason is not None
        if tripped:
            self._cut()

    def check(self) -> str | None:
        """Trip if the current window is too slow or the deadline passed; the reason, if any."""
        now = time.monotonic()
        with self._lock:
            if not self._armed or self.reason is not None:
                return self.reason
            if self.ends is not None and now >= self.ends:
                self.reason = f"the --deadline of {secs(self.deadline)} s is over"
            elif now - self._mark_t >= self.window:
                got = self.offset - self._mark_offset
                if got >= self.need:
                    self._mark_t, self._mark_offset = now, self.offset
                elif got == 0:
                    self.reason = (f"timed out: no data for {self.window:g} s "
                                   f"(at byte {self.offset})")
                else:
                    self.reason = (f"timed out: only {got} bytes in {self.window:g} s, slower "
                                   f"than --min-rate {self.min_rate:g} B/s (at byte {self.offset})")
            tripped = self.reason is not None
        if tripped:
            self._cut()
        return self.reason

    def _cut(self) -> None:
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


_active = threading.local()  # the Clock of the download running in this thread


def _register(sock: socket.socket) -> None:
    clock = getattr(_active, "clock", None)
    if clock is not None:
        clock.register(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register(sock)
        return sock


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register(sock)  # before TLS: a handshake that trickles is cut too
        return sock


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter whose new sockets are registered with the running download's clock."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is urllib3.ProxyManager:
            manager.pool_classes_by_scheme = _POOLS
        return manager


class _Session(requests.Session):
    """A session that never looks at redirects: we follow them by hand, checking each one.
    (requests would otherwise parse a hostile ``Location`` even with redirects off.)"""

    def resolve_redirects(self, *args: Any, **kwargs: Any) -> Any:
        return iter(())


def location_of(resp: requests.Response) -> str | None:
    """The ``Location`` header as the server meant it (UTF-8 sent as latin-1, like requests)."""
    location = resp.headers.get("Location")
    if location:
        with contextlib.suppress(UnicodeError):
            location = location.encode("latin-1").decode("utf-8")
    return location


def new_session() -> requests.Session:
    session = _Session()
    adapter = _WatchedAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@contextlib.contextmanager
def watching(clock: Clock) -> Any:
    """Run a watchdog thread over ``clock`` and route this thread's new sockets to it."""
    previous = getattr(_active, "clock", None)
    _active.clock = clock
    stop = threading.Event()
    tick = max(0.02, min(0.25, clock.window / 4))

    def run() -> None:
        while not stop.wait(tick):
            clock.check()

    thread = threading.Thread(target=run, name="zoo-download-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        _active.clock = previous


class BackgroundHash:
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
