"""The downloader against a real HTTP server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from tests.support.httpserver import HTTPTestServer, state_dict_bytes
from zoo.errors import DownloadError, HashMismatchError
from zoo.weights.download import check_url_allowed, download, download_file, size_limit

FAST = {"backoff": 0.01, "progress": "never"}


@pytest.fixture(scope="module")
def weights() -> bytes:
    """A real state dict (lraspp_mobilenet_v3_large, ~13 MB)."""
    return state_dict_bytes("lraspp_mobilenet_v3_large")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_streams_and_verifies(http_server: HTTPTestServer, weights: bytes, tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", weights)
    part = tmp_path / "w.part"
    result = download(url, part, expected_sha256=sha(weights), expected_size=len(weights), **FAST)
    assert (result.sha256, result.size, result.attempts) == (sha(weights), len(weights), 1)
    assert part.read_bytes() == weights
    assert not part.with_name("w.part.json").exists()  # resume validators cleaned up
    stats = http_server.stats("/w.pth")
    assert (stats.requests, stats.full_downloads) == (1, 1)


def test_dropped_connection_resumes_with_range(http_server: HTTPTestServer, weights: bytes,
                                               tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", weights, drop_after=3_000_000)
    result = download(url, tmp_path / "w.part", expected_sha256=sha(weights), **FAST)
    stats = http_server.stats("/w.pth")
    assert result.sha256 == sha(weights)
    assert stats.statuses == [200, 206]
    assert stats.bytes_sent == len(weights)  # nothing sent twice
    assert result.attempts == 2


def test_503_then_200(http_server: HTTPTestServer, weights: bytes, tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", weights, fail_first=(503, 503))
    result = download(url, tmp_path / "w.part", expected_sha256=sha(weights), **FAST)
    assert result.attempts == 3
    assert http_server.stats("/w.pth").statuses == [503, 503, 200]


def test_5xx_retries_are_bounded(http_server: HTTPTestServer, tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", b"x" * 100, status=503)
    with pytest.raises(DownloadError, match=r"HTTP 503.*gave up after 3 attempts") as info:
        download(url, tmp_path / "w.part", retries=2, **FAST)
    assert url in str(info.value)
    assert http_server.stats("/w.pth").requests == 3


def test_404_is_not_retried(http_server: HTTPTestServer, tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", b"x", status=404)
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download(url, tmp_path / "w.part", retries=3, **FAST)
    assert url in str(info.value)
    assert http_server.stats("/w.pth").requests == 1


def test_wrong_bytes_are_deleted(http_server: HTTPTestServer, weights: bytes,
                                 tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", weights, corrupt=True)
    part = tmp_path / "w.part"
    with pytest.raises(HashMismatchError) as info:
        download(url, part, expected_sha256=sha(weights), **FAST)
    message = str(info.value)
    assert sha(weights) in message and url in message
    corrupted = bytearray(weights)
    corrupted[len(weights) // 2] ^= 0xFF
    assert sha(bytes(corrupted)) in message  # the actual hash, not just "mismatch"
    assert not part.exists()


def test_prefix_pin(http_server: HTTPTestServer, weights: bytes, tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", weights)
    result = download(url, tmp_path / "a.part", expected_sha256=sha(weights)[:8], **FAST)
    assert result.sha256 == sha(weights)  # the full hash comes back
    with pytest.raises(HashMismatchError, match="prefix"):
        download(url, tmp_path / "b.part", expected_sha256="00000000", **FAST)


def test_slow_body_times_out_then_resumes(http_server: HTTPTestServer, weights: bytes,
                                          tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", weights, slow=0.6, slow_times=1)
    result = download(url, tmp_path / "w.part", expected_sha256=sha(weights), timeout=0.2,
                      **FAST)
    assert result.sha256 == sha(weights)
    assert http_server.stats("/w.pth").statuses == [200, 206]


def test_slow_body_fails_within_the_retry_budget(http_server: HTTPTestServer, weights: bytes,
                                                  tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", weights, slow=0.6)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"timed out: no data for 0\.2 s"):
        download(url, tmp_path / "w.part", timeout=0.2, retries=1, **FAST)
    assert time.monotonic() - start < 2.0
    assert (tmp_path / "w.part").stat().st_size > 0  # kept for the next run to resume


def test_server_ignoring_range_restarts_from_zero(http_server: HTTPTestServer, weights: bytes,
                                                  tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", weights, drop_after=2_000_000, ignore_range=True)
    part = tmp_path / "w.part"
    result = download(url, part, expected_sha256=sha(weights), **FAST)
    assert result.sha256 == sha(weights) and part.read_bytes() == weights
    stats = http_server.stats("/w.pth")
    assert stats.statuses == [200, 200] and stats.full_downloads == 1


def test_resumes_a_partial_file_left_by_a_dead_process(
    http_server: HTTPTestServer, weights: bytes, tmp_path: Path
) -> None:
    url = http_server.serve("/w.pth", weights)
    part = tmp_path / "w.part"
    part.write_bytes(weights[:5_000_000])
    result = download(url, part, expected_sha256=sha(weights), **FAST)
    assert result.resumed_from == 5_000_000
    assert result.transferred == len(weights) - 5_000_000
    assert http_server.stats("/w.pth").statuses == [206]


def test_changed_file_behind_a_resume_is_fetched_again(
    http_server: HTTPTestServer, weights: bytes, tmp_path: Path
) -> None:
    url = http_server.serve("/w.pth", weights)
    part = tmp_path / "w.part"
    part.write_bytes(b"\0" * 1_000_000)  # an older file's head, no validators recorded
    result = download(url, part, expected_sha256=sha(weights), **FAST)
    assert result.sha256 == sha(weights)
    assert http_server.stats("/w.pth").statuses == [206, 200]


def test_if_range_with_stale_etag_gets_the_whole_file(
    http_server: HTTPTestServer, weights: bytes, tmp_path: Path
) -> None:
    url = http_server.serve("/w.pth", weights)
    part = tmp_path / "w.part"
    part.write_bytes(b"\0" * 1_000_000)
    part.with_name("w.part.json").write_text(json.dumps({"url": url, "etag": '"old"'}))
    result = download(url, part, expected_sha256=sha(weights), **FAST)
    assert result.sha256 == sha(weights)
    assert http_server.stats("/w.pth").statuses == [200]


def test_complete_part_needs_no_request(http_server: HTTPTestServer, weights: bytes,
                                        tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", weights)
    part = tmp_path / "w.part"
    part.write_bytes(weights)  # killed after the last byte, before the rename
    download(url, part, expected_sha256=sha(weights), expected_size=len(weights), **FAST)
    assert http_server.stats("/w.pth").requests == 0


def test_oversized_content_length_is_refused_before_reading(
    http_server: HTTPTestServer, weights: bytes, tmp_path: Path
) -> None:
    url = http_server.serve("/w.pth", weights)
    part = tmp_path / "w.part"
    with pytest.raises(DownloadError, match=f"announces {len(weights)} bytes"):
        download(url, part, expected_size=1_000_000, size_exact=False, **FAST)
    assert not part.exists()


def test_lying_content_length_is_refused(http_server: HTTPTestServer, weights: bytes,
                                         tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", weights, content_length=50 * len(weights))
    with pytest.raises(DownloadError, match="refusing"):
        download(url, tmp_path / "w.part", expected_size=len(weights), **FAST)


def test_approximate_size_has_slack() -> None:
    assert size_limit(100_000_000, exact=False) == 100_000_000 + 5_000_000 + (1 << 20)
    assert size_limit(1000, exact=True) == 1000
    assert size_limit(None) is None


def test_plain_http_needs_loopback_or_permission() -> None:
    for url in ("http://127.0.0.1:8000/w", "http://localhost/w", "http://[::1]/w",
                "https://example.com/w"):
        check_url_allowed(url)
    with pytest.raises(DownloadError, match="--allow-http"):
        check_url_allowed("http://example.com/w.pth")
    check_url_allowed("http://example.com/w.pth", allow_http=True)
    with pytest.raises(DownloadError, match="only http"):
        check_url_allowed("ftp://example.com/w.pth", allow_http=True)


def test_download_file_renames_atomically(http_server: HTTPTestServer, weights: bytes,
                                          tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", weights)
    dest = tmp_path / "w.pth"
    result = download_file(url, dest, expected_sha256=sha(weights), **FAST)
    assert result.path == dest and dest.read_bytes() == weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]


@pytest.mark.parametrize("record", [
    b"\x00garbage", b"[]", json.dumps({"url": 5}).encode(),
    json.dumps({"etag": "\"a\"\r\nX-Injected: 1"}).encode(),
])
def test_damaged_resume_record_is_reported_once_and_ignored(
    http_server: HTTPTestServer, weights: bytes, tmp_path: Path, record: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = http_server.serve("/w.pth", weights)
    part = tmp_path / "w.part"
    part.write_bytes(weights[:1_000_000])
    part.with_name("w.part.json").write_bytes(record)
    result = download(url, part, expected_sha256=sha(weights), **FAST)
    assert (result.sha256, result.resumed_from) == (sha(weights), 1_000_000)
    assert http_server.stats("/w.pth").statuses == [206]  # the bytes were still resumed
    assert capsys.readouterr().err.count("damaged download record") == 1
