"""Chain of custody (issue 18): what CI exported and signed is exactly what every laptop gets.

Each scenario runs real ``python -m zoo`` processes, each "machine" with its own ZOO_HOME, against
a real store: a ``file://`` folder and moto's S3 server on 127.0.0.1. The attacker may write to
the store (that is the threat) but holds no team key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_zoo
from tests.support.httpserver import (
    HTTPTestServer,
    card_with_weights,
    state_dict_bytes,
    write_registry,
)

pytest.importorskip("cryptography")

BASE = ["single_conv", "--weights", "none", "--format", "torchscript"]
TINY = state_dict_bytes("single_conv", seed=3)
TINY_SHA = hashlib.sha256(TINY).hexdigest()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def zoo_as(home: Path, *args: Any, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    """``python -m zoo ARGS`` on the machine whose ZOO_HOME is ``home``."""
    return run_zoo([str(a) for a in args], env={"ZOO_HOME": str(home), **(env or {})})


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def rewrite_sums(folder: Path) -> None:
    """SHA256SUMS recomputed for the folder's files (what an attacker would do)."""
    lines = [f"{sha(p)}  {p.name}\n" for p in sorted(folder.iterdir())
             if p.is_file() and p.name != "SHA256SUMS"]
    (folder / "SHA256SUMS").write_text("".join(lines))


def plant(folder: Path) -> str:
    """Replace the TorchScript artifact in an export folder with other code and weights that
    carry the same embedded manifest, fix the sidecar and SHA256SUMS; returns the new
    artifact's sha256. This is what a store writer without the team key can publish."""
    code = r'''
import sys, torch, zipfile
path = sys.argv[1]
with zipfile.ZipFile(path) as z:
    name = next(n for n in z.namelist() if n.endswith("extra/manifest.json"))
    embedded = z.read(name).decode()
torch.manual_seed(99)
m = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 23, 3, padding=1),
                                         torch.nn.ReLU()))
torch.jit.save(m, path, _extra_files={"manifest.json": embedded})
'''
    artifact = folder / "single_conv.pt"
    subprocess.run([sys.executable, "-c", code, str(artifact)], check=True, timeout=120)
    sidecar = folder / "single_conv.pt.manifest.json"
    manifest = json.loads(sidecar.read_text())
    manifest["artifact"]["sha256"] = sha(artifact)
    manifest["artifact"]["size"] = artifact.stat().st_size
    sidecar.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    rewrite_sums(folder)
    return sha(artifact)


@pytest.fixture(params=["file", "s3"])
def store_args(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """``--store URL [--store-option ...]`` for a fresh file:// store or S3 bucket."""
    if request.param == "file":
        return ["--store", (tmp_path / "store").as_uri()]
    pytest.importorskip("s3fs")
    s3 = request.getfixturevalue("s3_store")
    return ["--store", s3.url, *s3.server.store_options()]


def test_planted_unsigned_bytes_are_never_signed_nor_installed_by_a_trusting_machine(
        tmp_path: Path, store_args: list[str], keys: Any) -> None:
    attacker, ci, laptop = tmp_path / "attacker", tmp_path / "ci", tmp_path / "laptop"
    genuine_dir = tmp_path / "genuine"
    ok(zoo_as(tmp_path / "reference", "fetch", *BASE, "-o", genuine_dir, "--no-store"))
    genuine = sha(genuine_dir / "single_conv.pt")

    # The attacker exports the same thing, swaps the bytes, and publishes them unsigned.
    ok(zoo_as(attacker, "fetch", *BASE, "-o", tmp_path / "atk", "--no-store"))
    planted = plant(tmp_path / "atk")
    assert planted != genuine
    ok(zoo_as(attacker, "publish", tmp_path / "atk", *store_args))

    # CI, as the README shows it (no trusted keys, a persistent cache), pulls them once ...
    first = ok(zoo_as(ci, "fetch", *BASE, "-o", tmp_path / "ci1", *store_args))
    assert "pulled from the team store" in first.stderr
    assert sha(tmp_path / "ci1" / "single_conv.pt") == planted

    # ... and its next run publishes and signs: the planted bytes must not be what it signs.
    signed = ok(zoo_as(ci, "fetch", *BASE, "-o", tmp_path / "ci2", *store_args, "--publish",
                       "--sign", keys.team))
    assert "not serving the cached export" in signed.stderr
    assert sha(tmp_path / "ci2" / "single_conv.pt") == genuine
    listing = json.loads(ok(zoo_as(laptop, "store", "list", *store_args, "--json",
                                   "--trusted-key", keys.team_pub)).stdout)
    trusted = [r for r in listing["records"] if r["signature"] == "trusted"]
    assert len(trusted) == 1

    # A laptop that trusts only the team key gets the genuine bytes, VERIFIED.
    ok(zoo_as(laptop, "fetch", *BASE, "-o", tmp_path / "app", *store_args, "--trusted-key",
              keys.team_pub, "--require-signed"))
    assert sha(tmp_path / "app" / "single_conv.pt") == genuine
    verify = ok(zoo_as(laptop, "verify", tmp_path / "app" / "single_conv.pt", "--trusted-key",
                       keys.team_pub, *store_args))
    assert "VERIFIED" in verify.stdout + verify.stderr


def test_a_pulled_unsigned_cache_entry_is_a_miss_once_a_key_is_trusted(
        tmp_path: Path, keys: Any) -> None:
    store = ["--store", (tmp_path / "store").as_uri()]
    home = tmp_path / "home"
    ok(zoo_as(tmp_path / "attacker", "fetch", *BASE, "-o", tmp_path / "atk", "--no-store"))
    planted = plant(tmp_path / "atk")
    ok(zoo_as(tmp_path / "attacker", "publish", tmp_path / "atk", *store))
    ok(zoo_as(home, "fetch", *BASE, "-o", tmp_path / "a", *store))
    assert sha(tmp_path / "a" / "single_conv.pt") == planted

    # --no-store and --trusted-key: the cache alone must not hand the planted bytes out
    again = ok(zoo_as(home, "fetch", *BASE, "-o", tmp_path / "b", "--no-store",
                      "--trusted-key", keys.team_pub))
    assert sha(tmp_path / "b" / "single_conv.pt") != planted
    assert "unsigned" in again.stderr and "exported" in again.stderr

    # --require-signed: no signed record anywhere: exit 1, one line, nothing installed
    strict = zoo_as(tmp_path / "app", "fetch", *BASE, "-o", tmp_path / "c", *store,
                    "--trusted-key", keys.team_pub, "--require-signed")
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert "--require-signed" in strict.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "c" / "single_conv.pt").exists()
    env_strict = zoo_as(tmp_path / "app", "fetch", *BASE, "-o", tmp_path / "c", *store,
                        env={"ZOO_REQUIRE_SIGNED": "1"})
    assert env_strict.returncode == 2 and "needs a trusted key" in env_strict.stderr


def test_zoo_publish_signs_only_what_this_machine_built(tmp_path: Path, keys: Any) -> None:
    store = ["--store", (tmp_path / "store").as_uri()]
    built = tmp_path / "built"
    ok(zoo_as(built, "fetch", *BASE, "-o", tmp_path / "out", "--no-store"))
    # another machine (another ZOO_HOME) holding a copy of those files may not sign them
    refused = zoo_as(tmp_path / "elsewhere", "publish", tmp_path / "out", *store, "--sign",
                     keys.team)
    assert refused.returncode == 1 and "refusing to sign" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "store" / "records").exists()  # nothing uploaded
    # the machine that built them may
    ok(zoo_as(built, "publish", tmp_path / "out", *store, "--sign", keys.team))
    # and a machine that trusts the team key may re-sign what the team signed
    ok(zoo_as(tmp_path / "elsewhere", "publish", tmp_path / "out", *store, "--sign",
              keys.other, "--trusted-key", keys.team_pub))
    # edited bytes are never signed, even by the machine that built the originals
    plant(tmp_path / "out")
    edited = zoo_as(built, "publish", tmp_path / "out", *store, "--sign", keys.team)
    assert edited.returncode == 1 and "refusing to sign" in edited.stderr


@pytest.mark.parametrize("edit, expect", [
    (lambda m: m["export"].update(operators_file="SHA256SUMS"), "operators file"),
    (lambda m: m["model"].update(name="single conv"), "model"),
    (lambda m: m["export"].update(precision="fp32/../x"), "precision"),
    (lambda m: m["model"].update(description="edited after export"), "embedded"),
])
def test_publish_refuses_what_every_pull_would_refuse(tmp_path: Path, edit: Any,
                                                      expect: str) -> None:
    store = tmp_path / "store"
    home = tmp_path / "home"
    ok(zoo_as(home, "fetch", *BASE, "-o", tmp_path / "out", "--no-store"))
    sidecar = tmp_path / "out" / "single_conv.pt.manifest.json"
    manifest = json.loads(sidecar.read_text())
    edit(manifest)
    sidecar.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    rewrite_sums(tmp_path / "out")
    proc = zoo_as(home, "publish", tmp_path / "out", "--store", store.as_uri())
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "internal" not in lines[0]
    assert expect in lines[0] and "nothing was uploaded" in lines[0]
    assert not (store / "objects").exists() or not any((store / "objects").rglob("*"))


def test_one_identity_is_one_byte_string_whatever_the_weights_source(
        tmp_path: Path, http_server: HTTPTestServer, keys: Any) -> None:
    url = http_server.serve("/w/tiny.pth", TINY)
    card = card_with_weights("single_conv", "tiny", url, TINY)
    registry = write_registry(tmp_path / "registry.yaml", card)
    env = {"ZOO_REGISTRY": str(registry)}
    local = tmp_path / "my-weights.pth"
    local.write_bytes(TINY)
    mirror = http_server.url("/")
    ways = {"url": [], "path": ["--weights", str(local)],
            "pinned": ["--weights", f"{local}#sha256={TINY_SHA}"],
            "mirror": ["--mirror", mirror.rstrip("/")]}
    seen = {}
    for way, extra in ways.items():
        out = tmp_path / f"out-{way}"
        ok(zoo_as(tmp_path / f"home-{way}", "fetch", "tiny", "--format", "torchscript",
                  "-o", out, "--no-store", *extra, env=env))
        manifest = json.loads((out / "tiny.pt.manifest.json").read_text())
        seen[way] = (sha(out / "tiny.pt"), sha(out / "tiny.pt.manifest.json"),
                     manifest["export"]["identity"])
        assert manifest["weights"]["sha256"] == TINY_SHA
        assert manifest["weights"]["source"] == "test_v1 (the card's weights)"
        assert manifest["weights"]["url"] == url
    # the team store as the weights' mirror: seeded from the first machine's cache
    store = ["--store", (tmp_path / "store").as_uri()]
    ok(zoo_as(tmp_path / "home-url", "fetch", "tiny", "--publish", *store, env=env))
    before = http_server.stats("/w/tiny.pth").requests
    out = tmp_path / "out-store"
    ok(zoo_as(tmp_path / "home-store", "fetch", "tiny", "--format", "torchscript", "-o", out,
              *store, "--trusted-key", keys.team_pub, env=env))
    assert http_server.stats("/w/tiny.pth").requests == before  # the bytes came from the store
    seen["store"] = (sha(out / "tiny.pt"), sha(out / "tiny.pt.manifest.json"),
                     json.loads((out / "tiny.pt.manifest.json").read_text())["export"]["identity"])
    assert len(set(seen.values())) == 1, seen


def test_revoked_records_are_refused_even_when_restored(tmp_path: Path, keys: Any) -> None:
    store_dir = tmp_path / "store"
    store = ["--store", store_dir.as_uri()]
    ci = tmp_path / "ci"
    ok(zoo_as(ci, "fetch", *BASE, "-o", tmp_path / "ci", *store, "--publish", "--sign",
              keys.team))
    listing = json.loads(ok(zoo_as(ci, "store", "list", *store, "--json")).stdout)
    [row] = listing["records"]
    digest = row["record"].rsplit("/", 1)[1][:-5]

    bad = zoo_as(ci, "store", "revoke", digest[:12], *store)
    assert bad.returncode == 2 and "--sign" in bad.stderr
    ok(zoo_as(ci, "store", "revoke", digest[:12], *store, "--sign", keys.team, "--reason",
              "exported from the wrong weights"))

    record_file = store_dir / row["record"]
    saved = record_file.read_bytes()
    listing = json.loads(ok(zoo_as(ci, "store", "list", *store, "--json")).stdout)
    assert "wrong weights" in listing["records"][0]["revoked"]
    human = ok(zoo_as(ci, "store", "list", *store)).stdout
    assert "REVOKED" in human
    report = json.loads(zoo_as(ci, "store", "verify", *store, "--json").stdout)
    assert report["records"][0]["revoked"]

    # an admin deletes the record; a store writer puts it back
    record_file.unlink()
    record_file.write_bytes(saved)
    laptop = tmp_path / "laptop"
    strict = zoo_as(laptop, "fetch", *BASE, "-o", tmp_path / "app", *store, "--trusted-key",
                    keys.team_pub, "--require-signed")
    assert strict.returncode == 1 and "revoked" in strict.stderr
    verify = zoo_as(laptop, "verify", tmp_path / "ci" / "single_conv.pt", "--trusted-key",
                    keys.team_pub, *store)
    assert verify.returncode != 0 and "revoked" in (verify.stdout + verify.stderr)

    # the store writer also deletes the tombstone: a machine that saw it still refuses
    shutil.rmtree(store_dir / "revocations")
    again = zoo_as(laptop, "fetch", *BASE, "-o", tmp_path / "app", *store, "--trusted-key",
                   keys.team_pub, "--require-signed")
    assert again.returncode == 1 and "revoked" in again.stderr


def test_a_zoo_home_others_can_write_is_named_once_and_not_served(
        tmp_path: Path, keys: Any) -> None:
    home = tmp_path / "shared"
    ok(zoo_as(home, "fetch", *BASE, "-o", tmp_path / "a", "--no-store"))
    os.chmod(home, 0o777)
    proc = ok(zoo_as(home, "fetch", *BASE, "-o", tmp_path / "b", "--no-store"))
    warnings = [ln for ln in proc.stderr.splitlines() if "ZOO_HOME is not trusted" in ln]
    assert len(warnings) == 1 and "0777" in warnings[0] and "chmod go-w" in warnings[0]
    assert "cache hit" not in proc.stderr
    listed = ok(zoo_as(home, "list"))
    assert "single_conv" in listed.stdout and "ZOO_HOME is not trusted" in listed.stderr
