"""Property-based tests (hypothesis) for URL handling: ``--weights`` specs, mirrors, redirects,
redaction and ``ZOO_OFFLINE``. Whatever the input, the answer is a result or one of zoo's own
errors (a usage error, exit 2, or a runtime error, exit 1): never an internal error, a
traceback, a secret in a record, or a connection to anything but 127.0.0.1."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.support.httpserver import HTTPTestServer, card_with_weights, write_registry
from zoo.cli.main import main
from zoo.errors import DownloadError, UsageError, ZooError
from zoo.weights.download import download
from zoo.weights.resolve import apply_mirror, env_offline, resolve_weights
from zoo.weights.urls import check_url_allowed, follow_redirect, is_loopback, redact_url

SECRET = "S3CR3T"
DATA = b"weights" * 1000
SHA = hashlib.sha256(DATA).hexdigest()
QUICK = settings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOWER = settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
KNOWN_BAD_SPECS = ["x" * 5000, "~nobody_here/w.pth", "http://[::1", "https://h:99999/w",
                   "file://host/x", "a\x00b", "file:///nope#sha256=" + "0" * 64,
                   "http://u:p@127.0.0.1:1/w?token=S3CR3T#sha256=zz"]

schemes = st.sampled_from(["http", "https", "HTTPS", "file", "ftp", "data", "javascript",
                           "", "h ttp", "http\x00"])
hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "[::1]", "[::1", "::1", "example.invalid",
                     "", "ex ample", "xn--", "\u00fc.invalid", "a" * 300, "127.0.0.1.",
                     "%31%32%37.0.0.1", "0", "[fe80::1%25eth0]"]),
    st.text(max_size=12),
)
ports = st.sampled_from(["", ":0", ":80", ":99999", ":-1", ":abc", ":", ":8080"])
paths = st.text(max_size=24)
queries = st.one_of(st.just(""), st.text(max_size=16).map(lambda q: "?" + q))
fragments = st.one_of(st.just(""), st.sampled_from(["#sha256=" + "0" * 64, "#sha256=abc",
                                                    "#md5=1", "#"]),
                      st.text(max_size=10).map(lambda f: "#" + f))
userinfo = st.sampled_from(["", "u@", "u:p@", ":@", "@"])
built_urls = st.builds(lambda s, u, h, p, path, q, f: f"{s}://{u}{h}{p}/{path}{q}{f}",
                       schemes, userinfo, hosts, ports, paths, queries, fragments)
any_url = st.one_of(built_urls, st.text(max_size=60))


@QUICK
@given(url=any_url, allow_http=st.booleans())
def test_url_checks_answer_with_zoo_errors_only(url: str, allow_http: bool) -> None:
    redact_url(url)
    try:
        check_url_allowed(url, allow_http)
    except DownloadError:
        return
    parts = urlsplit(url)
    assert parts.scheme.lower() in ("http", "https") and parts.hostname
    assert parts.scheme.lower() == "https" or allow_http or is_loopback(parts.hostname)


current_urls = st.builds(lambda s, h, path: f"{s}://{h}/{path}",
                        st.sampled_from(["http", "https", "HTTPS"]),
                        st.sampled_from(["127.0.0.1:8000", "example.invalid", "[::1]"]), paths)


@QUICK
@given(current=current_urls, location=any_url, allow_http=st.booleans())
def test_redirect_rules_hold_for_any_location(current: str, location: str,
                                              allow_http: bool) -> None:
    assume(urlsplit_ok(current))
    try:
        target = follow_redirect(current, location, allow_http)
    except DownloadError:
        return
    check_url_allowed(target, allow_http)  # every hop obeys the first URL's rules
    if urlsplit(current).scheme.lower() == "https":
        assert urlsplit(target).scheme.lower() == "https"


@QUICK
@given(url=any_url, mirror=any_url)
def test_mirrors_answer_with_usage_errors_only(url: str, mirror: str) -> None:
    with contextlib.suppress(UsageError):
        apply_mirror(url, mirror)


def example_each(specs: list[str]):  # type: ignore[no-untyped-def]
    """``@example(spec=...)`` for each of ``specs``: the known hard cases run every time."""
    def wrap(test):  # type: ignore[no-untyped-def]
        for spec in specs:
            test = example(spec=spec)(test)
        return test
    return wrap


safe = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~%", max_size=8)


@QUICK
@given(user=safe, password=safe, host=st.sampled_from(["h.invalid", "127.0.0.1:99", "[::1]"]),
       path=safe, params=st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)),
                                  max_size=4))
def test_redaction_keeps_secrets_out(user: str, password: str, host: str, path: str,
                                     params: list[tuple[str, str]]) -> None:
    assume(SECRET not in user + host + path + "".join(k for k, _ in params))
    query = "&".join(f"{k}={SECRET}{v}" for k, v in params)
    url = f"https://{user}:{SECRET}{password}@{host}/{path}" + (f"?{query}" if query else "")
    shown = redact_url(url)
    assert SECRET not in shown
    assert urlsplit(shown).hostname == urlsplit(url).hostname


@QUICK
@given(value=st.text(max_size=8))
def test_zoo_offline_is_a_bool_or_a_usage_error(value: str) -> None:
    assume("\x00" not in value)
    with _env("ZOO_OFFLINE", value):
        try:
            assert env_offline() in (True, False)
        except UsageError as exc:
            assert "ZOO_OFFLINE" in str(exc) and exc.exit_code == 2


specs = st.one_of(
    any_url,
    st.text(max_size=40),
    st.sampled_from(["~nobody_here/w.pth", "~", ".", "/", "file:", "file://", "file:///",
                     "file://host/x", "file:///nonexistent#sha256=" + "0" * 64, "x" * 5000,
                     "a\x00b", "./none", "none#sha256=1", "#sha256=" + "0" * 64, "http:",
                     "https://", "http://[::1]:99999/w"]),
)


@SLOWER
@given(spec=specs)
@example_each(KNOWN_BAD_SPECS)
def test_weights_specs_answer_with_zoo_errors_only(spec: str) -> None:
    card = card_with_weights("single_conv", "tiny", "https://h.invalid/w.pth", DATA)
    with contextlib.suppress(ZooError):
        got = resolve_weights(card, spec, offline=True, progress="never")
        assert got.untrained or (got.path is not None and got.path.is_file())


@pytest.fixture(scope="module")
def registry_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    card = card_with_weights("single_conv", "tiny_remote", "https://h.invalid/w.pth", DATA)
    return write_registry(tmp_path_factory.mktemp("registry") / "registry.yaml", card)


@SLOWER
@given(spec=specs, mirror=st.one_of(st.none(), any_url), offline=st.sampled_from(
    [None, "1", "0", "2", "yes", ""]))
@example(spec="x" * 5000, mirror=None, offline=None)
@example(spec="~nobody_here/w.pth", mirror=None, offline="0")
@example(spec="none", mirror="http://[::1", offline="0")
@example(spec="test_v1", mirror="http://127.0.0.1:99999", offline="0")
@example(spec="none", mirror=None, offline="2")
def test_the_cli_never_says_internal_error(registry_file: Path, spec: str, mirror: str | None,
                                           offline: str | None) -> None:
    assume("\x00" not in spec and (mirror is None or "\x00" not in mirror))
    args = ["fetch", "tiny_remote", f"--weights={spec}", "--quiet", "--retries=0",
            "--timeout=1", "--deadline=3"]
    if mirror is not None:
        args.append(f"--mirror={mirror}")
    err = io.StringIO()
    with _env("ZOO_OFFLINE", offline if offline is not None else "1"), \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            _loopback_only():
        try:
            code = main(["--registry", str(registry_file), *args])
        except SystemExit as exc:  # argparse
            code = exc.code
    text = err.getvalue()
    assert code in (0, 1, 2), text
    assert "internal error" not in text and "Traceback" not in text, text


@pytest.fixture(scope="module")
def redirect_server() -> Iterator[HTTPTestServer]:
    server = HTTPTestServer().start()
    server.serve("/ok", DATA)
    try:
        yield server
    finally:
        server.close()


locations = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["/ok", "ok", "../ok", "//127.0.0.1/ok", "//localhost/none",
                     "//evil.invalid/x", "file:///etc/passwd", "data:,x", "javascript:1",
                     "ftp://127.0.0.1/ok", "http://[::1", "http://127.0.0.1:99999/",
                     "https://127.0.0.1:1/ok", "/r", "\u00fc/ok", "/ok?token=S3CR3T"]),
)


@SLOWER
@given(location=locations)
def test_any_redirect_ends_in_bytes_or_a_download_error(redirect_server: HTTPTestServer,
                                                        tmp_path_factory: pytest.TempPathFactory,
                                                        location: str) -> None:
    base = redirect_server.url("/r")
    try:
        target = urljoin(base, location.strip())
        host = urlsplit(target).hostname
    except ValueError:
        host = None
    assume(host is None or is_loopback(host) or not target.lower().startswith("https"))
    redirect_server.redirect("/r", location)
    part = tmp_path_factory.mktemp("r") / "w.part"
    start = time.monotonic()
    with _loopback_only():
        try:
            result = download(base, part, timeout=1.0, retries=0, deadline=5.0,
                              progress="never")
        except DownloadError as exc:
            assert SECRET not in str(exc)
        else:
            assert result.sha256 in (SHA, hashlib.sha256(b"404\n").hexdigest()) or \
                result.size < 64  # a redirect status body is short
    assert time.monotonic() - start < 6.0


def urlsplit_ok(url: str) -> bool:
    try:
        urlsplit(url)
    except ValueError:
        return False
    return True


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """A safety net: name lookups for anything but loopback fail (no network in tests)."""
    real = socket.getaddrinfo

    def guarded(host: object, *args: object, **kwargs: object) -> object:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not is_loopback(name):
            raise socket.gaierror(socket.EAI_NONAME, f"test network guard: {name}")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    socket.getaddrinfo = guarded  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = real


