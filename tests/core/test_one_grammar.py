"""Rules that lived in several copies and now live once in zoo._core.names: the sha256
pattern (matched whole: a trailing newline is not part of a hash), the sidecar suffix and
the SHA256SUMS grammar (one reader, tolerant of bytes that are not UTF-8)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from zoo._core.names import HEX64, SIDECAR_SUFFIX, SUMS_LINE
from zoo.export.checksums import read_sums
from zoo.export.manifest import SIDECAR_SUFFIX as MANIFEST_SUFFIX
from zoo.weights.cache import WeightsCache

HEX = hashlib.sha256(b"zoo").hexdigest()


def test_a_hash_with_a_trailing_newline_is_not_a_hash() -> None:
    assert HEX64.fullmatch(HEX) and not HEX64.fullmatch(HEX + "\n")
    assert SUMS_LINE.match(f"{HEX}  model.ptl") and not SUMS_LINE.match(f"{HEX[:-1]}  x")
    assert SIDECAR_SUFFIX == MANIFEST_SUFFIX == ".manifest.json"


def test_the_weights_cache_lists_only_blobs_named_by_a_whole_hash(tmp_path: Path) -> None:
    """A file in the blob folder named 64 hex digits and a newline used to count as a blob
    (``^...$`` with ``match`` accepts a trailing newline)."""
    cache = WeightsCache(tmp_path)
    cache.blobs.mkdir(parents=True)
    (cache.blobs / (HEX + "\n")).write_bytes(b"zoo")
    (cache.blobs / HEX).write_bytes(b"zoo")
    assert [e.sha256 for e in cache.entries()] == [HEX]


def test_sha256sums_with_undecodable_bytes_is_read_not_raised(tmp_path: Path) -> None:
    """`zoo verify` read SHA256SUMS strictly as UTF-8 and raised on hostile bytes; the store
    read the same file leniently. One reader now: bad lines are ignored, good ones kept."""
    sums = tmp_path / "SHA256SUMS"
    sums.write_bytes(b"\xff\xfe\x00 not a line\n" + f"{HEX}  model.ptl\n".encode()
                     + b"\x80\x81  other\n")
    assert read_sums(sums) == {"model.ptl": HEX}


def test_one_rule_for_paths_from_outside() -> None:
    """Plans, locks and Ray results name files inside a folder: one rule says which do."""
    from zoo._core.names import inside

    assert inside("models/a.onnx") and inside("a")
    for bad in ("../x", "/etc/passwd", "a/../../b", "a\\b", "a\x00b"):
        assert not inside(bad), bad
