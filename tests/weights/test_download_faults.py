"""Faults that must stay bounded: stalls, trickles, endless bodies, redirects, full and
read-only disks, stuck or dead lock holders. Every case is checked against a real HTTP server
on 127.0.0.1 (tests/support/httpserver.py) and, for disks, a real tmpfs where this machine allows
mounting one (a SIMULATED full disk otherwise, named as such)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.support.httpserver import HTTPTestServer, simulate_full_disk, tmpfs
from zoo.errors import DownloadError
from zoo.weights.cache import WeightsCache
from zoo.weights.download import download
from zoo.weights.urls import follow_redirect

FAST = {"backoff": 0.01, "progress": "never"}
DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def elapsed(start: float) -> float:
    return time.monotonic() - start


# -- time ---------------------------------------------------------------------------------


def test_trickle_counts_as_a_stall(http_server: HTTPTestServer, tmp_path: Path) -> None:
    """40 bytes/s, one byte per write: every read returns data, so socket timeouts never
    fire; the per-window rate (less than 1 KiB/s over 0.5 s) does."""
    url = http_server.serve("/w.pth", DATA[:400], trickle=40)
    part = tmp_path / "w.part"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"slower than --min-rate 1024 B/s") as info:
        download(url, part, timeout=0.5, retries=1, **FAST)
    assert elapsed(start) < 3.0
    assert "gave up after 2 attempts" in str(info.value)
    assert 0 < part.stat().st_size < 400  # kept: a rerun resumes


def test_min_rate_is_a_setting(http_server: HTTPTestServer, tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", DATA[:60], trickle=100)
    result = download(url, tmp_path / "w.part", timeout=0.3, retries=0, min_rate=10, **FAST)
    assert result.sha256 == sha(DATA[:60])


def test_headers_then_nothing_is_a_stall(http_server: HTTPTestServer, tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", DATA, stall_after=0)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"timed out: no data for 0\.3 s \(at byte 0\)"):
        download(url, tmp_path / "w.part", timeout=0.3, retries=1, **FAST)
    assert elapsed(start) < 3.0


def test_stall_mid_body_resumes_from_the_stall(http_server: HTTPTestServer,
                                               tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", DATA, stall_after=100_000)
    http_server.set_faults("/w.pth", stall_after=100_000)
    part = tmp_path / "w.part"
    with pytest.raises(DownloadError, match="no data"):
        download(url, part, timeout=0.3, retries=0, **FAST)
    assert part.stat().st_size == 100_000
    http_server.set_faults("/w.pth")
    result = download(url, part, expected_sha256=SHA, timeout=0.3, **FAST)
    assert (result.sha256, result.resumed_from) == (SHA, 100_000)


def test_trickled_headers_are_cut_by_the_watchdog(http_server: HTTPTestServer,
                                                  tmp_path: Path) -> None:
    """Headers at 20 bytes/s never trip a socket read timeout; the watchdog cuts the
    socket while the client is still inside the header read."""
    url = http_server.serve("/w.pth", DATA[:10], slow_headers=20)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"timed out: no data for 0\.4 s"):
        download(url, tmp_path / "w.part", timeout=0.4, retries=0, **FAST)
    assert elapsed(start) < 3.0


def test_deadline_bounds_all_retries(http_server: HTTPTestServer, tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", DATA, status=503, retry_after=1)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"--deadline of 1\.5 s is over"):
        download(url, tmp_path / "w.part", retries=1000, deadline=1.5, **FAST)
    assert elapsed(start) < 3.0


def test_deadline_cuts_a_transfer_in_flight(http_server: HTTPTestServer, tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", DATA, rate=50_000)  # 6 s at a healthy rate
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"--deadline of 1 s is over") as info:
        download(url, tmp_path / "w.part", deadline=1.0, **FAST)
    assert elapsed(start) < 2.5
    assert "bytes kept to resume" in str(info.value)


def test_watchdog_leaves_no_threads_behind(http_server: HTTPTestServer, tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", DATA)
    before = {t.name for t in threading.enumerate()}
    download(url, tmp_path / "w.part", expected_sha256=SHA, **FAST)
    assert not [t for t in threading.enumerate()
                if t.name == "zoo-download-watchdog" and t.name not in before]


# -- space --------------------------------------------------------------------------------


def test_endless_body_stops_at_max_size(http_server: HTTPTestServer, tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", DATA, endless=True)
    part = tmp_path / "w.part"
    with pytest.raises(DownloadError, match=r"more than the --max-size of 1\.0 MiB") as info:
        download(url, part, max_size=1 << 20, **FAST)
    assert "without announcing its size" in str(info.value)
    assert not part.exists() and not part.with_name("w.part.json").exists()


def test_announced_size_over_max_size_is_refused_before_the_body(
    http_server: HTTPTestServer, tmp_path: Path
) -> None:
    big = os.urandom(3 << 20)
    url = http_server.serve("/w.pth", big)
    with pytest.raises(DownloadError, match=r"announces 3145728 bytes .*--max-size"):
        download(url, tmp_path / "w.part", max_size=1 << 20, **FAST)
    assert not (tmp_path / "w.part").exists()  # not a byte of the body was written


def test_pinned_url_without_size_is_capped_too(http_server: HTTPTestServer,
                                               tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", DATA, endless=True)
    with pytest.raises(DownloadError, match="--max-size"):
        download(url, tmp_path / "w.part", expected_sha256=SHA, max_size=500_000, **FAST)


def test_no_room_for_a_known_size_is_refused_before_any_request(
    http_server: HTTPTestServer, tmp_path: Path
) -> None:
    """A real 2 MiB tmpfs (skipped, with the reason, where mounting is refused)."""
    big = os.urandom(3 << 20)
    url = http_server.serve("/w.pth", big)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        with pytest.raises(DownloadError, match=r"not enough disk space") as info:
            download(url, disk / "w.part", expected_sha256=sha(big), expected_size=len(big),
                     **FAST)
        assert f"({len(big)} bytes) needed" in str(info.value)
        assert http_server.stats("/w.pth").requests == 0
        # unknown in advance: refused on the Content-Length, before reading the body
        with pytest.raises(DownloadError, match=r"not enough disk space"):
            download(url, disk / "w.part", **FAST)
        assert not (disk / "w.part").exists()
        assert shutil.disk_usage(disk).used < (256 << 10)


def test_disk_full_on_a_real_tmpfs_removes_the_partial_file(
    http_server: HTTPTestServer, tmp_path: Path
) -> None:
    """An endless body into a real 2 MiB tmpfs: ENOSPC, a clear error, the disk empty again."""
    url = http_server.serve("/w.pth", DATA, endless=True)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        part = disk / "w.part"
        with pytest.raises(DownloadError, match=r"no space left on the device after") as info:
            download(url, part, **FAST)
        message = str(info.value)
        assert "the partial file was removed" in message and str(part) in message
        assert not part.exists() and not part.with_name("w.part.json").exists()
        assert shutil.disk_usage(disk).used < (256 << 10)


@pytest.mark.parametrize("error, what", [
    (errno.ENOSPC, "no space left on the device"),
    (errno.EDQUOT, "disk quota exceeded"),
    (errno.EFBIG, "file size limit exceeded"),
])
def test_disk_full_simulated_write_fault_says_what_was_needed(
    http_server: HTTPTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int,
    what: str
) -> None:
    """SIMULATED full disk (a fault hook at the .part write, not a real file system): the
    free-space check passes, then the disk fills mid-transfer (another writer, a quota)."""
    url = http_server.serve("/w.pth", DATA)
    simulate_full_disk(monkeypatch, capacity=100_000, error=error)
    part = tmp_path / "w.part"
    with pytest.raises(DownloadError, match=f"{what}; 293\\.0 KiB needed") as info:
        download(url, part, expected_sha256=SHA, expected_size=len(DATA), **FAST)
    assert "the partial file was removed" in str(info.value)
    assert not part.exists() and not part.with_name("w.part.json").exists()


def test_read_only_folder_is_a_clear_error(http_server: HTTPTestServer, tmp_path: Path) -> None:
    url = http_server.serve("/w.pth", DATA)
    refused = pytest.raises(DownloadError, match=r"read-only file system; downloads need a "
                            r"writable folder")
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as disk, refused:
        download(url, disk / "w.part", **FAST)


# -- redirects ----------------------------------------------------------------------------


def test_redirect_chain_is_followed(http_server: HTTPTestServer, tmp_path: Path) -> None:
    http_server.serve("/real/w.pth", DATA)
    http_server.redirect("/b", "/real/w.pth", status=307)
    url = http_server.redirect("/a", http_server.url("/b"), status=301)
    result = download(url, tmp_path / "w.part", expected_sha256=SHA, **FAST)
    assert result.sha256 == SHA
    assert http_server.stats("/a").statuses == [301]
    assert http_server.stats("/b").statuses == [307]


def test_resume_through_a_redirect(http_server: HTTPTestServer, tmp_path: Path) -> None:
    http_server.serve("/real", DATA, drop_after=120_000)
    url = http_server.redirect("/a", "/real")
    result = download(url, tmp_path / "w.part", expected_sha256=SHA, **FAST)
    assert result.sha256 == SHA and http_server.stats("/real").statuses == [200, 206]


def test_redirect_loop_is_bounded(http_server: HTTPTestServer, tmp_path: Path) -> None:
    http_server.redirect("/b", "/a")
    url = http_server.redirect("/a", "/b")
    with pytest.raises(DownloadError, match="more than 10 redirects"):
        download(url, tmp_path / "w.part", **FAST)
    assert http_server.stats("/a").requests + http_server.stats("/b").requests == 11


@pytest.mark.parametrize("location, why", [
    ("file:///etc/passwd", "redirected to a file: URL"),
    ("ftp://127.0.0.1/w.pth", "redirected to a ftp: URL"),
    ("http://weights.example.invalid/w.pth", "--allow-http"),
    ("http://[::1/w", "invalid URL"),
])
def test_refused_redirects(http_server: HTTPTestServer, tmp_path: Path, location: str,
                           why: str) -> None:
    url = http_server.redirect("/a", location)
    with pytest.raises(DownloadError, match=why.replace("[", r"\[")):
        download(url, tmp_path / "w.part", retries=0, **FAST)
    assert http_server.stats("/a").requests == 1  # refused, not retried


def test_redirect_rules() -> None:
    assert follow_redirect("https://a.org/x/w", "../y") == "https://a.org/y"
    assert follow_redirect("http://127.0.0.1/w", "https://cdn.org/w") == "https://cdn.org/w"
    for target in ("http://127.0.0.1/w", "http://cdn.org/w"):  # never down from https
        with pytest.raises(DownloadError, match="from https to plain http"):
            follow_redirect("https://a.org/w", target, allow_http=True)
    assert follow_redirect("http://127.0.0.1/w", "http://cdn.org/w", allow_http=True)
    with pytest.raises(DownloadError, match="data: URL"):
        follow_redirect("https://a.org/w", "data:,hello")


def test_redirect_messages_carry_no_secrets(http_server: HTTPTestServer, tmp_path: Path) -> None:
    url = http_server.redirect("/a", "file:///x?token=SECRET")
    with pytest.raises(DownloadError) as info:
        download(url + "?sig=SECRET2", tmp_path / "w.part", **FAST)
    assert "SECRET" not in str(info.value)


# -- locks --------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from zoo.weights.cache import WeightsCache
    with WeightsCache(Path(sys.argv[1])).lock("k", what="tiny weights v1"):
        print("held", flush=True)
        time.sleep(60)
""")


def _holder(root: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_waiting_for_a_stuck_holder_is_bounded_and_names_it(tmp_path: Path) -> None:
    cache = WeightsCache(tmp_path / "w")
    proc = _holder(cache.root)
    seen: list[str] = []
    try:
        start = time.monotonic()
        with pytest.raises(DownloadError) as info, cache.lock("k", on_wait=seen.append,
                                                              timeout=1.0, what="tiny v1"):
            pass
        assert 0.9 < elapsed(start) < 3.0
    finally:
        proc.kill()
        proc.wait()
    message = str(info.value)
    assert f"pid {proc.pid} on " in message and "gave up after 1 s" in message
    assert "tiny v1" in message and "--deadline" in message
    assert seen and f"pid {proc.pid}" in seen[0]


def test_a_holder_killed_with_sigkill_never_blocks(tmp_path: Path) -> None:
    cache = WeightsCache(tmp_path / "w")
    proc = _holder(cache.root)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    start = time.monotonic()
    with cache.lock("k", timeout=5.0):
        assert elapsed(start) < 1.0  # flock died with the process
    assert not (cache.locks / "k.owner.json").exists()


def test_a_dead_holders_owner_record_is_a_leftover(tmp_path: Path) -> None:
    cache = WeightsCache(tmp_path / "w")
    proc = _holder(cache.root)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [x.kind for x in cache.leftovers()] == ["owner record of an ended process"]
    cache.remove_leftovers()
    assert cache.leftovers() == []
