"""The content-addressed weights store: hits without hashing, verify, clear, index."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from zoo import paths
from zoo.weights.cache import WeightsCache

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


# -- damaged records: a miss, reported once, repaired ---------------------------------------

DAMAGE = {
    "garbage": b"\xff\xfe not json",
    "not an object": b"[1, 2, 3]",
    "wrong kinds": json.dumps({"sha256": SHA, "size": "big", "mtime_ns": None,
                               "urls": "https://h/w.pth", "refs": [5, {"model": 3}]}).encode(),
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_sidecar_is_reported_once_and_rebuilt(kind: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cache = WeightsCache()
    blob = _add(cache)
    sidecar = cache.root / "sha256" / f"{SHA}.json"
    sidecar.write_bytes(DAMAGE[kind])
    assert cache.find(SHA).path == blob
    assert [e.sha256 for e in cache.list()] == [SHA]
    assert cache.verify() and cache.clear("nobody") == []
    err = capsys.readouterr().err
    assert err.count("zoo: warning: damaged cache record") == 1 and str(sidecar) in err
    repaired = json.loads(sidecar.read_text())
    assert repaired["size"] == len(DATA) and repaired["sha256"] == SHA
    assert cache.find(SHA) is not None and capsys.readouterr().err == ""


def test_sidecar_that_is_a_folder_is_repaired(capsys: pytest.CaptureFixture[str]) -> None:
    cache = WeightsCache()
    _add(cache)
    sidecar = cache.root / "sha256" / f"{SHA}.json"
    sidecar.unlink()
    sidecar.mkdir()
    assert cache.find(SHA) is not None and sidecar.is_file()
    assert "damaged cache record" in capsys.readouterr().err


def test_damaged_index_record_is_a_miss(capsys: pytest.CaptureFixture[str]) -> None:
    cache = WeightsCache()
    _add(cache)
    record = cache.root / "index" / f"{cache.url_key('https://h/w.pth')}.json"
    record.write_text('{"url": "https://h/w.pth", "sha256": 7')
    assert cache.find(url="https://h/w.pth") is None
    assert not record.exists()
    assert capsys.readouterr().err.count("damaged cache record") == 1
    assert cache.find(SHA) is not None  # the blob itself is fine


def test_hostile_index_record_cannot_reach_outside(tmp_path: Path) -> None:
    cache = WeightsCache()
    _add(cache)
    victim = cache.root / "victim"
    victim.write_bytes(b"keep me")
    record = cache.root / "index" / f"{cache.url_key('https://h/x.pth')}.json"
    record.write_text(json.dumps({"url": "https://h/x.pth", "sha256": "../victim"}))
    assert cache.find(url="https://h/x.pth") is None
    assert victim.read_bytes() == b"keep me"


def test_legacy_index_record_still_hits_and_is_rewritten_redacted() -> None:
    cache = WeightsCache()
    _add(cache, url=None)
    url = "https://u:pw@h/w.pth?token=abc"
    record = cache.root / "index" / f"{cache.url_key(url)}.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"url": url, "sha256": SHA}))
    assert cache.find(url=url).sha256 == SHA
    assert "pw" not in record.read_text() and "abc" not in record.read_text()
    assert cache.find(url=url).sha256 == SHA


def test_damaged_local_memo_is_rehashed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = WeightsCache()
    local = tmp_path / "mine.pth"
    local.write_bytes(DATA)
    cache.hash_local(local)
    [memo] = (cache.root / "index").glob("path-*.json")
    memo.write_text(json.dumps({"path": str(local), "size": 1, "mtime_ns": 1, "sha256": "x"}))
    assert cache.hash_local(local) == SHA
    assert "damaged cache record" in capsys.readouterr().err
    assert json.loads(memo.read_text())["sha256"] == SHA


# -- leftovers of killed processes ---------------------------------------------------------


def _old(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (0, 0))
    return path


def test_leftovers_are_found_and_cleared_but_live_work_is_kept() -> None:
    cache = WeightsCache()
    _add(cache)
    root = cache.root
    stale = [_old(root / "sha256" / f".{SHA}.json.abc123.tmp"),
             _old(root / "index" / ".url-1.json.x.tmp"),
             _old(root / "locks" / ".k.owner.json.y.tmp")]
    young = root / "sha256" / ".fresh.json.z.tmp"
    young.write_bytes(b"a writer is busy with me")
    orphan_part = _old(root / "sha256" / "deadbeef.part", b"partial")
    orphan_meta = _old(root / "sha256" / "gone.part.json", b"{}")
    busy_part = _old(root / "sha256" / "busy.part", b"in progress")
    found = {x.path: x.kind for x in cache.leftovers()}
    with cache.lock("busy"):
        found = {x.path: x.kind for x in cache.leftovers()}
        assert set(found) == {*stale, orphan_part, orphan_meta}
        assert found[orphan_part].startswith("unfinished download")
        cache.clear()
        assert busy_part.exists() and young.exists()
    assert not any(p.exists() for p in (*stale, orphan_part, orphan_meta))
    assert cache.leftovers() == [x for x in cache.leftovers() if x.path == busy_part]


def test_lock_holder_is_described() -> None:
    cache = WeightsCache()
    with cache.lock("k", what="tiny v1"):
        text = cache.lock_holder("k")
    assert text.startswith(f"pid {os.getpid()} on ") and "s ago" in text
    assert cache.lock_holder("k") == "another process (it left no owner record)"


@pytest.mark.parametrize("folder", ["sha256", "index", "locks"])
def test_a_file_where_a_cache_folder_belongs_is_repaired(
    folder: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = WeightsCache()
    cache.root.mkdir(parents=True)
    (cache.root / folder).write_bytes(b"junk")
    with cache.lock("k"):
        _add(cache)
    assert cache.find(SHA) is not None and cache.find(url="https://h/w.pth") is not None
    assert (cache.root / folder).is_dir()
    assert capsys.readouterr().err.count("a file where a folder of the cache belongs") == 1
