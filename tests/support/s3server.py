"""A real S3 API on 127.0.0.1 for the store tests: moto's ThreadedMotoServer, plus a small
fault-injecting HTTP proxy in front of it (503 / SlowDown, delays, request counts), and the
store tests' other fixtures (a real export folder, keys made by openssl). Loaded for every
test module through ``pytest_plugins`` in tests/conftest.py.

    def test_x(s3_store):            # a fresh bucket on the session's moto server
        store = open_store(s3_store.url, s3_store.options)

The proxy forwards every request unchanged to moto (real HTTP both ways), except that it can
answer the next N requests with a status of its choice, or sleep before answering::

    with fault_proxy(s3_server) as proxy:
        proxy.fail_next(3, 503)          # the next 3 requests get 503 SlowDown
        proxy.delay = 2.0                # every request waits 2 s

``python -m tests.support.s3server`` runs a moto server in the foreground and prints its endpoint
(benchmarks use it in a separate process, so the client and the server do not share a GIL).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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
        s3fs.S3FileSystem(**self.options()).mkdir(name)
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


@pytest.fixture(scope="session", name="s3_server")
def fixture_s3_server() -> Iterator[S3Server]:
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


@pytest.fixture(name="s3_store")
def fixture_s3_store(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Store:
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
        self.rules: list[list[Any]] = []  # [compiled pattern, status, remaining or None]
        self.delay = 0.0
        self.requests = 0
        self.failed = 0
        self.log: list[tuple[str, str]] = []  # (method, path?query) of each request
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

    def fail_when(self, pattern: str, status: int = 503, times: int | None = None) -> None:
        """Answer requests whose ``METHOD path?query`` matches ``pattern`` (re.search) with
        ``status``, ``times`` times (None: always)."""
        with self.lock:
            self.rules.append([re.compile(pattern), status, times])

    def count(self, pattern: str) -> int:
        """How many requests so far matched ``pattern`` (on ``METHOD path?query``)."""
        rx = re.compile(pattern)
        with self.lock:
            return sum(1 for method, path in self.log if rx.search(f"{method} {path}"))

    def _fault(self, method: str, path: str) -> int | None:
        if self.failures:
            return self.failures.pop(0)
        for rule in self.rules:
            if rule[0].search(f"{method} {path}") and rule[2] != 0:
                if rule[2] is not None:
                    rule[2] -= 1
                return int(rule[1])
        return None

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        with self.lock:
            self.requests += 1
            self.log.append((req.command, req.path))
            status = self._fault(req.command, req.path)
        if self.delay:
            time.sleep(self.delay)
        if status is not None:
            with self.lock:
                self.failed += 1
            code = {503: "SlowDown", 403: "AccessDenied", 404: "NoSuchKey"}.get(
                status, "InternalError")
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


# -- store test fixtures: a real export folder and keys made by the openssl CLI ---------------

@pytest.fixture(scope="session", name="export_dir")
def fixture_export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real export folder: `zoo fetch single_conv --weights none --format torchscript -o DIR`
    (artifact, manifest, operators list, SHA256SUMS), made with ZOO_HOME ``DIR/../home`` (whose
    export cache then holds it). Tests copy it before changing it."""
    base = tmp_path_factory.mktemp("export")
    out, home = base / "models", base / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    env["ZOO_HOME"] = str(home)
    proc = subprocess.run([sys.executable, "-m", "zoo", "fetch", "single_conv", "--weights",
                           "none", "--format", "torchscript", "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(name="built_here")
def fixture_built_here(export_dir: Path, zoo_home: Path) -> Path:
    """Make this test's ZOO_HOME the machine that built ``export_dir``: its export cache (with
    provenance ``built``) is copied in, so ``--sign`` may sign those bytes here."""
    shutil.copytree(export_dir.parent / "home" / "artifacts", zoo_home / "artifacts",
                    dirs_exist_ok=True)
    return zoo_home


@dataclass(frozen=True)
class Keys:
    """PEM files written by openssl: ``team``/``team_pub``, ``other``/``other_pub`` (Ed25519),
    ``rsa`` (an RSA private key), ``locked`` (Ed25519 encrypted with passphrase 'hunter2')."""

    team: Path
    team_pub: Path
    other: Path
    other_pub: Path
    rsa: Path
    locked: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session", name="keys")
def fixture_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make test keys")
    d = tmp_path_factory.mktemp("keys")
    for name in ("team", "other"):
        _openssl("genpkey", "-algorithm", "ed25519", "-out", str(d / f"{name}.key"))
        _openssl("pkey", "-in", str(d / f"{name}.key"), "-pubout", "-out", str(d / f"{name}.pub"))
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out",
             str(d / "rsa.key"))
    _openssl("genpkey", "-algorithm", "ed25519", "-aes256", "-pass", "pass:hunter2", "-out",
             str(d / "locked.key"))
    return Keys(d / "team.key", d / "team.pub", d / "other.key", d / "other.pub",
                d / "rsa.key", d / "locked.key")

