"""The team store against a real S3 API (moto's server on 127.0.0.1, bytes over HTTP) and
file:// stores: publish, pull byte-identical files, signatures, tampering, layout."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.s3server import S3Store, fault_proxy
from zoo.errors import UsageError
from zoo.store import StoreConfigError, StoreRefusedError, open_store
from zoo.store.keys import load_public_key, load_signing_key
from zoo.store.record import Record, make_record, parse_record

pytest.importorskip("s3fs")
pytest.importorskip("cryptography")


# -- helpers ----------------------------------------------------------------------------------

def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_path(folder: Path) -> Path:
    return next(folder.glob("*.manifest.json"))


def rewrite_sums(folder: Path) -> None:
    """SHA256SUMS for every file in the folder (as the exporter writes it)."""
    lines = [f"{sha(p.read_bytes())}  {p.relative_to(folder).as_posix()}\n"
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "SHA256SUMS"]
    (folder / "SHA256SUMS").write_text("".join(lines))


def edit_manifest(folder: Path, change: Any) -> None:
    path = manifest_path(folder)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    rewrite_sums(folder)


def copy_export(export_dir: Path, dest: Path, identity: str | None = None) -> Path:
    shutil.copytree(export_dir, dest)
    if identity is not None:
        edit_manifest(dest, lambda m: m["export"].__setitem__("identity", identity))
    return dest


def s3fs_for(store: S3Store) -> Any:
    import s3fs

    return s3fs.S3FileSystem(**store.options)


def flip_byte(data: bytes, at: int | None = None) -> bytes:
    at = len(data) // 2 if at is None else at
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


# -- publish and pull -------------------------------------------------------------------------

def test_two_machines_share_a_signed_artifact_byte_identical(
        s3_store: S3Store, export_dir: Path, keys: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "machine_a"))
    publisher = open_store(s3_store.url, s3_store.options)
    result = publisher.publish(export_dir, sign_key=load_signing_key(keys.team))
    assert result.uploaded and not result.present and not result.already
    statement = result.record.statement
    assert statement.model == "single_conv" and statement.format == "torchscript"
    assert statement.untrained is True
    assert result.record.signature is not None

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "machine_b"))
    puller = open_store(s3_store.url, s3_store.options)
    out = tmp_path / "pulled"
    hit = puller.pull(result.identity, out, [load_public_key(keys.team_pub)])
    assert hit is not None and hit.signature == "trusted"
    assert hit.signer == load_public_key(keys.team_pub).short
    original = files_of(export_dir)
    pulled = files_of(out)
    assert set(pulled) == set(original)
    for name in original:
        if name != "SHA256SUMS":
            assert pulled[name] == original[name], name
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not list(out.glob(".zoo-pull-*"))


def test_layout_is_content_addressed_with_one_record_named_by_its_hash(
        s3_store: S3Store, export_dir: Path) -> None:
    store = open_store(s3_store.url, s3_store.options)
    result = store.publish(export_dir)
    fs = s3fs_for(s3_store)
    root = s3_store.url.removeprefix("s3://")
    keys_found = sorted(p.removeprefix(root + "/") for p in fs.find(root))
    objects = [k for k in keys_found if k.startswith("objects/sha256/")]
    records = [k for k in keys_found if k.startswith("records/")]
    assert records == [result.record_key]
    assert len(objects) == len({o.sha256 for o in result.record.statement.objects})
    for key in objects:
        assert sha(fs.cat_file(f"{root}/{key}")) == key.rsplit("/", 1)[1]
    blob = fs.cat_file(f"{root}/{result.record_key}")
    assert result.record_key == f"records/{result.identity}/{sha(blob)}.json"
    assert parse_record(blob).statement == result.record.statement


def test_publishing_again_sends_nothing_and_keeps_one_record(
        s3_store: S3Store, export_dir: Path, keys: Any, tmp_path: Path) -> None:
    store = open_store(s3_store.url, s3_store.options)
    first = store.publish(export_dir)
    again = store.publish(export_dir)
    assert again.already and again.uploaded == [] and again.bytes_uploaded == 0
    assert again.record_key == first.record_key
    signed = store.publish(export_dir, sign_key=load_signing_key(keys.team))
    assert not signed.already and signed.uploaded == [] and signed.bytes_uploaded == 0
    assert len(store.lookup(first.identity)) == 2


def test_pull_of_an_unknown_identity_is_a_miss(s3_store: S3Store, tmp_path: Path) -> None:
    store = open_store(s3_store.url, s3_store.options)
    assert store.pull("ab" * 32, tmp_path / "out") is None
    with pytest.raises(StoreConfigError, match="identity"):
        store.pull("../etc", tmp_path / "out")


@pytest.mark.parametrize("form", ["file-url", "plain-path"])
def test_file_store_roundtrip(form: str, export_dir: Path, keys: Any, tmp_path: Path) -> None:
    shared = tmp_path / "shared disk"
    url = shared.as_uri() if form == "file-url" else str(shared)
    result = open_store(url).publish(export_dir / "single_conv.pt",
                                     sign_key=load_signing_key(keys.team))
    assert (shared / result.record_key).is_file()
    assert not list((shared / "tmp").iterdir())  # temp files were renamed into place
    out = tmp_path / "out"
    hit = open_store(url).pull(result.identity, out, [load_public_key(keys.team_pub)])
    assert hit is not None
    assert (out / "single_conv.pt").read_bytes() == (export_dir / "single_conv.pt").read_bytes()


def test_publish_accepts_the_manifest_and_refuses_a_changed_artifact(
        export_dir: Path, tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    assert store.publish(export_dir / "single_conv.pt.manifest.json").record.statement.artifact \
        == "single_conv.pt"
    changed = copy_export(export_dir, tmp_path / "changed")
    art = changed / "single_conv.pt"
    art.write_bytes(flip_byte(art.read_bytes()))
    with pytest.raises(UsageError, match="differ from its manifest"):
        store.publish(changed)
    with pytest.raises(UsageError, match="no zoo manifest"):
        store.publish(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        store.publish(tmp_path / "nothing")


def test_folder_artifact_roundtrip(export_dir: Path, tmp_path: Path) -> None:
    """A folder artifact (like a .mlpackage): every file inside is an object."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "model.mlpackage" / "Data").mkdir(parents=True)
    inside = {"Manifest.json": b'{"x": 1}', "Data/weights.bin": os.urandom(5000),
              "Data/copy.bin": b"same", "Data/copy2.bin": b"same"}
    for rel, data in inside.items():
        (folder / "model.mlpackage" / rel).write_bytes(data)
    raw = json.loads((export_dir / "single_conv.pt.manifest.json").read_text())
    from zoo.store.export_folder import tree_digest
    from zoo.store.record import ObjectRef

    refs = [ObjectRef(rel, sha(data), len(data)) for rel, data in sorted(inside.items())]
    raw["artifact"] = {"file": "model.mlpackage", "size": sum(r.size for r in refs),
                       "sha256": tree_digest(refs), "files": [r.as_dict() for r in refs]}
    raw["export"].update(file="model.mlpackage", format="coreml", operators_file=None)
    (folder / "model.mlpackage.manifest.json").write_text(json.dumps(raw))
    store = open_store(tmp_path / "store")
    result = store.publish(folder)
    assert {o.path for o in result.record.statement.objects} >= {
        f"model.mlpackage/{rel}" for rel in inside}
    out = tmp_path / "out"
    assert store.pull(result.identity, out) is not None
    for rel, data in inside.items():
        assert (out / "model.mlpackage" / rel).read_bytes() == data


# -- signatures -------------------------------------------------------------------------------

def test_keys_made_by_openssl_and_bad_key_files(keys: Any, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    team = load_signing_key(keys.team)
    assert team.public.fingerprint == load_public_key(keys.team_pub).fingerprint
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(keys.team_pub), "-outform",
                          "DER"], capture_output=True, check=True).stdout
    assert team.public.fingerprint == sha(der[-32:])  # the documented openssl recipe
    with pytest.raises(StoreConfigError, match="public key"):
        load_signing_key(keys.team_pub)
    with pytest.raises(StoreConfigError, match="private key"):
        load_public_key(keys.team)
    with pytest.raises(StoreConfigError, match="Ed25519"):
        load_signing_key(keys.rsa)
    with pytest.raises(StoreConfigError, match="no such file"):
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(StoreConfigError, match="ZOO_KEY_PASSPHRASE"):
        load_signing_key(keys.locked)
    monkeypatch.setenv("ZOO_KEY_PASSPHRASE", "hunter2")
    assert load_signing_key(keys.locked).public.raw
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(StoreConfigError, match="not a PEM public key"):
        load_public_key(garbage)


def test_unsigned_and_other_key_records_are_refused_when_a_key_is_trusted(
        s3_store: S3Store, export_dir: Path, keys: Any, tmp_path: Path) -> None:
    store = open_store(s3_store.url, s3_store.options)
    trusted = [load_public_key(keys.team_pub)]
    unsigned = store.publish(export_dir)
    with pytest.raises(StoreRefusedError, match="unsigned, and a trusted key is required"):
        store.pull(unsigned.identity, tmp_path / "a", trusted)
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    store.publish(export_dir, sign_key=load_signing_key(keys.other))
    with pytest.raises(StoreRefusedError, match="which is not a trusted key") as caught:
        store.pull(unsigned.identity, tmp_path / "b", trusted)
    assert len(caught.value.reasons) == 2
    # without trusted keys both are acceptable; the newest (signed by "other") wins
    hit = store.pull(unsigned.identity, tmp_path / "c")
    assert hit is not None and hit.signature == "valid"
    # once the team key has signed, its record is chosen and the others are reported
    store.publish(export_dir, sign_key=load_signing_key(keys.team))
    hit = store.pull(unsigned.identity, tmp_path / "d", trusted)
    assert hit is not None and hit.signature == "trusted" and len(hit.skipped) == 2


def _rewrite_record(s3_store: S3Store, key: str, record_bytes: bytes) -> str:
    """Replace a record by new bytes under the name of their hash; returns the new key."""
    fs = s3fs_for(s3_store)
    root = s3_store.url.removeprefix("s3://")
    identity = key.split("/")[1]
    fs.rm(f"{root}/{key}")
    new_key = f"records/{identity}/{sha(record_bytes)}.json"
    fs.pipe(f"{root}/{new_key}", record_bytes)
    return new_key


def test_a_record_altered_after_signing_is_refused(
        s3_store: S3Store, export_dir: Path, keys: Any, tmp_path: Path) -> None:
    store = open_store(s3_store.url, s3_store.options, record_cache=False)
    result = store.publish(export_dir, sign_key=load_signing_key(keys.team))
    data = json.loads(result.record.to_bytes())
    data["statement"]["precision"] = "int8"
    key = _rewrite_record(s3_store, result.record_key, json.dumps(data).encode())
    with pytest.raises(StoreRefusedError, match="signature does not verify"):
        store.pull(result.identity, tmp_path / "out")
    # the same edit without renaming: the name no longer matches the bytes
    fs = s3fs_for(s3_store)
    root = s3_store.url.removeprefix("s3://")
    fs.pipe(f"{root}/{key}", result.record.to_bytes().replace(b'"fp32"', b'"fp16"'))
    with pytest.raises(StoreRefusedError, match="do not match its name"):
        store.pull(result.identity, tmp_path / "out2")


# -- tampering with objects -------------------------------------------------------------------

@pytest.mark.parametrize("target", ["single_conv.pt", "single_conv.pt.manifest.json",
                                    "single_conv.pt.ops.yaml", "SHA256SUMS"])
def test_a_flipped_byte_in_any_object_is_refused_and_nothing_installed(
        target: str, s3_store: S3Store, export_dir: Path, keys: Any, tmp_path: Path) -> None:
    store = open_store(s3_store.url, s3_store.options)
    result = store.publish(export_dir, sign_key=load_signing_key(keys.team))
    obj = next(o for o in result.record.statement.objects if o.path == target)
    fs = s3fs_for(s3_store)
    path = f"{s3_store.url.removeprefix('s3://')}/objects/sha256/{obj.sha256}"
    fs.pipe(path, flip_byte(fs.cat_file(path)))
    out = tmp_path / "out"
    with pytest.raises(StoreRefusedError, match=f"object {target}: sha256 .* differs"):
        store.pull(result.identity, out, [load_public_key(keys.team_pub)])
    assert list(out.iterdir()) == []


def test_truncated_or_missing_objects_are_refused(
        s3_store: S3Store, export_dir: Path, tmp_path: Path) -> None:
    store = open_store(s3_store.url, s3_store.options)
    result = store.publish(export_dir)
    fs = s3fs_for(s3_store)
    root = s3_store.url.removeprefix("s3://")
    art = next(o for o in result.record.statement.objects if o.path == "single_conv.pt")
    fs.pipe(f"{root}/objects/sha256/{art.sha256}", b"short")
    with pytest.raises(StoreRefusedError, match="does not have the recorded"):
        store.pull(result.identity, tmp_path / "a")
    fs.rm(f"{root}/objects/sha256/{art.sha256}")
    with pytest.raises(StoreRefusedError, match="missing from the store"):
        store.pull(result.identity, tmp_path / "b")


def test_a_record_filed_under_another_identity_is_refused(
        export_dir: Path, keys: Any, tmp_path: Path) -> None:
    """A correctly signed record whose identity is not the manifest's (a mis-keyed entry
    would poison every fetch of that identity)."""
    store = open_store(tmp_path / "store")
    sign = load_signing_key(keys.team)
    real = store.publish(export_dir, sign_key=sign).record.statement
    fields = {k: getattr(real, k) for k in ("identity_source", "model", "format", "precision",
                                            "untrained", "artifact", "manifest",
                                            "manifest_sha256", "size")}
    other = "cd" * 32
    forged = make_record({**fields, "identity": other}, list(real.objects), sign, "zoo test")
    blob = forged.to_bytes()
    target = tmp_path / "store" / "records" / other / f"{sha(blob)}.json"
    target.parent.mkdir(parents=True)
    target.write_bytes(blob)
    with pytest.raises(StoreRefusedError, match="identity: the record says cdcdcdcd"):
        store.pull(other, tmp_path / "out", [load_public_key(keys.team_pub)])


def test_hostile_records_never_write_outside_the_destination(
        export_dir: Path, keys: Any, tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    real = store.publish(export_dir).record
    data = json.loads(real.to_bytes())
    data["statement"]["objects"][0]["path"] = "../../escaped"
    blob = json.dumps(data).encode()
    folder = tmp_path / "store" / "records" / real.statement.identity
    (folder / f"{sha(blob)}.json").write_bytes(blob)
    for bad in (b"[1, 2]", b"\xff\xfe", b'{"statement": {}, "signature": null}',
                b'{"statement": 1, "statement": 2, "signature": null}'):
        (folder / f"{sha(bad)}.json").write_bytes(bad)
    (folder / "not-a-hash.json").write_bytes(b"{}")
    hit = store.pull(real.statement.identity, tmp_path / "dest" / "out")
    assert hit is not None  # the genuine record still wins
    assert len(hit.skipped) == 6
    assert any("not a safe relative path" in s for s in hit.skipped)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "dest" / "escaped").exists()


def test_half_finished_publish_is_invisible(
        s3_store: S3Store, export_dir: Path, tmp_path: Path) -> None:
    """A publish whose record write fails (the process died there) leaves objects only:
    pull misses, list shows nothing, verify lists the objects as unreferenced."""
    with fault_proxy(s3_store.server) as proxy:
        proxy.fail_when(r"^PUT /[^ ]*/records/", 500)
        store = open_store(s3_store.url, s3_store.server.options(proxy.url), attempts=2,
                           backoff=0.01)
        from zoo.store import StoreError

        with pytest.raises(StoreError):
            store.publish(export_dir)
        assert proxy.count(r"^PUT /[^ ]*/objects/sha256/") == 4
    store = open_store(s3_store.url, s3_store.options)
    identity = json.loads((export_dir / "single_conv.pt.manifest.json").read_text())[
        "export"].get("identity")
    listed = list(store.records())
    assert listed == []
    if identity:
        assert store.pull(identity, tmp_path / "out") is None
    report = store.verify()
    assert report.ok and report.records == [] and len(report.unreferenced) == 4


def test_record_round_trip_and_limits() -> None:
    from zoo.store.record import ObjectRef, RecordError

    objects = [ObjectRef("a.pt", "0" * 64, 3), ObjectRef("a.pt.manifest.json", "1" * 64, 4)]
    fields = {"identity": "2" * 64, "identity_source": "manifest", "model": "m",
              "format": "torchscript", "precision": "fp32", "untrained": False,
              "artifact": "a.pt", "manifest": "a.pt.manifest.json",
              "manifest_sha256": "1" * 64, "size": 3}
    record = make_record(fields, objects, None, "zoo test")
    assert parse_record(record.to_bytes()) == record
    for change, message in (({"size": 4}, "size differs"), ({"model": "a b"}, "model"),
                            ({"artifact": "SHA256SUMS"}, "not allowed"),
                            ({"manifest_sha256": "3" * 64}, "manifest_sha256")):
        with pytest.raises(RecordError, match=message):
            make_record({**fields, **change}, objects, None, "zoo test")
    with pytest.raises(RecordError, match="does not belong"):
        make_record(fields, [*objects, ObjectRef("other.bin", "4" * 64, 1)], None, "zoo test")
    with pytest.raises(RecordError, match="larger than any record"):
        parse_record(b" " * (2 << 20))
    assert isinstance(record, Record)


def test_an_artifact_whose_embedded_manifest_differs_is_refused_by_the_pipeline_check(
        export_dir: Path, tmp_path: Path) -> None:
    """A sidecar edited after export (artifact untouched, so every hash in the record is
    consistent) is caught by comparing it with the manifest inside the artifact."""
    from zoo.store import StoreConfig

    folder = copy_export(export_dir, tmp_path / "edited")
    edit_manifest(folder, lambda m: m["model"].__setitem__("description", "edited"))
    url = str(tmp_path / "store")
    identity = open_store(url).publish(folder).identity
    assert open_store(url).pull(identity, tmp_path / "plain") is not None  # hashes agree
    warnings: list[str] = []
    config = StoreConfig(url=url, warn=warnings.append)
    assert config.pull_into(identity, tmp_path / "staging") is False
    assert "the manifest embedded in single_conv.pt differs" in warnings[0]
    assert not any((tmp_path / "staging").iterdir())


def test_listing_pages_through_the_store(s3_store: S3Store, export_dir: Path,
                                         tmp_path: Path) -> None:
    identities = [f"{i:x}" * 64 for i in range(1, 6)]
    folders = [copy_export(export_dir, tmp_path / f"v{i}", identity)
               for i, identity in enumerate(identities)]
    with fault_proxy(s3_store.server) as proxy:
        store = open_store(s3_store.url, s3_store.server.options(proxy.url))
        for folder in folders:
            store.publish(folder)
        store.transport.page_size = 2
        before = proxy.count(r"^GET .*list-type=2")
        listed = list(store.records())
        # 5 records, 2 per page: 3 listings, one of revocations/ (no tombstones) and one of
        # index/snapshots/ (no index)
        assert proxy.count(r"^GET .*list-type=2") - before == 3 + 1 + 1
    assert sorted(item.identity for item in listed) == identities
    assert all(item.record is not None for item in listed)


def test_pull_never_overwrites_and_verify_reports_leftovers(export_dir: Path,
                                                            tmp_path: Path) -> None:
    from zoo.store import StoreError

    store = open_store(tmp_path / "store")
    identity = store.publish(export_dir).identity
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "single_conv.pt").write_bytes(b"mine")
    with pytest.raises(StoreError, match="already there"):
        store.pull(identity, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["single_conv.pt"]
    assert (dest / "single_conv.pt").read_bytes() == b"mine"
    (tmp_path / "store" / "tmp" / "single_conv.pt.abc.tmp").write_bytes(b"half")
    report = store.verify()
    assert report.ok and report.leftovers == ["tmp/single_conv.pt.abc.tmp"]
