"""``zoo publish``, ``zoo store list|verify`` and ``zoo fetch`` with a team store, through the
real CLI (``zoo.cli.main.main`` in-process, or ``python -m zoo`` where a separate machine is
simulated by a separate ZOO_HOME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_zoo
from tests.store.test_store import files_of, flip_byte, s3fs_for
from tests.support.s3server import S3Store
from zoo.cli.main import main

pytest.importorskip("s3fs")


def zoo(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_publish_list_verify_as_json(capsys: pytest.CaptureFixture[str], s3_store: S3Store,
                                     export_dir: Path, keys: Any, built_here: Path) -> None:
    opts = s3_store.server.store_options()
    code, out, err = zoo(capsys, "publish", export_dir, "--store", s3_store.url, *opts,
                         "--sign", keys.team, "--json")
    assert code == 0, err
    published = json.loads(out)
    assert published["model"] == "single_conv" and published["already_published"] is False
    assert len(published["uploaded"]) == 4 and published["signed_by"]

    code, out, err = zoo(capsys, "store", "list", "--store", s3_store.url, *opts, "--json",
                         "--trusted-key", keys.team_pub)
    assert code == 0, err
    listing = json.loads(out)
    [row] = listing["records"]
    assert row["signed_by"] == published["signed_by"] and row["signature"] == "trusted"
    assert row["identity"] == published["identity"] and row["format"] == "torchscript"
    assert listing["unreadable"] == []
    code, out, _ = zoo(capsys, "store", "list", "deeplab*", "--store", s3_store.url, *opts,
                       "--json")
    assert json.loads(out)["records"] == []

    code, out, err = zoo(capsys, "store", "verify", "--store", s3_store.url, *opts,
                         "--trusted-key", keys.team_pub, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["objects_checked"] == 4


def test_human_output_progress_and_paging(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          export_dir: Path, keys: Any, built_here: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_STORE", str(tmp_path / "store"))
    code, out, err = zoo(capsys, "publish", export_dir, "--progress")
    assert code == 0, err
    assert out.startswith("published single_conv (torchscript, fp32,")
    assert "unsigned (use --sign KEY)" in out and "UNTRAINED" in out
    assert "100.0%" in err
    code, out, _ = zoo(capsys, "publish", export_dir / "single_conv.pt", "--sign", keys.team)
    assert code == 0 and "0 uploaded" in out and "signed by  ed25519:" in out
    code, out, _ = zoo(capsys, "publish", export_dir, "--quiet")
    assert code == 0 and out.startswith("already published")
    code, out, _ = zoo(capsys, "store", "list", "--trusted-key", keys.team_pub)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["model", "format", "precision", "size"]
    assert "(trusted)" in lines[1] and "unsigned" in lines[2]  # newest first
    code, out, _ = zoo(capsys, "store", "list", "--limit", "1")
    assert len(out.strip().splitlines()) == 2


def test_verify_reports_damage_and_leftovers_and_deletes_nothing(
        capsys: pytest.CaptureFixture[str], s3_store: S3Store, export_dir: Path) -> None:
    opts = s3_store.server.store_options()
    code, out, _ = zoo(capsys, "publish", export_dir, "--store", s3_store.url, *opts, "--json")
    record = json.loads(out)
    fs = s3fs_for(s3_store)
    root = s3_store.url.removeprefix("s3://")
    manifest = export_dir / "single_conv.pt.manifest.json"
    from tests.store.test_store import sha

    path = f"{root}/objects/sha256/{sha(manifest.read_bytes())}"
    fs.pipe(path, flip_byte(fs.cat_file(path)))
    fs.pipe(f"{root}/objects/sha256/{'0' * 64}", b"left by a killed publish")
    fs.pipe(f"{root}/records/junk.txt", b"?")
    before = sorted(fs.find(root))
    code, out, _ = zoo(capsys, "store", "verify", "--store", s3_store.url, *opts)
    assert code == 1
    assert "single_conv.pt.manifest.json: object bytes hash to" in out
    assert "records/junk.txt: not part of the store layout" in out
    assert "1 objects no record names" in out and "STORE HAS PROBLEMS" in out
    assert sorted(fs.find(root)) == before
    assert record["record"] in out


@pytest.mark.parametrize(("args", "message"), [
    (["publish", "{export}"], "no team store: pass --store URL or set ZOO_STORE"),
    (["publish", "{export}", "--store", "{tmp}", "--store-option", "noequals"],
     "expected KEY=VALUE"),
    (["publish", "{export}", "--store", "nosuchproto://x/y"], "--store nosuchproto://x/y"),
    (["publish", "{export}", "--store", "{tmp}", "--sign", "{pub}"], "that is a public key"),
    (["publish", "{tmp}", "--store", "{tmp}"], "holds no zoo manifest"),
    (["store", "list", "--store", "s3://b/p"], "remote and zoo is offline"),
    (["fetch", "single_conv", "--format", "torchscript", "--store", "{tmp}", "--sign", "{key}"],
     "--sign only makes sense with --publish"),
    (["fetch", "single_conv", "--format", "torchscript", "--no-store", "--publish"],
     "--publish needs a store"),
])
def test_usage_errors_are_one_line_exit_2(args: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          export_dir: Path, keys: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if "offline" in message:
        monkeypatch.setenv("ZOO_OFFLINE", "1")
    subst = {"{export}": str(export_dir), "{tmp}": str(tmp_path), "{pub}": str(keys.team_pub),
             "{key}": str(keys.team)}
    code, _out, err = zoo(capsys, *[subst.get(a, a) for a in args])
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_unreachable_store_is_one_line_exit_1(capsys: pytest.CaptureFixture[str],
                                                  export_dir: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _out, err = zoo(capsys, "store", "list", "--store", "s3://team/zoo",
                         f"--store-option=endpoint_url=http://127.0.0.1:{port}",
                         "--store-option=key=k", "--store-option=secret=s")
    assert code == 1
    assert "is unreachable or throttled" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_store_commands_do_not_slow_down_the_cli(tmp_path: Path) -> None:
    """`zoo --help` and `zoo list` import no store library (fsspec, s3fs, boto, cryptography)."""
    for args in (["--help"], ["list"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "zoo", *args],
                              capture_output=True, text=True, check=False, timeout=120,
                              env={**os.environ, "ZOO_HOME": str(tmp_path)})
        assert proc.returncode == 0
        imported = {line.split("|")[-1].strip().split(".")[0]
                    for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert not imported & {"fsspec", "s3fs", "botocore", "aiobotocore", "cryptography",
                               "torch"}, args


def test_second_machine_fetches_the_signed_artifact_with_no_export_work(
        s3_store: S3Store, export_dir: Path, keys: Any, tmp_path: Path) -> None:
    """Machine A (the home that made ``export_dir``: a local cache hit) fetches and publishes,
    signed, in one `zoo fetch`; machine B (a fresh ZOO_HOME) fetches with the trusted key: a
    store hit with no export work, byte-identical files."""
    base = ["fetch", "single_conv", "--weights", "none", "--format", "torchscript",
            "--store", s3_store.url, *s3_store.server.store_options()]
    a = run_zoo([*base, "-o", str(tmp_path / "a"), "--publish", "--sign", str(keys.team)],
                env={"ZOO_HOME": str(export_dir.parent / "home")})
    assert a.returncode == 0, a.stderr
    assert "published to" in a.stderr
    b = run_zoo([*base, "-o", str(tmp_path / "b"), "--trusted-key", str(keys.team_pub)],
                env={"ZOO_HOME": str(tmp_path / "home_b")})
    assert b.returncode == 0, b.stderr
    assert "pulled from the team store" in b.stderr
    assert "building" not in b.stderr and "writing" not in b.stderr  # no export work
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b") == files_of(export_dir)


@pytest.mark.slow
def test_a_machine_that_trusts_another_key_exports_locally(
        s3_store: S3Store, export_dir: Path, keys: Any, tmp_path: Path) -> None:
    from zoo.store import open_store
    from zoo.store.keys import load_signing_key

    open_store(s3_store.url, s3_store.options).publish(export_dir,
                                                       sign_key=load_signing_key(keys.team))
    base = ["fetch", "single_conv", "--weights", "none", "--format", "torchscript",
            "--store", s3_store.url, *s3_store.server.store_options()]
    c = run_zoo([*base, "-o", str(tmp_path / "c"), "--trusted-key", str(keys.other_pub)],
                env={"ZOO_HOME": str(tmp_path / "home_c")})
    assert c.returncode == 0, c.stderr
    assert "not a trusted key" in c.stderr and "exporting locally" in c.stderr
    assert "pulled from the team store" not in c.stderr
    assert (tmp_path / "c" / "single_conv.pt").is_file()
