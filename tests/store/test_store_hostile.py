"""A store is hostile until checked: a missing or unreachable store is an error, a ``file://``
store yields only regular files (never a symbolic link, FIFO or device, and never hangs), and
nothing zoo prints carries a credential or a raw control character. Real ``python -m zoo``
processes against real folders and moto's S3 server."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import run_zoo
from tests.support.s3server import S3Store
from zoo.store import open_store
from zoo.store.errors import StoreError, StoreRefusedError
from zoo.weights.urls import redact_text

pytest.importorskip("fsspec")
CONTROL = ("\x1b", "\r", "\x07")


def _free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _no_control(*texts: str) -> None:
    for text in texts:
        for char in CONTROL:
            assert char not in text, (char, text)


def test_a_missing_store_is_an_error_and_an_empty_one_is_empty(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    for action in ("verify", "list"):
        proc = run_zoo(["store", action, "--store", str(missing)], timeout=120)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "STORE OK" not in proc.stdout
        [line] = proc.stderr.strip().splitlines()
        assert str(missing) in line and "does not exist" in line and "--store" in line
        assert "Traceback" not in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_zoo(["store", "verify", "--store", empty.as_uri()], timeout=120)
    assert proc.returncode == 0 and "STORE OK" in proc.stdout, proc.stderr
    proc = run_zoo(["store", "list", "--store", str(empty), "--json"], timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["records"] == []


def test_an_unreachable_or_missing_s3_store_is_an_error_in_bounded_time(
        s3_store: S3Store) -> None:
    port = _free_port()
    start = time.monotonic()
    proc = run_zoo(["store", "verify", "--store", "s3://team-zoo/prod",
                    f"--store-option=endpoint_url=http://127.0.0.1:{port}"], timeout=120)
    took = time.monotonic() - start
    assert proc.returncode == 1 and "STORE OK" not in proc.stdout
    assert "unreachable" in proc.stderr and "s3://team-zoo/prod" in proc.stderr
    assert took < 60
    nobucket = open_store(f"s3://{s3_store.bucket}-gone/team", s3_store.options, attempts=1)
    with pytest.raises(StoreError, match="does not exist"):
        list(nobucket.records())
    with pytest.raises(StoreError, match="does not exist"):
        nobucket.verify()
    assert open_store(s3_store.url, s3_store.options).verify().ok  # empty bucket: fine


def _published(tmp_path: Path, export_dir: Path) -> tuple[Path, str, list[str]]:
    """A file:// store holding one published export: (root, record key, object keys)."""
    root = tmp_path / "store"
    store = open_store(root, record_cache=False)
    result = store.publish(export_dir)
    objects = sorted(f"objects/sha256/{o.sha256}" for o in result.record.statement.objects)
    return root, result.record_key, objects


def test_symlinks_and_fifos_in_a_file_store_are_refused_without_hanging(
        tmp_path: Path, export_dir: Path) -> None:
    root, record, objects = _published(tmp_path, export_dir)
    identity = record.split("/")[1]
    secret = tmp_path / "secret.json"
    secret.write_text('{"not": "yours"}')
    # records/: a symbolic link to a file outside the store, and a FIFO (a reader would block)
    (root / "records" / identity / ("1" * 64 + ".json")).symlink_to(secret)
    os.mkfifo(root / "records" / identity / ("2" * 64 + ".json"))
    # objects/: a referenced object replaced by a symbolic link to a copy of the same bytes,
    # and a FIFO no record names
    victim = root / objects[0]
    copy = tmp_path / "copy"
    copy.write_bytes(victim.read_bytes())
    victim.unlink()
    victim.symlink_to(copy)
    os.mkfifo(root / "objects" / "sha256" / ("3" * 64))

    start = time.monotonic()
    proc = run_zoo(["store", "verify", "--store", str(root), "--json"], timeout=120)
    assert time.monotonic() - start < 60
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    problems = {e["record"]: " ".join(map(str, e["problems"])) for e in report["records"]}
    assert "symbolic link" in problems[f"records/{identity}/{'1' * 64}.json"]
    assert "FIFO" in problems[f"records/{identity}/{'2' * 64}.json"]
    assert "symbolic link" in problems[record] and "refused" in problems[record]
    assert f"objects/sha256/{'3' * 64}" in report["stray"]
    proc = run_zoo(["store", "verify", "--store", str(root)], timeout=120)
    assert proc.returncode == 1 and "STORE HAS PROBLEMS" in proc.stdout
    assert "not a regular file; refused" in proc.stdout and "Traceback" not in proc.stderr

    proc = run_zoo(["store", "list", "--store", str(root), "--json"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert [r["record"] for r in listing["records"]] == [record]
    assert {u["record"] for u in listing["unreadable"]} == {
        f"records/{identity}/{'1' * 64}.json", f"records/{identity}/{'2' * 64}.json"}

    store = open_store(root, record_cache=False)
    with pytest.raises(StoreRefusedError):  # the object behind a symbolic link is not pulled
        store.pull(identity, tmp_path / "pulled")
    assert store.transport.size(objects[0]) is None  # not an object: a publish replaces it


def test_a_symlinked_folder_in_a_file_store_is_never_written_through(
        tmp_path: Path, export_dir: Path) -> None:
    root = tmp_path / "store"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "objects").mkdir(parents=True)
    (root / "objects" / "sha256").symlink_to(elsewhere)
    with pytest.raises(StoreError, match="symbolic link"):
        open_store(root, record_cache=False).publish(export_dir)
    assert list(elsewhere.iterdir()) == []


def test_store_file_names_are_printed_escaped(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "records").mkdir(parents=True)
    (root / "records" / "x\x1b[31mred\rover\x07").write_text("{}")
    for args in (["store", "verify"], ["store", "list"]):
        proc = run_zoo([*args, "--store", str(root)], timeout=120)
        _no_control(proc.stdout, proc.stderr)
        assert "x\\x1b[31mred\\rover\\x07" in proc.stdout + proc.stderr
    proc = run_zoo(["store", "verify", "--store", str(root)], timeout=120)
    assert proc.returncode == 1 and "not part of the store layout" in proc.stdout


def test_credentials_in_store_urls_and_errors_are_never_printed(tmp_path: Path) -> None:
    proc = run_zoo(["store", "verify", "--store", "s3://alice:hunter2secret@team-zoo/prod"],
                   timeout=120)
    assert proc.returncode == 2 and "cannot carry credentials" in proc.stderr
    assert "hunter2secret" not in proc.stdout + proc.stderr and "alice" not in proc.stderr
    port = _free_port()
    for endpoint in (f"http://127.0.0.1:{port}/?X-Amz-Signature=abcsecret",
                     f"http://bob:pwsecret@127.0.0.1:{port}"):
        proc = run_zoo(["store", "list", "--store", "s3://team-zoo/prod?token=toksecret",
                        f"--store-option=endpoint_url={endpoint}"],
                       env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
                       timeout=120)
        assert proc.returncode == 1, proc.stderr
        out = proc.stdout + proc.stderr
        for secret in ("abcsecret", "pwsecret", "toksecret"):
            assert secret not in out, out
        assert "Traceback" not in out


@pytest.mark.parametrize(("text", "secret"), [
    ("store s3://user:pass@bucket/x failed", "pass"),
    ('endpoint "https://h/b?X-Amz-Algorithm=A&X-Amz-Credential=AKIA%2F1&X-Amz-Signature=ff"',
     "AKIA"),
    ("https://h/o?X-Amz-Security-Token=FQoGZX&x=1", "FQoGZX"),
    ("token=abc123; sig=def456", "abc123"),
    ("https://h/o?Signature=zzz9&Expires=1", "zzz9"),
])
def test_redact_text_masks_secrets_and_keeps_the_rest(text: str, secret: str) -> None:
    shown = redact_text(text)
    assert secret not in shown and "***" in shown
    assert redact_text("objects/sha256/ab Key=records/x sort_key=1 a=b") == \
        "objects/sha256/ab Key=records/x sort_key=1 a=b"


def test_no_folder_is_created_through_a_planted_link(tmp_path: Path) -> None:
    """A record is written under records/<identity>/: with records/ a link to elsewhere, the
    identity folder used to be created there (mkdir(parents=True)) before the link was seen."""
    root = tmp_path / "store"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root.mkdir()
    (root / "records").symlink_to(elsewhere)
    store = open_store(root, record_cache=False)
    with pytest.raises(StoreError, match="symbolic link"):
        store.transport.write_new("records/" + "a" * 64 + "/" + "b" * 64 + ".json", b"{}")
    assert list(elsewhere.iterdir()) == []
