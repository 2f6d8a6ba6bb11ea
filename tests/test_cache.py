"""The content-addressed weights store: hits without hashing, verify, clear, index."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from zoo import paths
from zoo.cache import WeightsCache

DATA = b"weights bytes " * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def _add(cache: WeightsCache, data: bytes = DATA, url: str | None = "https://h/w.pth",
         ref: tuple[str, str | None] | None = ("m", "v1")) -> Path:
    part = cache.part_path("k")
    part.write_bytes(data)
    return cache.add(part, hashlib.sha256(data).hexdigest(), url=url, ref=ref).path


def test_paths_follow_zoo_home(zoo_home: Path) -> None:
    assert paths.zoo_home() == zoo_home
    assert paths.weights_dir() == zoo_home / "weights"
    assert paths.artifacts_dir() == zoo_home / "artifacts"
    assert WeightsCache().root == zoo_home / "weights"


def test_default_home_is_the_user_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    from platformdirs import user_cache_dir

    monkeypatch.delenv("ZOO_HOME")
    assert paths.zoo_home() == Path(user_cache_dir("zoo", appauthor=False)).absolute()


def test_add_then_find_by_hash_prefix_and_url() -> None:
    cache = WeightsCache()
    blob = _add(cache)
    assert blob == cache.root / "sha256" / SHA and blob.read_bytes() == DATA
    assert not cache.part_path("k").exists()  # moved, not copied
    sidecar = json.loads((cache.root / "sha256" / f"{SHA}.json").read_text())
    assert sidecar["size"] == len(DATA) and sidecar["mtime_ns"] == blob.stat().st_mtime_ns
    assert sidecar["refs"] == [{"model": "m", "weights": "v1"}]
    assert cache.find(SHA).path == blob
    assert cache.find(SHA[:8]).sha256 == SHA
    assert cache.find(url="https://h/w.pth").sha256 == SHA
    assert cache.find("deadbeef") is None and cache.find(url="https://h/other.pth") is None


def test_hit_trusts_size_and_mtime_without_rehash_and_verify_catches_it() -> None:
    cache = WeightsCache()
    blob = _add(cache)
    st = blob.stat()
    blob.write_bytes(DATA.replace(b"w", b"W", 1))  # same size, different bytes
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...and the same mtime
    assert cache.find(SHA) is not None  # a hit only stats: this is the cost it saves
    results = cache.verify()
    assert [(r.sha256, r.ok) for r in results] == [(SHA, False)]
    assert not blob.exists() and cache.find(SHA) is None
    assert cache.list() == []


def test_touched_blob_is_rehashed_kept_if_intact_dropped_if_not() -> None:
    cache = WeightsCache()
    blob = _add(cache)
    os.utime(blob, ns=(0, 123_456_789))
    assert cache.find(SHA) is not None  # re-hashed, still good, re-recorded
    sidecar = json.loads((cache.root / "sha256" / f"{SHA}.json").read_text())
    assert sidecar["mtime_ns"] == 123_456_789 and sidecar["refs"]  # history kept
    blob.write_bytes(b"x" * len(DATA))  # new mtime, wrong bytes
    assert cache.find(SHA) is None
    assert not blob.exists()


def test_blob_without_sidecar_is_adopted_only_if_it_matches() -> None:
    cache = WeightsCache()
    blob = _add(cache)
    sidecar = cache.root / "sha256" / f"{SHA}.json"
    sidecar.unlink()
    assert cache.find(SHA) is not None and sidecar.exists()
    sidecar.unlink()
    blob.write_bytes(b"garbage")
    assert cache.find(SHA) is None and not blob.exists()


def test_list_and_clear_by_model_hash_and_all() -> None:
    cache = WeightsCache()
    _add(cache, DATA, ref=("alpha", "v1"))
    other = b"other" * 100
    _add(cache, other, url=None, ref=("beta", None))
    cache.part_path("leftover").write_bytes(b"partial")
    assert {e.refs for e in cache.list()} == {(("alpha", "v1"),), (("beta", None),)}
    assert cache.clear("nobody") == []
    removed = cache.clear("alpha")
    assert [e.sha256 for e in removed] == [SHA]
    assert cache.find(url="https://h/w.pth") is None  # index entry went with the blob
    other_sha = hashlib.sha256(other).hexdigest()
    assert [e.sha256 for e in cache.clear(other_sha[:10])] == [other_sha]
    _add(cache)
    assert len(cache.clear()) == 1
    assert sorted(p.name for p in (cache.root / "sha256").iterdir()) == []


def test_note_use_records_new_models_only() -> None:
    cache = WeightsCache()
    _add(cache)
    entry = cache.find(SHA)
    sidecar = cache.root / "sha256" / f"{SHA}.json"
    before = sidecar.stat().st_mtime_ns
    cache.note_use(entry, url="https://h/w.pth", ref=("m", "v1"))  # nothing new: no write
    assert sidecar.stat().st_mtime_ns == before
    cache.note_use(entry, url="https://mirror/w.pth", ref=("n", None))
    assert cache.find(SHA).refs == (("m", "v1"), ("n", None))
    assert cache.find(SHA).urls == ("https://h/w.pth", "https://mirror/w.pth")


def test_local_hash_is_memoised_on_size_and_mtime(tmp_path: Path) -> None:
    cache = WeightsCache()
    local = tmp_path / "mine.pth"
    local.write_bytes(DATA)
    assert cache.hash_local(local) == SHA
    st = local.stat()
    local.write_bytes(DATA.upper())  # same size; restore the mtime: the memo answers
    os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.hash_local(local) == SHA
    os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert cache.hash_local(local) == hashlib.sha256(DATA.upper()).hexdigest()


def test_verify_drops_orphan_sidecars() -> None:
    cache = WeightsCache()
    _add(cache)
    (cache.root / "sha256" / SHA).unlink()
    assert cache.verify() == []
    assert not (cache.root / "sha256" / f"{SHA}.json").exists()


def test_clear_keeps_a_download_in_progress() -> None:
    cache = WeightsCache()
    cache.part_path("busy").write_bytes(b"x")
    cache.part_path("idle").write_bytes(b"y")
    with cache.lock("busy"):
        cache.clear()
    assert cache.part_path("busy").exists() and not cache.part_path("idle").exists()
