"""The team store as a mirror of the cards' weights URLs (``weights/sha256/<hex>``).

Real components throughout: cards whose weights a real HTTP server on 127.0.0.1 serves, a
``file://`` store and moto's real S3 API, and ``zoo`` run as a separate process per machine
(each machine its own ZOO_HOME). A second machine that cannot reach the cards' URLs (a mirror
on a dead port) gets the weights from the store; bytes that do not match the card's pin are
refused, named, and the URLs are used instead.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_zoo
from tests.store.test_store import files_of, flip_byte
from tests.support.httpserver import (
    HTTPTestServer,
    card_with_weights,
    state_dict_bytes,
    write_registry,
)
from tests.support.s3server import S3Store

TINY = state_dict_bytes("single_conv")
TINY_SHA = hashlib.sha256(TINY).hexdigest()
DEAD_MIRROR = {"ZOO_MIRROR": "http://127.0.0.1:9"}  # nothing listens on the discard port


def machine(tmp_path: Path, name: str, registry: Path, **env: str) -> dict[str, str]:
    return {"ZOO_HOME": str(tmp_path / f"home_{name}"), "ZOO_REGISTRY": str(registry), **env}


def tiny_registry(server: HTTPTestServer, tmp_path: Path, **source: Any) -> Path:
    url = server.serve("/tiny.pth", TINY)
    return write_registry(tmp_path / "registry.yaml",
                          card_with_weights("single_conv", "tiny", url, TINY, **source))


def file_store(tmp_path: Path) -> str:
    return (tmp_path / "store").as_uri()


def test_a_second_machine_gets_the_weights_from_the_store(
        http_server: HTTPTestServer, tmp_path: Path) -> None:
    registry = tiny_registry(http_server, tmp_path)
    store = file_store(tmp_path)
    a = run_zoo(["fetch", "tiny", "--store", store, "--publish"],
                env=machine(tmp_path, "a", registry))
    assert a.returncode == 0, a.stderr
    assert "uploaded" in a.stderr
    stored = tmp_path / "store" / "weights" / "sha256" / TINY_SHA
    assert stored.read_bytes() == TINY
    again = run_zoo(["fetch", "tiny", "--store", store, "--publish"],
                    env=machine(tmp_path, "a", registry))
    assert again.returncode == 0 and "already there" in again.stderr
    assert http_server.stats("/tiny.pth").requests == 1

    b = run_zoo(["fetch", "tiny", "--store", store],
                env=machine(tmp_path, "b", registry, **DEAD_MIRROR))
    assert b.returncode == 0, b.stderr
    assert "from the team store" in b.stderr
    assert Path(b.stdout.strip()).read_bytes() == TINY
    assert http_server.stats("/tiny.pth").requests == 1  # B never asked the card's URL
    # the weights are in B's cache now: offline, with no store, they are still there
    c = run_zoo(["fetch", "tiny", "--offline", "--no-store"], env=machine(tmp_path, "b", registry))
    assert c.returncode == 0 and c.stdout == b.stdout


def test_offline_with_a_file_store_still_gets_the_weights(
        http_server: HTTPTestServer, tmp_path: Path) -> None:
    registry = tiny_registry(http_server, tmp_path)
    store = file_store(tmp_path)
    assert run_zoo(["fetch", "tiny", "--store", store, "--publish"],
                   env=machine(tmp_path, "a", registry)).returncode == 0
    b = run_zoo(["fetch", "tiny", "--store", store, "--offline"],
                env=machine(tmp_path, "b", registry))
    assert b.returncode == 0, b.stderr
    assert Path(b.stdout.strip()).read_bytes() == TINY
    missing = run_zoo(["fetch", "tiny", "--store", (tmp_path / "empty").as_uri(), "--offline"],
                      env=machine(tmp_path, "c", registry))
    assert missing.returncode == 1
    assert "not in the cache" in missing.stderr and "nor in the store" in missing.stderr


def test_tampered_store_weights_are_refused_and_the_urls_used(
        http_server: HTTPTestServer, tmp_path: Path) -> None:
    registry = tiny_registry(http_server, tmp_path)
    store = file_store(tmp_path)
    assert run_zoo(["fetch", "tiny", "--store", store, "--publish"],
                   env=machine(tmp_path, "a", registry)).returncode == 0
    stored = tmp_path / "store" / "weights" / "sha256" / TINY_SHA
    stored.write_bytes(flip_byte(TINY))
    b = run_zoo(["fetch", "tiny", "--store", store], env=machine(tmp_path, "b", registry))
    assert b.returncode == 0, b.stderr
    assert "corrupted or tampered" in b.stderr and "from the card's URLs" in b.stderr
    assert Path(b.stdout.strip()).read_bytes() == TINY  # the URL's bytes, checked
    assert http_server.stats("/tiny.pth").requests == 2
    # with the URL unreachable too, nothing is installed and the failure is one line, exit 1
    c = run_zoo(["fetch", "tiny", "--store", store],
                env=machine(tmp_path, "c", registry, **DEAD_MIRROR))
    assert c.returncode == 1 and "Traceback" not in c.stderr
    assert not any((tmp_path / "home_c" / "weights" / "sha256").glob("[0-9a-f]*"))

    audit = run_zoo(["store", "verify", "--store", store, "--json"],
                    env=machine(tmp_path, "a", registry))
    report = json.loads(audit.stdout)
    assert audit.returncode == 1 and not report["ok"] and not report["stray"]
    assert [w["key"] for w in report["weights"] if w["problem"]] == [
        f"weights/sha256/{TINY_SHA}"]


def test_s3_store_serves_full_pins_and_never_prefix_pins(
        http_server: HTTPTestServer, s3_store: S3Store, tmp_path: Path) -> None:
    """Over a real S3 API: a card pinning the full sha256 gets its weights from the store
    (the URLs dead); a torchvision-style card pinning an 8-hex prefix is never served from
    the store, even when the right bytes are there: 32 bits can be matched by anyone who may
    write to the store, so those weights come from their URLs."""
    from zoo.store import open_store

    store = open_store(s3_store.url, s3_store.options)
    real = tmp_path / "real.pth"
    real.write_bytes(TINY)
    assert store.publish_weights(real, TINY_SHA, len(TINY)) is True
    assert store.publish_weights(real, TINY_SHA, len(TINY)) is False  # already there
    s3 = ["--store", s3_store.url, *s3_store.server.store_options()]

    full = tiny_registry(http_server, tmp_path)
    b = run_zoo(["fetch", "tiny", *s3], env=machine(tmp_path, "b", full, **DEAD_MIRROR))
    assert b.returncode == 0, b.stderr
    assert Path(b.stdout.strip()).read_bytes() == TINY
    assert http_server.stats("/tiny.pth").requests == 0

    prefix = write_registry(tmp_path / "prefix.yaml", card_with_weights(
        "single_conv", "tiny", http_server.url("/tiny.pth"), TINY, sha256_prefix=TINY_SHA[:8]))
    c = run_zoo(["fetch", "tiny", *s3], env=machine(tmp_path, "c", prefix))
    assert c.returncode == 0, c.stderr
    assert "pin only a sha256 prefix: not taken from the team store" in c.stderr
    assert http_server.stats("/tiny.pth").requests == 1  # the URL, not the store
    d = run_zoo(["fetch", "tiny", *s3], env=machine(tmp_path, "d", prefix, **DEAD_MIRROR))
    assert d.returncode == 1 and "Traceback" not in d.stderr


def test_a_store_object_larger_than_the_card_allows_is_not_downloaded(
        http_server: HTTPTestServer, tmp_path: Path) -> None:
    """A card with an approximate size: the store's object may be up to 5 % + 1 MiB larger
    (as for a download); a bigger one is skipped without reading it, and the URL is used."""
    big = TINY + b"\0" * (2 << 20)
    sha = hashlib.sha256(big).hexdigest()
    registry = write_registry(tmp_path / "approx.yaml", card_with_weights(
        "single_conv", "tiny", http_server.serve("/tiny.pth", TINY), sha256=sha,
        size=len(TINY), size_exact=False))
    store_dir = tmp_path / "store" / "weights" / "sha256"
    store_dir.mkdir(parents=True)
    (store_dir / sha).write_bytes(big)
    proc = run_zoo(["fetch", "tiny", "--store", file_store(tmp_path)],
                   env=machine(tmp_path, "b", registry, **DEAD_MIRROR))
    assert proc.returncode == 1 and "from the team store" not in proc.stderr


def test_publishing_an_export_uploads_its_weights_and_a_second_machine_needs_no_url(
        http_server: HTTPTestServer, tmp_path: Path) -> None:
    """`zoo fetch --format --publish` on machine A sends the artifact and its weights; machine B,
    with the cards' URLs unreachable, gets both from the store: no download, no export."""
    registry = tiny_registry(http_server, tmp_path)
    store = file_store(tmp_path)
    base = ["fetch", "tiny", "--format", "torchscript", "--store", store]
    a = run_zoo([*base, "-o", str(tmp_path / "a"), "--publish"],
                env=machine(tmp_path, "a", registry))
    assert a.returncode == 0, a.stderr
    assert (tmp_path / "store" / "weights" / "sha256" / TINY_SHA).read_bytes() == TINY
    b = run_zoo([*base, "-o", str(tmp_path / "b")],
                env=machine(tmp_path, "b", registry, **DEAD_MIRROR))
    assert b.returncode == 0, b.stderr
    assert "from the team store" in b.stderr and "pulled from the team store" in b.stderr
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")
    assert http_server.stats("/tiny.pth").requests == 1


def test_zoo_publish_sends_cached_weights_unless_told_not_to(
        http_server: HTTPTestServer, tmp_path: Path) -> None:
    registry = tiny_registry(http_server, tmp_path)
    env = machine(tmp_path, "a", registry)
    out = tmp_path / "models"
    made = run_zoo(["fetch", "tiny", "--format", "torchscript", "-o", str(out), "--no-store"],
                   env=env)
    assert made.returncode == 0, made.stderr
    first = run_zoo(["publish", str(out), "--store", file_store(tmp_path), "--no-weights",
                     "--json"], env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["weights"] is None
    assert not (tmp_path / "store" / "weights").exists()
    second = run_zoo(["publish", str(out), "--store", file_store(tmp_path), "--json"], env=env)
    assert json.loads(second.stdout)["weights"] == {"sha256": TINY_SHA, "size": len(TINY),
                                                     "uploaded": True}
    other = run_zoo(["publish", str(out), "--store", (tmp_path / "s2").as_uri(), "--json"],
                    env=machine(tmp_path, "fresh", registry))
    assert json.loads(other.stdout)["weights"] == {
        "sha256": TINY_SHA, "skipped": "not in this machine's weights cache"}


def test_sign_without_an_artifact_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_zoo(["fetch", "single_conv", "--weights", "none", "--store",
                    file_store(tmp_path), "--publish", "--sign", str(tmp_path / "k.pem")])
    assert proc.returncode == 2 and "--sign signs published artifacts" in proc.stderr


def test_the_python_api_and_zoo_run_take_weights_from_the_store(
        http_server: HTTPTestServer, tmp_path: Path, monkeypatch: Any) -> None:
    """`zoo.load(..., store=URL)` (or ZOO_STORE) gets card weights from the store when the
    URLs are unreachable; `store=""` opts out; `zoo run` follows ZOO_STORE."""
    import torch

    import zoo
    from zoo.catalog.registry import Registry
    from zoo.errors import DownloadError

    registry_file = tiny_registry(http_server, tmp_path)
    store = file_store(tmp_path)
    assert run_zoo(["fetch", "tiny", "--store", store, "--publish"],
                   env=machine(tmp_path, "a", registry_file)).returncode == 0
    registry = Registry(extra_files=[registry_file])
    expected = torch.load(io.BytesIO(TINY), weights_only=True)
    monkeypatch.setenv("ZOO_MIRROR", DEAD_MIRROR["ZOO_MIRROR"])
    monkeypatch.setenv("ZOO_STORE", store)
    with pytest.raises(DownloadError, match="not in the cache"):  # offline: fails at once
        zoo.load("tiny", registry=registry, store="", offline=True, progress="never")
    model = zoo.load("tiny", registry=registry, progress="never")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    assert http_server.stats("/tiny.pth").requests == 1

    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 24), (120, 30, 200)).save(image)
    ran = run_zoo(["run", "tiny", str(image), "-o", str(tmp_path / "out"), "--json"],
                  env=machine(tmp_path, "c", registry_file, **DEAD_MIRROR, ZOO_STORE=store))
    assert ran.returncode == 0, ran.stderr
    assert "from the team store" in ran.stderr
