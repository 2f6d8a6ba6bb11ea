"""One reader of small JSON documents from outside: records, tombstones, manifests' facts, bench
files and cache records all refuse the same things the same way (tombstones accepted duplicate
keys and NaN while records refused duplicates: two parsers could read two meanings)."""

from __future__ import annotations

import pytest

from zoo._core.jsonio import JSONRefused, json_object
from zoo.bench.record import BenchRecordError, loads_record
from zoo.store.export_folder import parse_manifest
from zoo.store.record import RecordError, parse_record
from zoo.store.revocation import parse_revocation

HOSTILE = [
    (b'{"statement": {}, "statement": {}, "signature": {}}', "duplicate key 'statement'"),
    (b'{"statement": NaN, "signature": {}}', "NaN is not a number"),
    (b"\xff{}", "not UTF-8"),
    (b"[1]", "not a JSON object"),
    (b"{" * 50_000, "not valid JSON"),
]


@pytest.mark.parametrize(("blob", "said"), HOSTILE)
def test_every_reader_refuses_the_same_bytes_the_same_way(blob: bytes, said: str) -> None:
    with pytest.raises(JSONRefused, match=said):
        json_object(blob, 1 << 20)
    with pytest.raises(RecordError, match=said):
        parse_record(blob)
    with pytest.raises(RecordError, match=said):
        parse_revocation(blob)
    with pytest.raises(ValueError, match=said):
        parse_manifest(blob)
    with pytest.raises(BenchRecordError, match=said):
        loads_record(blob)


def test_size_is_checked_before_parsing() -> None:
    with pytest.raises(JSONRefused, match="larger than any tombstone"):
        json_object(b"{}" + b" " * 100, 10, "tombstone")
