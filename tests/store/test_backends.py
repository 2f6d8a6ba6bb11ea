"""The store's backends: each URL gets its backend once, when the transport opens it
(file:// -> LocalBackend, s3:// -> S3Backend, any other fsspec protocol -> FsspecBackend), and a
file system fsspec learns about at run time works as a store with no change to zoo."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any, ClassVar

import pytest

from zoo.store import StoreError, open_store
from zoo.store.backends import Backend, FsspecBackend
from zoo.store.backends_local import LocalBackend
from zoo.store.backends_s3 import S3Backend
from zoo.store.transport import SizeMismatch, Transport

pytest.importorskip("fsspec")
pytest.importorskip("s3fs")

_serial = itertools.count()


def _scratch_class() -> Any:
    """A file system zoo has never heard of: fsspec's in-memory one under a new protocol,
    ``zooscratch://``, with its own contents (not shared with ``memory://``)."""
    from fsspec.implementations.memory import MemoryFileSystem

    class Scratch(MemoryFileSystem):  # type: ignore[misc]
        protocol = ("zooscratch",)
        store: ClassVar[dict[str, Any]] = {}
        pseudo_dirs: ClassVar[list[str]] = [""]

        @classmethod
        def _strip_protocol(cls, path: Any) -> Any:
            if isinstance(path, str) and path.startswith("zooscratch://"):
                path = path[len("zooscratch://"):]
            return super()._strip_protocol(path)

    return Scratch


@pytest.fixture(name="scratch", scope="module")
def fixture_scratch() -> Any:
    import fsspec

    cls = _scratch_class()
    fsspec.register_implementation("zooscratch", cls, clobber=True)
    return cls


def fresh(protocol: str) -> str:
    """A store URL nobody has used in this process."""
    return f"{protocol}://zoo-test-{next(_serial)}-{id(_serial)}/team"


def transport_of(url: str, options: dict[str, Any] | None = None) -> Transport:
    return open_store(url, options).transport


def test_each_url_gets_its_backend(tmp_path: Path, scratch: Any) -> None:
    folder = tmp_path / "shared disk"
    cases: list[tuple[str, dict[str, Any] | None, type]] = [
        (folder.as_uri(), None, LocalBackend),
        (str(folder), None, LocalBackend),
        # nothing is contacted until first use: port 9 (discard) is never dialled here
        ("s3://team-zoo/prefix", {"endpoint_url": "http://127.0.0.1:9"}, S3Backend),
        ("s3a://team-zoo", {"endpoint_url": "http://127.0.0.1:9"}, S3Backend),
        (fresh("memory"), None, FsspecBackend),
        (fresh("zooscratch"), None, FsspecBackend),
    ]
    for url, options, kind in cases:
        transport = transport_of(url, options)
        assert type(transport.backend) is kind, url
        assert isinstance(transport.backend, Backend)
        assert (transport.local is not None) == (kind is LocalBackend), url
        assert transport.s3 == (kind is S3Backend), url
    local = transport_of(folder.as_uri())
    assert local.local == folder
    assert local.backend.folder == folder


@pytest.mark.parametrize("protocol", ["memory", "zooscratch"])
def test_a_generic_fsspec_store_reads_and_writes_through_the_transport(
        protocol: str, scratch: Any) -> None:
    transport = transport_of(fresh(protocol))
    with pytest.raises(StoreError, match="does not exist"):
        transport.check_root()  # nothing there yet: an error, not an empty store
    assert transport.size("objects/sha256/ab") is None
    assert transport.list("records/") == []
    transport.write_new("records/x/one.json", b'{"a": 1}')
    transport.put(b"0123456789", "objects/sha256/ten", 10, lambda n: None)
    transport.check_root()
    assert transport.size("objects/sha256/ten") == 10
    assert transport.size("objects") is None  # a folder is not an object
    assert transport.list("") == [("objects/sha256/ten", 10), ("records/x/one.json", 8)]
    blobs = transport.read_many(["records/x/one.json", "records/x/none.json"], 4)
    assert blobs["records/x/one.json"] == b'{"a":'  # limit + 1 bytes, so oversize shows
    assert isinstance(blobs["records/x/none.json"], FileNotFoundError)
    moved: list[int] = []
    digest = transport.get("objects/sha256/ten", None, 10, moved.append)
    assert digest == hashlib.sha256(b"0123456789").hexdigest() and sum(moved) == 10
    with pytest.raises(SizeMismatch):
        transport.get("objects/sha256/ten", None, 9, lambda n: None)
    with pytest.raises(FileNotFoundError):
        transport.get("objects/sha256/none", None, 1, lambda n: None)


def test_a_new_fsspec_protocol_is_a_team_store_with_no_code_change(
        scratch: Any, export_dir: Path, tmp_path: Path) -> None:
    url = fresh("zooscratch")
    store = open_store(url)
    result = store.publish(export_dir)
    assert type(store.transport.backend) is FsspecBackend
    assert any(name.startswith("/zoo-test-") for name in scratch.store)  # bytes went there
    assert [r.key for r in open_store(url).lookup(result.identity)] == [result.record_key]
    out = tmp_path / "out"
    assert open_store(url).pull(result.identity, out) is not None
    for path in export_dir.rglob("*"):
        if path.is_file():
            assert (out / path.relative_to(export_dir)).read_bytes() == path.read_bytes()
    report = open_store(url).verify()
    assert report.ok and report.objects_checked > 0 and not report.leftovers
