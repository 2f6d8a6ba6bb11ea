"""One DownloadPolicy, built once at the edge and passed whole: the CLI's options, the
Python API's keywords and the defaults all become the same object, and what it says is what
the downloader does (real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from tests.support.httpserver import HTTPTestServer, card_with_weights, state_dict_bytes
from zoo.cli.fetch import policy_from_args
from zoo.cli.main import build_parser
from zoo.errors import DownloadError, UsageError
from zoo.weights.policy import DownloadPolicy
from zoo.weights.resolve import resolve_weights

WEIGHTS = state_dict_bytes("single_conv")


def _parsed(*argv: str) -> DownloadPolicy:
    return policy_from_args(build_parser().parse_args(["fetch", "single_conv", *argv]))


def test_cli_defaults_are_the_policy_defaults() -> None:
    assert _parsed() == DownloadPolicy(offline=False)


def test_every_cli_option_lands_in_the_policy() -> None:
    policy = _parsed("--mirror", "https://m.example", "--offline", "--allow-http",
                     "--timeout", "7", "--min-rate", "10KiB", "--retries", "0",
                     "--deadline", "0", "--max-size", "500MB", "--quiet")
    assert policy == DownloadPolicy(mirror="https://m.example", offline=True, allow_http=True,
                                    timeout=7.0, min_rate=10240, retries=0, deadline=None,
                                    max_size=500_000_000, progress="never")


@pytest.mark.parametrize("field, value", [
    ("timeout", 0), ("timeout", float("nan")), ("min_rate", -1), ("retries", -1),
    ("retries", True), ("deadline", float("inf")), ("max_size", 0), ("progress", "loud"),
])
def test_bad_values_are_usage_errors_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(UsageError, match=field):
        DownloadPolicy(**{field: value})  # type: ignore[arg-type]


def test_keywords_change_single_fields_and_misspellings_are_caught() -> None:
    base = DownloadPolicy(retries=0)
    assert DownloadPolicy.of(base, timeout=5.0) == DownloadPolicy(retries=0, timeout=5.0)
    assert DownloadPolicy.of(None) == DownloadPolicy()
    with pytest.raises(TypeError, match="retrys"):
        DownloadPolicy.of(base, retrys=2)


def test_the_policy_reaches_the_downloader(http_server: HTTPTestServer) -> None:
    """retries=0 gives up after the first 503; retries=1 gets the bytes on the second try:
    the policy object, not a default somewhere below it, decided."""
    url = http_server.serve("/w.pth", WEIGHTS, fail_first=(503,))
    card = card_with_weights("single_conv", "policy_card", url, WEIGHTS)
    strict = DownloadPolicy(retries=0, progress="never")
    with pytest.raises(DownloadError, match="503"):
        resolve_weights(card, None, strict)
    http_server.set_faults("/w.pth", fail_first=(503,))
    got = resolve_weights(card, None, DownloadPolicy.of(strict, retries=1))
    assert got.sha256 == hashlib.sha256(WEIGHTS).hexdigest()


def test_older_keyword_callers_still_work(http_server: HTTPTestServer) -> None:
    url = http_server.serve("/w.pth", WEIGHTS)
    card = card_with_weights("single_conv", "policy_kw", url, WEIGHTS)
    assert resolve_weights(card, None, progress="never", retries=0).path is not None
    with pytest.raises(UsageError, match="progress"):
        resolve_weights(card, None, progress="sometimes")


def test_the_policy_module_is_light() -> None:
    """`zoo --help` builds the fetch parser from the policy's defaults without requests."""
    code = ("import sys, zoo.cli.fetch; "
            "print(any(m in sys.modules for m in ('requests', 'torch', 'zoo.weights.resolve')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
