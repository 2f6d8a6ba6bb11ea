"""A real S3 API on 127.0.0.1 for the store tests: moto's ThreadedMotoServer, plus a small
fault-injecting HTTP proxy in front of it (503 / SlowDown, delays, request counts).

    def test_x(s3_store):            # a fresh bucket on the session's moto server
        store = open_store(s3_store.url, s3_store.options)

The proxy forwards every request unchanged to moto (real HTTP both ways), except that it can
answer the next N requests with a status of its choice, or sleep before answering::

    with fault_proxy(s3_server) as proxy:
        proxy.fail_next(3, 503)          # the next 3 requests get 503 SlowDown
        proxy.delay = 2.0                # every request waits 2 s

``python -m tests.s3server`` runs a moto server in the foreground and prints its endpoint
(benchmarks use it in a separate process, so the client and the server do not share a GIL).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade", "expect"}


@dataclass
class S3Server:
    endpoint: str
    server: Any = None

    def options(self, endpoint: str | None = None) -> dict[str, Any]:
        """fsspec/s3fs options that reach this server with the test credentials."""
        return {"endpoint_url": endpoint or self.endpoint, "key": CREDENTIALS[
            "AWS_ACCESS_KEY_ID"], "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}

    def store_options(self, endpoint: str | None = None) -> list[str]:
        """The same as ``--store-option`` arguments."""
        return [f"--store-option={k}={v}" for k, v in self.options(endpoint).items()]

    def make_bucket(self, name: str | None = None) -> str:
        import s3fs

        name = name or f"zoo-{uuid.uuid4().hex[:12]}"
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.options())
        fs.mkdir(name)
        return name


@dataclass
class S3Store:
    """A fresh bucket: ``url`` (s3://bucket/prefix) and ``options`` for open_store."""

    server: S3Server
    bucket: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)


def start_moto() -> S3Server:
    from moto.server import ThreadedMotoServer

    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return S3Server(f"http://{host}:{port}", server)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the whole test session (starting one costs ~1 s)."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    server = start_moto()
    yield server
    server.server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_store(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    """A fresh, empty bucket on the session's moto server, and a store URL inside it."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.make_bucket()
    return S3Store(s3_server, bucket, f"s3://{bucket}/team", s3_server.options())


class FaultProxy:
    """Forwards HTTP to ``target`` on 127.0.0.1, with faults on demand."""

    def __init__(self, target: str) -> None:
        self.target = target.removeprefix("http://")
        self.lock = threading.Lock()
        self.failures: list[int] = []
        self.delay = 0.0
        self.requests = 0
        self.failed = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                return None

            def _any(self) -> None:
                proxy.handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def fail_next(self, count: int, status: int = 503) -> None:
        with self.lock:
            self.failures += [status] * count

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        with self.lock:
            self.requests += 1
            status = self.failures.pop(0) if self.failures else None
        if self.delay:
            time.sleep(self.delay)
        if status is not None:
            with self.lock:
                self.failed += 1
            code = "SlowDown" if status == 503 else "InternalError"
            payload = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                       f"<Message>injected {status}</Message></Error>").encode()
            req.send_response(status)
            req.send_header("Content-Type", "application/xml")
            req.send_header("Content-Length", str(0 if req.command == "HEAD" else len(payload)))
            req.end_headers()
            if req.command != "HEAD":
                req.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(self.target, timeout=60)
        try:
            headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP}
            conn.request(req.command, req.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            req.send_response(resp.status)
            for key, value in resp.getheaders():
                if key.lower() not in _HOP:
                    req.send_header(key, value)
            req.end_headers()
            if req.command != "HEAD":
                while chunk := resp.read(1 << 20):
                    req.wfile.write(chunk)
        finally:
            conn.close()

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def fault_proxy(server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(server.endpoint) as proxy:
        yield proxy


def main() -> None:
    parser = argparse.ArgumentParser(description="Run moto's S3 server on 127.0.0.1.")
    parser.parse_args()
    server = start_moto()
    print(server.endpoint, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.server.stop()


if __name__ == "__main__":
    main()
