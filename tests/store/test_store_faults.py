"""The team store under faults, over real HTTP: throttling (503), 5xx, an unreachable or
slow endpoint, killed multipart uploads that resume, and 4 publishers + 4 pullers at once."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.store.test_store import copy_export, edit_manifest, files_of, flip_byte, s3fs_for, sha
from tests.support.s3server import S3Store, fault_proxy
from zoo.store import StoreConfig, StoreRefusedError, StoreUnavailableError, open_store
from zoo.store.keys import load_public_key, load_signing_key

pytest.importorskip("s3fs")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def big_export(export_dir: Path, dest: Path, size: int) -> Path:
    """The real export with its artifact replaced by ``size`` random bytes (manifest and
    SHA256SUMS updated to match)."""
    folder = copy_export(export_dir, dest)
    data = os.urandom(size)
    (folder / "single_conv.pt").write_bytes(data)
    edit_manifest(folder, lambda m: m["artifact"].update(sha256=sha(data), size=size))
    return folder


def test_throttling_is_retried_then_succeeds(s3_store: S3Store, export_dir: Path,
                                             tmp_path: Path) -> None:
    with fault_proxy(s3_store.server) as proxy:
        store = open_store(s3_store.url, s3_store.server.options(proxy.url), attempts=4,
                           backoff=0.01)
        proxy.fail_next(2, 503)
        result = store.publish(export_dir)
        proxy.fail_next(3, 500)
        hit = store.pull(result.identity, tmp_path / "out")
        assert hit is not None and proxy.failed == 5
    assert (tmp_path / "out" / "single_conv.pt").read_bytes() == \
        (export_dir / "single_conv.pt").read_bytes()


def test_a_store_that_stays_throttled_gives_up_after_bounded_attempts(
        s3_store: S3Store, export_dir: Path, tmp_path: Path) -> None:
    with fault_proxy(s3_store.server) as proxy:
        store = open_store(s3_store.url, s3_store.server.options(proxy.url), attempts=3,
                           backoff=0.01)
        proxy.fail_when(".", 503)
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            store.pull("ab" * 32, tmp_path / "out")
        assert time.monotonic() - start < 10
        assert proxy.requests == 3  # exactly our attempts: s3fs and botocore do not add any
    message = str(caught.value)
    assert "unreachable or throttled" in message and "503" in message
    assert "3 attempts" in message and "--no-store" in message


def test_an_unreachable_store_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    store = open_store("s3://nobody/zoo", {"endpoint_url": url, "key": "k", "secret": "s"},
                       attempts=2, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="s3://nobody/zoo is unreachable"):
        store.pull("ab" * 32, tmp_path / "out")
    assert time.monotonic() - start < 15


def test_a_slow_store_times_out(s3_store: S3Store, tmp_path: Path) -> None:
    with fault_proxy(s3_store.server) as proxy:
        proxy.delay = 1.0
        options = {**s3_store.server.options(proxy.url),
                   "config_kwargs": {"read_timeout": 0.3, "connect_timeout": 0.3}}
        store = open_store(s3_store.url, options, attempts=2, backoff=0.01)
        with pytest.raises(StoreUnavailableError, match=r"(?i)timeout"):
            store.pull("ab" * 32, tmp_path / "out")


def test_missing_bucket_and_denied_access_are_named(s3_store: S3Store, tmp_path: Path) -> None:
    from zoo.store import StoreError

    store = open_store("s3://no-such-bucket-zoo/x", s3_store.options, attempts=1)
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-zoo' does not exist"):
        store.pull("ab" * 32, tmp_path / "out")
    with fault_proxy(s3_store.server) as proxy:
        proxy.fail_when(".", 403)
        store = open_store(s3_store.url, s3_store.server.options(proxy.url), attempts=3)
        with pytest.raises(StoreError, match="access denied"):
            store.pull("ab" * 32, tmp_path / "out")
        assert proxy.requests == 1  # not retried


def test_the_pipeline_callback_warns_and_falls_back(
        s3_store: S3Store, export_dir: Path, keys: Any, tmp_path: Path) -> None:
    warnings: list[str] = []
    down = StoreConfig(url="s3://nobody/zoo", options={
        "endpoint_url": f"http://127.0.0.1:{free_port()}", "key": "k", "secret": "s"},
        warn=warnings.append)
    down._store = open_store(down.url, down.options, attempts=1)
    assert down.pull_into("ab" * 32, tmp_path / "a") is False
    assert "unreachable" in warnings[-1] and warnings[-1].endswith("exporting locally")

    identity = open_store(s3_store.url, s3_store.options).publish(export_dir).identity
    strict = StoreConfig(url=s3_store.url, options=s3_store.options,
                         trusted_keys=[load_public_key(keys.team_pub)], warn=warnings.append)
    assert strict.pull_into(identity, tmp_path / "b") is False
    assert "unsigned, and a trusted key is required" in warnings[-1]
    lax = StoreConfig(url=s3_store.url, options=s3_store.options, warn=warnings.append)
    assert lax.pull_into("cd" * 32, tmp_path / "c") is False  # a miss is quiet
    assert len(warnings) == 2
    assert lax.pull_into(identity, tmp_path / "d") is True
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "single_conv.pt", "single_conv.pt.manifest.json", "single_conv.pt.ops.yaml"]


def test_a_killed_multipart_upload_resumes_with_only_the_missing_parts(
        s3_store: S3Store, export_dir: Path, tmp_path: Path) -> None:
    part = 5 << 20
    folder = big_export(export_dir, tmp_path / "big", 3 * part - 1000)
    with fault_proxy(s3_store.server) as proxy:
        options = s3_store.server.options(proxy.url)
        proxy.fail_when(r"^PUT .*partNumber=3", 500)
        store = open_store(s3_store.url, options, attempts=1, part_size=part)
        with pytest.raises(StoreUnavailableError):
            store.publish(folder)
        assert proxy.count(r"^PUT .*partNumber=[12]\b") == 2
        proxy.rules.clear()
        seen: list[int] = []
        store = open_store(s3_store.url, options, part_size=part)
        result = store.publish(folder, progress=lambda _w, done, _t: seen.append(done))
        assert proxy.count(r"^PUT .*partNumber=[12]\b") == 2  # not sent again
        assert proxy.count(r"^PUT .*partNumber=3\b") == 2  # the failed try and the resumed one
        assert proxy.count(r"^GET .*uploadId=") >= 1  # list_parts
    assert seen == sorted(seen) and seen[-1] == result.bytes_uploaded
    out = tmp_path / "out"
    assert open_store(s3_store.url, s3_store.options).pull(result.identity, out) is not None
    assert files_of(out)["single_conv.pt"] == (folder / "single_conv.pt").read_bytes()


def test_large_objects_download_in_ranges_and_corruption_is_caught(
        s3_store: S3Store, export_dir: Path, tmp_path: Path) -> None:
    part = 5 << 20
    folder = big_export(export_dir, tmp_path / "big", 2 * part + 123)
    store = open_store(s3_store.url, s3_store.options, part_size=part)
    result = store.publish(folder)
    out = tmp_path / "out"
    assert store.pull(result.identity, out) is not None
    assert (out / "single_conv.pt").read_bytes() == (folder / "single_conv.pt").read_bytes()
    fs = s3fs_for(s3_store)
    obj = next(o for o in result.record.statement.objects if o.path == "single_conv.pt")
    path = f"{s3_store.url.removeprefix('s3://')}/objects/sha256/{obj.sha256}"
    fs.pipe(path, flip_byte(fs.cat_file(path), at=part + 7))
    with pytest.raises(StoreRefusedError, match=r"single_conv\.pt: sha256"):
        store.pull(result.identity, tmp_path / "out2")
    report = store.verify()
    assert not report.ok and "corrupted" in report.records[0]["problems"][0]
    assert fs.exists(path)  # verify reports, never deletes


@pytest.mark.parametrize("kind", ["s3", "file"])
def test_four_publishers_and_four_pullers_lose_nothing(
        kind: str, s3_store: S3Store, export_dir: Path, keys: Any, tmp_path: Path) -> None:
    url, options = (s3_store.url, s3_store.options) if kind == "s3" else \
        (str(tmp_path / "shared"), {})
    identities = [f"{i:x}" * 64 for i in range(10, 14)]
    folders = [copy_export(export_dir, tmp_path / f"v{i}", identity)
               for i, identity in enumerate(identities)]
    sign = load_signing_key(keys.team)
    trusted = [load_public_key(keys.team_pub)]
    errors: list[BaseException] = []
    pulled: dict[str, Path] = {}
    lock = threading.Lock()
    start = threading.Barrier(8)

    def publisher(i: int) -> None:
        try:
            start.wait()
            open_store(url, options).publish(folders[i], sign_key=sign)
        except BaseException as exc:
            errors.append(exc)

    def puller(i: int) -> None:
        try:
            store = open_store(url, options)
            start.wait()
            deadline = time.monotonic() + 60
            round_ = 0
            while time.monotonic() < deadline:
                with lock:
                    if len(pulled) == len(identities):
                        return
                identity = identities[(i + round_) % len(identities)]
                round_ += 1
                out = tmp_path / f"pull-{i}-{round_}"
                if store.pull(identity, out, trusted) is not None:
                    with lock:
                        pulled.setdefault(identity, out)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(4)] + \
        [threading.Thread(target=puller, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    store = open_store(url, options)
    records = list(store.records())
    assert sorted(r.identity for r in records) == identities
    assert all(r.record is not None and r.signature == "valid" for r in records)
    assert sorted(pulled) == identities
    for identity, folder in zip(identities, folders, strict=True):
        assert files_of(pulled[identity])["single_conv.pt"] == \
            (folder / "single_conv.pt").read_bytes()
    assert store.verify(trusted).ok


def test_the_weights_callback_warns_and_falls_back_to_the_urls(tmp_path: Path) -> None:
    """An unreachable store asked for weights: one warning naming it, then a miss (the card's
    URLs come next); nothing is left at the destination."""
    warnings: list[str] = []
    down = StoreConfig(url="s3://nobody/zoo", options={
        "endpoint_url": f"http://127.0.0.1:{free_port()}", "key": "k", "secret": "s"},
        warn=warnings.append)
    down._store = open_store(down.url, down.options, attempts=1)
    dest = tmp_path / "w.part"
    assert down.fetch_weights("ab" * 32, dest, 10) is None
    assert len(warnings) == 1 and not dest.exists()
    assert "unreachable" in warnings[0]
    # a store that cannot even be opened (unknown protocol) is a warning and a miss too
    odd = StoreConfig(url="nosuchproto://bucket/zoo", warn=warnings.append)
    assert odd.fetch_weights("ab" * 32, dest, 10) is None
    assert len(warnings) == 2 and "nosuchproto" in warnings[1]
    assert all(w.endswith("fetching the weights from the card's URLs") for w in warnings)
