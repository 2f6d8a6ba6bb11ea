"""Listing a big store without one request per record: a reader that fetched many records one
by one leaves a pack (packs/records/<sha256>.json), the next reader with an empty cache reads
the pack instead, and nothing in a pack is trusted (moto's S3 server behind a counting proxy)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from tests.support.s3server import S3Store, fault_proxy
from zoo.store.listing import PACK_MIN, PACKS
from zoo.store.record import ObjectRef, make_record
from zoo.store.store import open_store

COUNT = PACK_MIN + 20


def _fill(store: S3Store, count: int) -> dict[str, bytes]:
    """``count`` valid unsigned records under distinct identities; key -> bytes."""
    import s3fs

    fs = s3fs.S3FileSystem(**store.options)
    root = store.url.removeprefix("s3://")
    found = {}
    obj = ObjectRef("m.pt", "a" * 64, 10)
    for _ in range(count):
        identity = secrets.token_hex(32)
        record = make_record({"identity": identity, "identity_source": "manifest",
                              "model": "m", "format": "torchscript", "precision": "fp32",
                              "untrained": True, "artifact": "m.pt",
                              "manifest": "m.pt.manifest.json", "manifest_sha256": "b" * 64,
                              "size": 10}, [obj, ObjectRef("m.pt.manifest.json", "b" * 64, 5)],
                             None, "test")
        key = f"records/{identity}/{record.digest}.json"
        found[key] = record.to_bytes()
    fs.pipe({f"{root}/{k}": v for k, v in found.items()})
    return found


def test_a_second_reader_lists_from_the_pack_the_first_left(s3_store: S3Store,
                                                            tmp_path: Path) -> None:
    _fill(s3_store, COUNT)
    with fault_proxy(s3_store.server) as proxy:
        options = {**s3_store.options, "endpoint_url": proxy.url}
        first = list(open_store(s3_store.url, options, record_cache=tmp_path / "a").records())
        assert len(first) == COUNT and all(i.error is None for i in first)
        assert proxy.count(r"GET /[^?]*/team/records/") == COUNT  # read one by one, once
        packs = open_store(s3_store.url, s3_store.options).transport.list(PACKS)
        assert len(packs) == 1

        before = proxy.count(r"GET /[^?]*/team/records/")
        second = list(open_store(s3_store.url, options, record_cache=tmp_path / "b").records())
        assert [(i.key, i.record) for i in second] == [(i.key, i.record) for i in first]
        assert proxy.count(r"GET /[^?]*/team/records/") == before  # none read one by one
        assert proxy.count(r"GET /[^?]*/team/packs/records/") >= 1


def test_nothing_in_a_pack_is_trusted(s3_store: S3Store, tmp_path: Path) -> None:
    """An altered copy in a pack is not used (the record is read on its own), and a record
    that only a pack holds is never listed."""
    import hashlib

    import s3fs

    records = _fill(s3_store, COUNT)
    keys = sorted(records)
    altered_key, ghost_key = keys[0], keys[1]
    fs = s3fs.S3FileSystem(**s3_store.options)
    root = s3_store.url.removeprefix("s3://")
    fs.rm(f"{root}/{ghost_key}")  # deleted from records/: only the pack keeps a copy
    altered = records[altered_key].replace(b'"model": "m"', b'"model": "evil"')
    body = {hashlib.sha256(v).hexdigest() if k != altered_key else k.rsplit("/", 1)[1][:-5]:
            (altered if k == altered_key else v).decode("latin-1")
            for k, v in records.items()}
    pack = json.dumps({"zoo_record_pack": 1, "records": body}).encode()
    fs.pipe(f"{root}/{PACKS}{hashlib.sha256(pack).hexdigest()}.json", pack)

    listed = list(open_store(s3_store.url, s3_store.options, record_cache=tmp_path).records())
    assert ghost_key not in {i.key for i in listed}
    assert len(listed) == COUNT - 1 and all(i.error is None for i in listed)
    assert {i.record.statement.model for i in listed if i.record} == {"m"}


def test_a_hostile_pack_is_skipped_not_fatal() -> None:
    """A deeply nested or duplicate-keyed pack (anyone who can write packs/ can plant one)
    is dropped: it used to raise RecursionError out of every store listing."""
    from zoo.store.listing import _unpack

    assert _unpack(b"[" * 100_000) == {}
    assert _unpack(b'{"records": {}, "records": {"a": "b"}}') == {}
