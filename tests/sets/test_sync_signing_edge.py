"""`zoo sync --sign` is checked at the edge: without a store it is refused (it was accepted and
the key ignored with --shard), and a key that does not load fails before any export."""

from __future__ import annotations

from pathlib import Path

from tests.sets.test_sync import app, zoo_sync


def test_sign_without_a_store_is_a_usage_error(tmp_path: Path) -> None:
    folder = app(tmp_path)
    (folder / "k.pem").write_text("not a key\n")
    proc = zoo_sync(folder, "--shard", "1/2", "--sign", str(folder / "k.pem"), "--no-store")
    assert proc.returncode == 2 and "--sign signs what is published" in proc.stderr
    assert not (folder / "zoo.lock").exists()


def test_a_bad_key_fails_before_any_export(tmp_path: Path) -> None:
    folder = app(tmp_path)
    (folder / "k.pem").write_text("not a key\n")
    store = (tmp_path / "store").as_uri()
    proc = zoo_sync(folder, "--store", store, "--publish", "--sign", str(folder / "k.pem"))
    assert proc.returncode == 2 and "not a PEM private key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (folder / "zoo.lock").exists() and not (tmp_path / "home").exists()
