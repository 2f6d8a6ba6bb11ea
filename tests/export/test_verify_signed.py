"""``zoo verify --trusted-key``: an artifact counts as the team's only when a record signed by a
trusted key, in the team store (moto's S3 on 127.0.0.1) or beside the artifact, lists exactly
its bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.s3server import S3Store
from zoo.cli.main import main

pytest.importorskip("s3fs")


def zoo(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, dict]:
    code = main([str(a) for a in args])
    out, _err = capsys.readouterr()
    return code, json.loads(out) if out.strip().startswith("{") else {}


def _signature(report: dict) -> dict:
    return next(c for c in report["checks"] if c["name"] == "signature")


def test_verify_with_a_trusted_key_needs_a_trusted_record(
        capsys: pytest.CaptureFixture[str], s3_store: S3Store, export_dir: Path, keys: Any,
        built_here: Path,
        tmp_path: Path) -> None:
    opts = s3_store.server.store_options()
    store = ["--store", s3_store.url, *opts]
    artifact = export_dir / "single_conv.pt"
    code, report = zoo(capsys, "verify", artifact, "--json", "--trusted-key", keys.team_pub,
                       *store)
    assert code == 1 and "no signed record" in _signature(report)["detail"]

    assert main(["publish", str(export_dir), *store]) == 0  # unsigned first
    capsys.readouterr()
    code, report = zoo(capsys, "verify", artifact, "--json", "--trusted-key", keys.team_pub,
                       *store)
    assert code == 1 and "unsigned" in _signature(report)["detail"]

    assert main(["publish", str(export_dir), *store, "--sign", str(keys.team)]) == 0
    capsys.readouterr()
    code, report = zoo(capsys, "verify", artifact, "--json", "--trusted-key", keys.team_pub,
                       *store)
    assert code == 0 and report["verdict"] == "verified", report
    assert "(trusted)" in _signature(report)["detail"]

    code, report = zoo(capsys, "verify", artifact, "--json", "--trusted-key", keys.other_pub,
                       *store)
    assert code == 1 and "not a trusted key" in _signature(report)["detail"]

    # another artifact under the same identity (a consistent forgery: the manifest re-hashed)
    # is not vouched for by the team's record
    forged = tmp_path / "forged"
    shutil.copytree(export_dir, forged)
    sidecar = forged / "single_conv.pt.manifest.json"
    manifest = json.loads(sidecar.read_text())
    manifest["warning"] = "not what the team published"
    sidecar.write_text(json.dumps(manifest))
    (forged / "SHA256SUMS").unlink()
    code, report = zoo(capsys, "verify", forged / "single_conv.pt", "--json", "--trusted-key",
                       keys.team_pub, *store)
    assert code == 1
    assert "lists other bytes" in _signature(report)["detail"]
