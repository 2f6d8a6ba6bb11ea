"""resolve_weights: every kind of spec, the cache, mirrors, offline mode and the ways out."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.httpserver import HTTPTestServer, card_with_weights, readonly, state_dict_bytes
from zoo.catalog.registry import default_registry
from zoo.catalog.schema import ModelCard
from zoo.errors import DownloadError, HashMismatchError, UsageError
from zoo.weights.cache import WeightsCache
from zoo.weights.resolve import ResolvedWeights, apply_mirror, env_offline, resolve_weights

WEIGHTS = state_dict_bytes("single_conv")
SHA = hashlib.sha256(WEIGHTS).hexdigest()


def quick(card: ModelCard, spec: str | None = None, **kw: Any) -> ResolvedWeights:
    """resolve_weights without progress output."""
    return resolve_weights(card, spec, progress="never", **kw)


def closed_port_url(path: str) -> str:
    """A loopback URL nobody listens on: 'no network', without touching the network."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def test_card_weights_download_once_then_hit(http_server: HTTPTestServer) -> None:
    url = http_server.serve("/w.pth", WEIGHTS)
    card = card_with_weights("single_conv", "tiny", url, WEIGHTS)
    first = quick(card)
    assert first.path is not None and first.path.read_bytes() == WEIGHTS
    assert (first.sha256, first.url, first.untrained) == (SHA, url, False)
    assert first.source == f"test_v1 ({url})"
    assert first.path == WeightsCache().blob_path(SHA)
    start = time.perf_counter()
    second = quick(card)
    elapsed = time.perf_counter() - start
    assert second == first
    assert http_server.stats("/w.pth").requests == 1  # the hit cost no network
    assert elapsed < 0.05


def test_prefix_pinned_weights_hit_by_prefix_offline(http_server: HTTPTestServer) -> None:
    url = http_server.serve("/w.pth", WEIGHTS)
    card = card_with_weights("single_conv", "tiny", url, WEIGHTS, sha256_prefix=SHA[:8],
                             size_exact=False)
    assert quick(card).sha256 == SHA  # full hash known after download
    assert quick(card, offline=True).sha256 == SHA
    assert http_server.stats("/w.pth").requests == 1


def test_offline_miss_fails_fast_with_the_ways_out(http_server: HTTPTestServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url = http_server.serve("/w.pth", WEIGHTS)
    card = card_with_weights("single_conv", "tiny", url, WEIGHTS)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline") as info:
        quick(card)
    assert "--weights none" in str(info.value) and "--weights PATH" in str(info.value)
    assert http_server.stats("/w.pth").requests == 0


def test_mirror_keeps_the_path_and_the_card_url(http_server: HTTPTestServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    http_server.serve("/models/tiny-abc.pth", WEIGHTS)
    canonical = "https://weights.example.invalid/models/tiny-abc.pth"
    card = card_with_weights("single_conv", "tiny", canonical, WEIGHTS)
    got = quick(card, mirror=http_server.base_url)
    assert got.sha256 == SHA and got.url == canonical
    assert http_server.stats("/models/tiny-abc.pth").full_downloads == 1
    WeightsCache().clear()
    monkeypatch.setenv("ZOO_MIRROR", http_server.base_url + "/")
    assert quick(card).sha256 == SHA
    assert http_server.stats("/models/tiny-abc.pth").full_downloads == 2


def test_apply_mirror() -> None:
    url = "https://download.pytorch.org/models/x-1234.pth"
    assert apply_mirror(url, "http://127.0.0.1:8000") == "http://127.0.0.1:8000/models/x-1234.pth"
    assert apply_mirror(url, "https://m.corp/pt/") == "https://m.corp/pt/models/x-1234.pth"
    assert apply_mirror(url, None) == url
    with pytest.raises(UsageError, match="mirror"):
        apply_mirror(url, "m.corp")


def test_url_spec_with_and_without_pin(http_server: HTTPTestServer) -> None:
    url = http_server.serve("/w.pth", WEIGHTS)
    card = default_registry().get("single_conv")
    pinned = quick(card, f"{url}#sha256={SHA}")
    assert (pinned.sha256, pinned.source, pinned.url) == (SHA, url, url)
    with pytest.raises(HashMismatchError, match=r"expected 0{64}"):
        quick(card, f"{url}#sha256={'0' * 64}")
    WeightsCache().clear()
    assert quick(card, url).sha256 == SHA  # unpinned: fetched once...
    assert quick(card, url, offline=True).sha256 == SHA  # ...then served by URL from the cache
    assert http_server.stats("/w.pth").full_downloads == 3
    with pytest.raises(UsageError, match="#sha256=HEX"):
        quick(card, f"{url}#md5=abc")


def test_local_file_and_file_url_are_used_in_place(tmp_path: Path) -> None:
    card = default_registry().get("single_conv")
    local = tmp_path / "my weights.pth"
    local.write_bytes(WEIGHTS)
    got = quick(card, str(local))
    assert (got.path, got.sha256, got.url, got.source) == (local, SHA, None, str(local))
    assert quick(card, local.as_uri()).path == local
    assert WeightsCache().list() == []  # not copied into the cache
    with pytest.raises(UsageError, match="no such file"):
        quick(card, str(tmp_path / "missing.pth"))


def test_none_is_untrained() -> None:
    got = quick(default_registry().get("deeplabv3_resnet50"), "none")
    assert got.untrained and got.path is None and got.sha256 is None
    assert got.source == "none (untrained)"


def test_unknown_spec_and_missing_default_are_usage_errors(http_server: HTTPTestServer) -> None:
    url = http_server.serve("/w.pth", WEIGHTS)
    card = card_with_weights("single_conv", "tiny", url, WEIGHTS)
    with pytest.raises(UsageError, match="choose from test_v1, none") as info:
        quick(card, "imagenet")
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match="--weights none"):
        quick(default_registry().get("single_conv"))


def test_no_network_names_the_url_and_the_ways_out() -> None:
    url = closed_port_url("/models/tiny.pth")
    card = card_with_weights("single_conv", "tiny", url, WEIGHTS)
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        quick(card, retries=1, timeout=2.0)
    message = str(info.value)
    assert time.monotonic() - start < 3.0
    assert url in message and "gave up after 2 attempts" in message
    for way_out in ("--mirror", "--weights PATH", "--weights none"):
        assert way_out in message


def test_plain_http_to_another_host_is_refused_before_connecting() -> None:
    card = card_with_weights("single_conv", "tiny", "http://weights.example.invalid/w.pth",
                             WEIGHTS)
    with pytest.raises(DownloadError, match="--allow-http"):
        quick(card)


def test_second_url_is_tried_when_the_first_fails(http_server: HTTPTestServer) -> None:
    good = http_server.serve("/w.pth", WEIGHTS)
    card = card_with_weights("single_conv", "tiny", [closed_port_url("/w.pth"), good], WEIGHTS)
    assert quick(card, retries=0).sha256 == SHA


def test_mismatch_leaves_nothing_in_the_cache(http_server: HTTPTestServer) -> None:
    url = http_server.serve("/w.pth", WEIGHTS, corrupt=True)
    card = card_with_weights("single_conv", "tiny", url, WEIGHTS)
    with pytest.raises(HashMismatchError) as info:
        quick(card)
    assert SHA in str(info.value) and url in str(info.value)
    assert WeightsCache().list() == []
    assert not list((WeightsCache().root / "sha256").glob("*.part"))


def test_card_size_guard(http_server: HTTPTestServer) -> None:
    big = state_dict_bytes("lraspp_mobilenet_v3_large")
    url = http_server.serve("/w.pth", big)
    card = card_with_weights("single_conv", "tiny", url, big, size=100_000, size_exact=False)
    with pytest.raises(DownloadError, match="refusing"):
        quick(card)
    assert http_server.stats("/w.pth").bytes_sent < len(big)


# -- pins on every kind of source ----------------------------------------------------------


def test_a_pin_on_a_local_file_is_checked(tmp_path: Path) -> None:
    card = default_registry().get("single_conv")
    local = tmp_path / "w.pth"
    local.write_bytes(WEIGHTS)
    zeros = "0" * 64
    for spec in (f"{local}#sha256={zeros}", f"{local.as_uri()}#sha256={zeros}",
                 f"{local}#sha256=00000000"):
        with pytest.raises(HashMismatchError, match=f"mismatch for local file {local}") as info:
            quick(card, spec)
        assert info.value.exit_code == 1 and SHA in str(info.value)
    assert local.read_bytes() == WEIGHTS  # the user's file is left alone
    for spec in (f"{local}#sha256={SHA}", f"{local.as_uri()}#sha256={SHA[:8].upper()}"):
        assert quick(card, spec).sha256 == SHA
    with pytest.raises(UsageError, match="#sha256=HEX"):
        quick(card, f"{local}#sha256=xyz")
    with pytest.raises(UsageError, match="#sha256=HEX"):
        quick(card, f"{local.as_uri()}#md5=abc")


# -- environment -----------------------------------------------------------------------------


@pytest.mark.parametrize("value, offline", [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("", False),
])
def test_zoo_offline_spellings(value: str, offline: bool, http_server: HTTPTestServer,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    url = http_server.serve("/w.pth", WEIGHTS)
    card = card_with_weights("single_conv", "tiny", url, WEIGHTS)
    monkeypatch.setenv("ZOO_OFFLINE", value)
    if offline:
        with pytest.raises(DownloadError, match="offline"):
            quick(card)
    else:
        assert quick(card).sha256 == SHA


@pytest.mark.parametrize("value", ["2", "maybe", "y e s", "tru"])
def test_zoo_offline_other_values_are_usage_errors(value: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_OFFLINE", value)
    with pytest.raises(UsageError, match=r"ZOO_OFFLINE=.* is not a yes/no value") as info:
        quick(default_registry().get("single_conv"), "none", offline=None)
        env_offline()
    assert info.value.exit_code == 2


def test_a_bad_mirror_names_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    card = card_with_weights("single_conv", "tiny", "https://h.invalid/w.pth", WEIGHTS)
    monkeypatch.setenv("ZOO_MIRROR", "ftp://mirror")
    with pytest.raises(UsageError, match="ZOO_MIRROR 'ftp://mirror'"):
        quick(card)
    with pytest.raises(UsageError, match=r"--mirror 'mirror\.corp'"):
        quick(card, mirror="mirror.corp")


# -- secrets -------------------------------------------------------------------------------


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() + p.name.encode() for p in root.rglob("*") if p.is_file())


def test_url_secrets_never_reach_records_or_results(http_server: HTTPTestServer,
                                                    zoo_home: Path) -> None:
    http_server.serve("/w.pth", WEIGHTS, drop_after=1000, drop_times=1)
    base = http_server.url("/w.pth").replace("http://", "http://alice:hunter2@")
    url = f"{base}?token=SECRET1&X-Amz-Signature=SECRET2"
    card = default_registry().get("single_conv")
    with pytest.raises(DownloadError) as info:  # leaves a .part and its record behind
        quick(card, url, retries=0)
    assert "hunter2" not in str(info.value) and "SECRET" not in str(info.value)
    assert list((zoo_home / "weights" / "sha256").glob("*.part.json"))
    assert b"hunter2" not in _all_bytes(zoo_home) and b"SECRET" not in _all_bytes(zoo_home)
    got = quick(card, url)
    for text in (got.source, got.url or ""):
        assert "hunter2" not in text and "SECRET" not in text
    assert got.url == f"{http_server.url('/w.pth').replace('http://', 'http://***@')}" \
                      "?token=***&X-Amz-Signature=***"
    assert b"hunter2" not in _all_bytes(zoo_home) and b"SECRET" not in _all_bytes(zoo_home)
    assert quick(card, url, offline=True).sha256 == SHA  # the index still knows the full URL
    other = url.replace("SECRET1", "OTHER")
    with pytest.raises(DownloadError, match="offline"):  # ...and tells tokens apart
        quick(card, other, offline=True)


def test_mirror_credentials_stay_out_of_records(http_server: HTTPTestServer,
                                                zoo_home: Path) -> None:
    http_server.serve("/m/tiny.pth", WEIGHTS)
    card = card_with_weights("single_conv", "tiny", "https://h.invalid/m/tiny.pth", WEIGHTS)
    mirror = http_server.base_url.replace("http://", "http://bob:MIRRORPASS@")
    got = quick(card, mirror=mirror)
    assert got.sha256 == SHA and got.url == "https://h.invalid/m/tiny.pth"
    assert b"MIRRORPASS" not in _all_bytes(zoo_home)


# -- a read-only cache -----------------------------------------------------------------------


def test_a_read_only_zoo_home_serves_hits(http_server: HTTPTestServer, zoo_home: Path,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = http_server.serve("/w.pth", WEIGHTS)
    card = card_with_weights("single_conv", "tiny", url, WEIGHTS)
    local = tmp_path / "mine.pth"
    local.write_bytes(WEIGHTS)
    first = quick(card)
    quick(card, url)
    quick(card, str(local))
    other = card_with_weights("single_conv", "other", url + "?v=2", WEIGHTS + b"more")
    with readonly(zoo_home, tmp_path / "ro-home") as view:
        monkeypatch.setenv("ZOO_HOME", str(view))
        hit = quick(card)
        assert hit.sha256 == SHA and hit.path == view / "weights" / "sha256" / SHA
        assert quick(card, url).sha256 == SHA  # by URL
        assert quick(default_registry().get("single_conv"), str(local)).sha256 == SHA
        hit_again = quick(card_with_weights("single_conv", "tiny2", url, WEIGHTS))  # new ref
        assert hit_again.path == hit.path  # recording the new user is skipped, not fatal
        with pytest.raises(DownloadError, match="read-only file system") as info:
            quick(other)
        assert "ZOO_HOME" in str(info.value)
    assert first.sha256 == SHA and http_server.stats("/w.pth").requests == 1
    assert "internal error" not in capsys.readouterr().err


def test_waiting_for_a_stuck_download_is_bounded_by_the_deadline(
    http_server: HTTPTestServer, zoo_home: Path
) -> None:
    url = http_server.serve("/w.pth", WEIGHTS)
    card = card_with_weights("single_conv", "tiny", url, WEIGHTS)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom zoo.weights.cache import WeightsCache\n"
         f"with WeightsCache().lock({SHA!r}, what='x'):\n print('held', flush=True)\n"
         " time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(DownloadError, match=f"held by pid {holder.pid} on "):
            quick(card, deadline=1.0)
        assert time.monotonic() - start < 2.5
    finally:
        holder.kill()
        holder.wait()
    assert http_server.stats("/w.pth").requests == 0
