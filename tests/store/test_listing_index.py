"""Listing a big store through its index (index/snapshots, index/parts, index/journal): the
index stands for records/, records published after it are found through the journal, a
reader never writes, and nothing in the index is trusted (every record is re-checked; a
tampered head, part or entry is named in a warning and the true records are shown).
S3 tests go through moto's server behind a counting proxy; tampering tests use file:// stores.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.support.s3server import S3Store, fault_proxy
from zoo.cli.main import main
from zoo.store.index import (
    MAX_HEAD_BYTES,
    PARTS,
    SNAPSHOTS,
    IndexFormatError,
    journal_key,
    parse_snapshot,
    stamp,
    unpack_part,
)
from zoo.store.keys import load_public_key, load_signing_key
from zoo.store.record import ObjectRef, make_record
from zoo.store.store import Store, open_store

WRITES = r"^(PUT|POST|DELETE) "


def records_for(count: int, sign_key: Any = None, model: str = "m") -> dict[str, bytes]:
    """``count`` valid records under distinct identities: key -> bytes."""
    found = {}
    objects = [ObjectRef("m.pt", "a" * 64, 10), ObjectRef("m.pt.manifest.json", "b" * 64, 5)]
    for _ in range(count):
        identity = secrets.token_hex(32)
        record = make_record({"identity": identity, "identity_source": "manifest",
                              "model": model, "format": "torchscript", "precision": "fp32",
                              "untrained": True, "artifact": "m.pt",
                              "manifest": "m.pt.manifest.json", "manifest_sha256": "b" * 64,
                              "size": 10}, objects, sign_key, "test")
        found[f"records/{identity}/{record.digest}.json"] = record.to_bytes()
    return found


def put_files(root: Path, files: dict[str, bytes]) -> None:
    """Write store files directly (as an older zoo, or anyone with write access, would)."""
    for key, blob in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(blob)


def put_s3(store: S3Store, files: dict[str, bytes]) -> None:
    import s3fs

    root = store.url.removeprefix("s3://")
    s3fs.S3FileSystem(**store.options).pipe({f"{root}/{k}": v for k, v in files.items()})


def local(root: Path, tmp_path: Path, name: str = "cache") -> Store:
    return open_store(root, record_cache=tmp_path / name / "records")


def shown(listed: list[Any]) -> dict[str, str | None]:
    """key -> model (None for an item with an error)."""
    return {i.key: (i.record.statement.model if i.record else None) for i in listed}


def only_head(root: Path) -> Path:
    heads = sorted((root / SNAPSHOTS).iterdir())
    assert len(heads) == 1
    return heads[0]


def rename_by_hash(path: Path, blob: bytes) -> Path:
    """Write ``blob`` as a head named by its own sha256 (what a forger would do)."""
    stamp_part = path.name.split("-", 1)[0]
    new = path.with_name(f"{stamp_part}-{hashlib.sha256(blob).hexdigest()}.json")
    path.unlink()
    new.write_bytes(blob)
    return new


# -- S3: coverage, journal, no writes ---------------------------------------------------------

def test_the_index_stands_for_records_and_a_reader_writes_nothing(
        s3_store: S3Store, tmp_path: Path, keys: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    team = load_signing_key(keys.team)
    records = records_for(40, team)
    put_s3(s3_store, records)
    result = open_store(s3_store.url, s3_store.options, record_cache=False).index(team)
    assert result.snapshot.records == 40 and result.key.startswith(SNAPSHOTS)

    with fault_proxy(s3_store.server) as proxy:
        proxy.fail_when(WRITES, 403)  # read-only credentials
        options = {**s3_store.options, "endpoint_url": proxy.url}
        store = open_store(s3_store.url, options, record_cache=tmp_path / "c" / "records")
        listed = list(store.records(None, [load_public_key(keys.team_pub)]))
        assert sorted(shown(listed)) == sorted(records)
        assert {i.signature for i in listed} == {"trusted"}
        assert store.listing is not None and store.listing.source == "index"
        assert store.listing.indexed == 40 and store.listing.journal == 0
        assert proxy.count(r"GET /[^?]*/team/records/") == 0  # no record read one by one
        assert proxy.count(r"prefix=team%2Frecords") == 0  # records/ not listed
        assert proxy.count(WRITES) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_reader_of_a_big_store_without_index_writes_nothing(
        s3_store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Readers used to leave a pack (a PUT) after reading 256+ records one by one."""
    records = records_for(300)
    put_s3(s3_store, records)
    with fault_proxy(s3_store.server) as proxy:
        proxy.fail_when(WRITES, 403)
        options = {**s3_store.options, "endpoint_url": proxy.url}
        store = open_store(s3_store.url, options, record_cache=tmp_path / "c" / "records")
        assert sorted(shown(list(store.records()))) == sorted(records)
        assert store.listing is not None and store.listing.source == "records"
        assert proxy.count(WRITES) == 0
    assert "warning" not in capsys.readouterr().err


def test_records_published_after_the_index_are_listed(
        s3_store: S3Store, tmp_path: Path, export_dir: Path) -> None:
    writer = open_store(s3_store.url, s3_store.options, record_cache=False)
    put_s3(s3_store, records_for(5))
    writer.index()
    published = writer.publish(export_dir)  # writes a journal entry, then the record
    late = records_for(1, model="late")  # written as a zoo without the journal would
    put_s3(s3_store, late)

    store = open_store(s3_store.url, s3_store.options, record_cache=tmp_path / "a" / "records")
    listed = shown(list(store.records()))
    assert published.record_key in listed and len(listed) == 6
    assert store.listing is not None and store.listing.journal == 1
    assert next(iter(late)) not in listed  # no journal entry: until the next index ...
    full = shown(list(store.records(full=True)))
    assert next(iter(late)) in full and len(full) == 7  # ... or a full listing

    writer.index()
    again = open_store(s3_store.url, s3_store.options, record_cache=False)
    assert len(shown(list(again.records()))) == 7
    assert again.listing is not None and again.listing.indexed == 7


# -- file://: what the index cannot add, alter or hide ----------------------------------------

def test_an_altered_entry_is_named_and_the_true_record_shown(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A forger rewrites a part (and an unsigned head naming it): the entry's bytes no longer
    hash to its key, so the record itself is read."""
    root = tmp_path / "store"
    records = records_for(3)
    put_files(root, records)
    local(root, tmp_path, "w").index()
    victim = sorted(records)[0]
    part = next((root / PARTS).iterdir())
    data = json.loads(part.read_bytes())
    data["records"][victim] = data["records"][victim].replace('"model": "m"', '"model": "evil"')
    body = json.dumps(data).encode()
    part.unlink()
    new_part = root / PARTS / f"{hashlib.sha256(body).hexdigest()}.json"
    new_part.write_bytes(body)
    head = only_head(root)
    statement = json.loads(head.read_bytes())["statement"]
    statement["parts"] = [{"sha256": hashlib.sha256(body).hexdigest(), "size": len(body),
                           "records": 3}]
    rename_by_hash(head, json.dumps({"statement": statement, "signature": None}).encode())

    listed = shown(list(local(root, tmp_path).records()))
    assert listed == {k: "m" for k in records}
    err = capsys.readouterr().err
    assert f"the index's copy of {victim} does not hash to its name" in err


@pytest.mark.parametrize("attack", ["part", "signature", "hostile", "huge", "unsigned"])
def test_a_refused_snapshot_is_named_and_records_listed_key_by_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: Any, attack: str) -> None:
    root = tmp_path / "store"
    team = load_signing_key(keys.team)
    records = records_for(4, team)
    put_files(root, records)
    local(root, tmp_path, "w").index(None if attack == "unsigned" else team)
    head = only_head(root)
    if attack == "part":  # a part's bytes changed under a signed head
        part = next((root / PARTS).iterdir())
        part.write_bytes(part.read_bytes().replace(b'\\"m\\"', b'\\"x\\"'))
        expected = "its bytes are not the ones the snapshot names"
    elif attack == "signature":  # a signed statement edited (renamed by its new hash)
        data = json.loads(head.read_bytes())
        data["statement"]["records"] = data["statement"]["parts"][0]["records"] = 3
        rename_by_hash(head, json.dumps(data).encode())
        expected = "its signature does not verify"
    elif attack == "hostile":
        rename_by_hash(head, b"[" * 100_000)
        expected = "not a valid snapshot"
    elif attack == "huge":
        rename_by_hash(head, b" " * (MAX_HEAD_BYTES + 10))
        expected = f"more than {MAX_HEAD_BYTES} bytes"
    else:
        expected = "unsigned, and a trusted key is required"

    store = local(root, tmp_path)
    listed = list(store.records(None, [load_public_key(keys.team_pub)]))
    assert shown(listed) == {k: "m" for k in records}
    assert {i.signature for i in listed} == {"trusted"}
    assert store.listing is not None and store.listing.source == "records"
    err = capsys.readouterr().err
    assert expected in err and f"index {SNAPSHOTS}" in err


def test_a_deleted_record_is_shown_honestly_and_revocations_win(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: Any) -> None:
    root = tmp_path / "store"
    team = load_signing_key(keys.team)
    records = records_for(3, team)
    put_files(root, records)
    writer = local(root, tmp_path, "w")
    writer.index(team)
    gone, revoked = sorted(records)[:2]
    (root / gone).unlink()
    writer.revoke(revoked, team, "bad weights")

    store = local(root, tmp_path)
    listed = {i.key: i for i in store.records()}
    assert gone in listed and store.listing is not None and store.listing.source == "index"
    assert listed[revoked].revoked and "bad weights" in listed[revoked].revoked
    assert gone not in shown(list(store.records(full=True)))

    url = root.as_uri()
    assert main(["store", "list", "--store", url]) == 0
    err = capsys.readouterr().err
    assert "listed through the store's index" in err and "--full" in err
    assert main(["store", "list", "--store", url, "--json", "--full"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["listing"]["source"] == "records" and len(data["records"]) == 2
    assert [r["revoked"] is not None for r in data["records"]].count(True) == 1


def test_cli_index_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            keys: Any) -> None:
    root = tmp_path / "store"
    records = records_for(3, load_signing_key(keys.team))
    put_files(root, records)
    (root / "records" / "junk.json").write_bytes(b"{}")
    url = root.as_uri()
    assert main(["store", "index", "--store", url, "--sign", str(keys.team), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["records"] == 3 and result["skipped"][0]["record"] == "records/junk.json"
    assert main(["store", "list", "--store", url, "--json", "--trusted-key",
                 str(keys.team_pub)]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["listing"]["source"] == "index" and data["listing"]["indexed"] == 3
    assert {r["signature"] for r in data["records"]} == {"trusted"} and not err
    assert main(["store", "index", "--store", url]) == 0
    assert "indexed 3 records" in capsys.readouterr().out


def test_a_store_without_index_and_an_empty_index_list_alike(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    assert list(local(root, tmp_path).records()) == []
    local(root, tmp_path).index()
    records = records_for(2)
    for key, blob in records.items():  # published after the index, with journal entries
        put_files(root, {journal_key(key): b"", key: blob})
    put_files(root, {journal_key(records_for(1).popitem()[0]): b""})  # record never written
    listed = shown(list(local(root, tmp_path).records()))
    assert listed == {k: "m" for k in records}


# -- the formats, hostile input -----------------------------------------------------------------

def test_hostile_heads_and_parts_are_refused() -> None:
    for blob in (b"[" * 100_000, b'{"statement": {}, "statement": {}, "signature": null}',
                 b'{"statement": {"schema": "zoo-store-index/1"}, "signature": null}'):
        with pytest.raises(IndexFormatError):
            parse_snapshot(blob)
    good = {"schema": "zoo-store-index/1", "taken_at": "2026-12-04T17:02:57.123456Z",
            "records": 1, "parts": [{"sha256": "a" * 64, "size": 100, "records": 1}],
            "publisher": "zoo", "nonce": "0" * 16}
    assert parse_snapshot(json.dumps({"statement": good, "signature": None}).encode()).records
    for change in ({"records": 2}, {"parts": [{"sha256": "a" * 64, "size": 1 << 40,
                                                "records": 1}]}, {"taken_at": "yesterday"}):
        with pytest.raises(IndexFormatError):
            parse_snapshot(json.dumps({"statement": {**good, **change},
                                       "signature": None}).encode())
    with pytest.raises(IndexFormatError):
        unpack_part(b"[" * 100_000, 1)
    with pytest.raises(IndexFormatError):
        unpack_part(json.dumps({"zoo_index_part": 1, "records": {"x": "y"}}).encode(), 1)
    assert stamp("2026-12-04T17:02:57.123456Z") == "20261204T170257123456Z"


@pytest.mark.parametrize("url", ["file", "memory"])
def test_listing_after_a_key(tmp_path: Path, url: str) -> None:
    """Transport.list(prefix, start_after): only keys after it (S3 sends only those)."""
    store = open_store(tmp_path / "s" if url == "file" else
                       f"memory://zoo-{secrets.token_hex(4)}", record_cache=False)
    for name in ("a", "b", "c"):
        store.transport.write_new(f"index/journal/{name}", b"")
    assert [k for k, _ in store.transport.list("index/journal/", "index/journal/a")] == \
        ["index/journal/b", "index/journal/c"]
    assert len(store.transport.list("index/journal/")) == 3


def _plant_head(root: Path, taken_at: str, part_refs: list[Any], sign_key: Any = None) -> Path:
    """A head written straight into the store by someone with write access."""
    from zoo.store.index import make_snapshot

    snap = make_snapshot(taken_at, part_refs, sign_key, "planted")
    path = root / snap.key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(snap.to_bytes())
    return path


def test_a_head_dated_in_the_future_is_not_used(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A head stamped 2099 naming no records would hide every record (and every later
    journal entry) from readers, for good: it is refused, and verify names it."""
    root = tmp_path / "store"
    records = records_for(4)
    put_files(root, records)
    local(root, tmp_path, "w").index()
    planted = _plant_head(root, "2099-01-01T00:00:00.000000Z", [])

    store = local(root, tmp_path)
    assert shown(list(store.records())) == {k: "m" for k in records}
    assert store.listing is not None and store.listing.source == "index"
    assert store.listing.indexed == 4
    assert "dated in the future" in capsys.readouterr().err
    problems = {p["key"]: p["problem"] for p in local(root, tmp_path, "v").audit_index()}
    assert "dated in the future" in problems[str(planted.relative_to(root))]


def test_unsigned_heads_newer_than_the_trusted_one_do_not_push_it_out(
        tmp_path: Path, keys: Any) -> None:
    """With trusted keys, a writer's planted unsigned heads (newer, more than a few) are read
    and passed over, their parts never read; the trusted snapshot still stands."""
    from zoo.store.record import now_utc

    root = tmp_path / "store"
    team = load_signing_key(keys.team)
    records = records_for(3, team)
    put_files(root, records)
    local(root, tmp_path, "w").index(team)
    from zoo.store.index import PartRef

    for _ in range(5):  # each names a part that does not exist: it is never read
        _plant_head(root, now_utc(), [PartRef("0" * 64, 10, 1)])
    store = local(root, tmp_path)
    listed = list(store.records(None, [load_public_key(keys.team_pub)]))
    assert shown(listed) == {k: "m" for k in records}
    assert store.listing is not None and store.listing.source == "index"
    assert store.listing.signer is not None


def test_an_index_this_reader_cannot_read_falls_back_to_records(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A part this reader cannot read (here: a link, which a file:// store never follows; on
    S3, credentials that do not cover index/) lists key by key with one warning, not
    exit 1."""
    root = tmp_path / "store"
    records = records_for(3)
    put_files(root, records)
    local(root, tmp_path, "w").index()
    part = next((root / PARTS).iterdir())
    part.rename(tmp_path / "elsewhere.json")
    part.symlink_to(tmp_path / "elsewhere.json")
    store = local(root, tmp_path)
    assert shown(list(store.records())) == {k: "m" for k in records}
    assert store.listing is not None and store.listing.source == "records"
    assert "not used" in capsys.readouterr().err
