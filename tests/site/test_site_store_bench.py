"""Bench records in the team store, as ``zoo site --store`` shows them: published with
:func:`zoo.store.bench_records.publish_bench` (what ``zoo bench --publish`` calls) to moto's S3
server or a file:// store, read back as hostile input, plotted beside ``--bench`` files with
their signer; tampered files are refused with a reason and the site still builds."""

from __future__ import annotations

import copy
import hashlib
import html
import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_zoo
from tests.site.test_site import record
from tests.support.s3server import Keys, S3Store
from zoo.store import open_store
from zoo.store.bench_records import PREFIX, bench_bytes, list_bench, publish_bench
from zoo.store.keys import load_public_key, load_signing_key

MODEL = "lraspp_mobilenet_v3_large"


def site(out: Path, *extra: str) -> str:
    proc = run_zoo(["site", "-o", str(out), "--no-overlays", *extra])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc.stdout


def text(markup: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def bench_groups(out: Path, model: str = MODEL) -> list[str]:
    page = (out / "models" / f"{model}.html").read_text(encoding="utf-8")
    return [text(g) for g in re.findall(r'<section class="bench-group".*?</section>', page,
                                        re.S)]


def test_published_records_are_plotted_with_their_signer(
        tmp_path: Path, s3_store: S3Store, keys: Keys) -> None:
    store = open_store(s3_store.url, s3_store.options, record_cache=False)
    signed = record("Intel Xeon Gold 6338", "0.1.0", 0.44, "2026-01-01T10:00:00Z")
    unsigned = record("AMD EPYC 7B13", "0.1.0", 0.61, "2026-01-02T10:00:00Z")
    key = load_signing_key(keys.team)
    first = publish_bench(store, signed, key)
    assert not first.already and first.key.startswith(f"{PREFIX}{MODEL}/")
    assert first.signer == key.public.short
    publish_bench(store, unsigned)
    local = tmp_path / "r0.bench.json"  # the signed record, also given as a file
    local.write_text(json.dumps(signed))
    out = tmp_path / "site"
    said = site(out, "--store", s3_store.url, *s3_store.server.store_options(),
                "--trusted-key", str(keys.team_pub), "--bench", str(local))
    assert "2 bench records" in said, said
    first_group, second_group = bench_groups(out)
    # the same record from a file and the store is one group, naming both and the signer
    assert "Intel Xeon Gold 6338" in first_group and "AMD" not in first_group
    assert "bench file r0.bench.json (unsigned)" in first_group
    assert f"the team store, signed by {key.public.short} (a trusted key)" in first_group
    assert "onnx fp32 ok 0.44" in first_group and "onnx int8 ok 0.35" in first_group
    assert "AMD EPYC 7B13" in second_group and "the team store, unsigned" in second_group
    assert "onnx fp32 ok 0.61" in second_group and "bench file" not in second_group
    store_page = text((out / "store.html").read_text(encoding="utf-8"))
    assert "holds 2 bench record(s) of this catalogue's models (1 signed)" in store_page
    # another trusted key: the same signature is shown as not vouched for
    site(out, "--store", s3_store.url, *s3_store.server.store_options(),
         "--trusted-key", str(keys.other_pub))
    first_group = bench_groups(out)[0]
    assert f"signed by {key.public.short} (NOT one of the trusted keys)" in first_group
    assert 'class="origin warning"' in (out / "models" / f"{MODEL}.html").read_text()


def test_republishing_the_same_record_is_a_no_op(s3_store: S3Store, keys: Keys) -> None:
    import s3fs

    store = open_store(s3_store.url, s3_store.options, record_cache=False)
    rec = record("Intel Xeon", "0.1.0", 0.5, "2026-01-01T10:00:00Z")
    key = load_signing_key(keys.team)
    first = publish_bench(store, rec, key)
    fs = s3fs.S3FileSystem(**s3_store.options)
    path = f"{s3_store.bucket}/team/{first.key}"
    stamp = fs.info(path)["LastModified"]
    again = publish_bench(store, copy.deepcopy(rec), key)
    assert again.already and again.key == first.key
    assert fs.info(path)["LastModified"] == stamp  # not written again
    assert fs.find(f"{s3_store.bucket}/team/{PREFIX}") == [path]
    # the bytes are the key: a record read back hashes to its name
    blob = fs.cat(path)
    assert first.key.endswith(hashlib.sha256(blob).hexdigest() + ".json")
    assert blob == bench_bytes(rec, key)


def _plant(store_dir: Path, model: str, blob: bytes, name: str | None = None) -> str:
    folder = store_dir / "bench" / model
    folder.mkdir(parents=True, exist_ok=True)
    name = name or hashlib.sha256(blob).hexdigest()
    (folder / f"{name}.json").write_bytes(blob)
    return f"bench/{model}/{name}.json"


def test_tampered_bench_objects_are_refused_with_a_reason_and_the_site_still_builds(
        tmp_path: Path, keys: Keys) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = open_store(store_dir.as_uri(), record_cache=False)
    key = load_signing_key(keys.team)
    good = publish_bench(store, record("Good CPU", "0.1.0", 0.4, "2026-01-01T10:00:00Z"), key)
    # 1. bytes altered after publishing: they no longer hash to the name
    victim = publish_bench(store, record("Altered CPU", "0.1.0", 0.3, "2026-01-02T10:00:00Z"))
    path = store_dir / victim.key
    path.chmod(0o644)
    path.write_bytes(path.read_bytes().replace(b"Altered CPU", b"Altered GPU"))
    # 2. a signature over other numbers, filed under the new bytes' own hash
    forged = json.loads(bench_bytes(record("Forged CPU", "0.1.0", 0.2,
                                           "2026-01-03T10:00:00Z"), key))
    forged["bench"]["rows"][0]["ratio"]["median"] = 0.21
    bad_sig = _plant(store_dir, MODEL, json.dumps(forged).encode())
    # 3. hostile JSON: a duplicate key; 4. not JSON at all; 5. a record filed under another
    # model; 6. a name that is not a hash
    dup = _plant(store_dir, MODEL, b'{"schema": "zoo-bench-record/1", "schema": "x"}')
    junk = _plant(store_dir, MODEL, b"\xff\xfe not json")
    elsewhere = _plant(store_dir, "single_conv", bench_bytes(
        record("Moved CPU", "0.1.0", 0.5, "2026-01-04T10:00:00Z")))
    misnamed = _plant(store_dir, MODEL, b"{}", name="not-a-hash")

    listing = list_bench(store, None, [load_public_key(keys.team_pub)])
    assert [p.key for p in listing.records] == [good.key]
    reasons = dict(listing.refused)
    assert reasons[victim.key] == "its bytes do not match its name (altered after publishing)"
    assert "does not verify" in reasons[bad_sig] and key.public.short in reasons[bad_sig]
    assert "duplicate key 'schema'" in reasons[dup]
    assert reasons[junk] == "not UTF-8"
    assert reasons[elsewhere] == f"filed under model 'single_conv' but measures {MODEL!r}"
    assert "not a bench record name" in reasons[misnamed]

    out = tmp_path / "site"
    said = site(out, "--store", store_dir.as_uri(), "--trusted-key", str(keys.team_pub))
    assert "1 bench record, 6 refused" in said, said
    groups = bench_groups(out)
    assert len(groups) == 1 and "Good CPU" in groups[0] and "a trusted key" in groups[0]
    store_page = text((out / "store.html").read_text(encoding="utf-8"))
    for bad in (victim.key, bad_sig, dup, junk, elsewhere, misnamed):
        assert f"refused {bad}: {reasons[bad]}" in store_page
    model_page = text((out / "models" / f"{MODEL}.html").read_text(encoding="utf-8"))
    assert f"refused {victim.key}: its bytes do not match its name" in model_page
    assert "Forged CPU" not in model_page and "Altered" not in model_page.replace(
        f"refused {victim.key}", "")


def test_an_unreachable_store_says_why_in_the_bench_section_too(tmp_path: Path) -> None:
    out = tmp_path / "site"
    said = site(out, "--store", (tmp_path / "gone").as_uri())
    assert "NOT READ" in said
    page = text((out / "models" / f"{MODEL}.html").read_text(encoding="utf-8"))
    assert "could not be read" in page and bench_groups(out) == []


@pytest.mark.parametrize("hostile", [
    b'{"schema": "zoo-bench-record/1", "bench": {}, "signature": null}',
    b'{"schema": "zoo-bench-record/1", "bench": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"schema": "zoo-bench-record/1", "bench": {"zoo_bench": NaN}, "signature": null}',
])
def test_hostile_documents_are_one_line_refusals(tmp_path: Path, hostile: bytes) -> None:
    from zoo.store.bench_records import BenchObjectError, parse_bench

    key = f"bench/{MODEL}/{hashlib.sha256(hostile).hexdigest()}.json"
    with pytest.raises(BenchObjectError) as info:
        parse_bench(key, hostile)
    assert "\n" not in str(info.value) and str(info.value)


def test_an_oversize_object_is_refused_unread(tmp_path: Path) -> None:
    from zoo.store.bench_records import MAX_BYTES

    store_dir = tmp_path / "store"
    store_dir.mkdir()
    big = _plant(store_dir, MODEL, b" " * (MAX_BYTES + 1))
    listing = list_bench(open_store(store_dir.as_uri(), record_cache=False))
    assert dict(listing.refused)[big].endswith("is larger than any bench record")


def test_the_read_limit_is_shared_model_by_model(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Six records of one model before one of another in key order, a limit of four: the
    listing still reads the other model's record (in key order it was 'not read')."""
    import zoo.store.bench_records as bench_records

    monkeypatch.setattr(bench_records, "MAX_READ", 4)
    monkeypatch.setattr(bench_records, "_CHUNK", 2)
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = open_store(store_dir.as_uri(), record_cache=False)
    for day in range(1, 7):
        many = copy.deepcopy(record("AMD EPYC 7B13", "0.1.0", 0.5, f"2026-01-0{day}T10:00:00Z"))
        many["model"] = "deeplabv3_resnet50"
        publish_bench(store, many)
    publish_bench(store, record("AMD EPYC 7B13", "0.1.0", 0.5, "2026-02-01T10:00:00Z"))
    listing = list_bench(store)
    models = [p.record["model"] for p in listing.records]
    assert MODEL in models and models.count("deeplabv3_resnet50") == 3
    assert sum("limit of bench records is spent" in why for _, why in listing.refused) == 3
