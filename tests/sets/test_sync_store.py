"""`zoo sync` with a team store (moto's S3 server): CI shards publish what they export, and a
last job on a machine with an empty cache assembles the lock from the store with no export
work; the lock it writes is the one a publishing sync writes."""

from __future__ import annotations

from pathlib import Path

from tests.sets.test_sync import app, events, files, zoo_sync
from tests.support.s3server import S3Store


def test_shards_publish_and_a_last_job_assembles_the_lock_from_the_store(
        tmp_path: Path, s3_store: S3Store) -> None:
    from zoo.store.store import open_store

    store = ["--store", s3_store.url, *s3_store.server.store_options()]
    shards = app(tmp_path / "ci")
    for index in ("1/2", "2/2"):  # two CI machines, each with its own empty cache
        proc = zoo_sync(shards, "--shard", index, "--json", *store,
                        home=tmp_path / f"shard-{index[0]}")
        assert proc.returncode == 0, proc.stderr
        assert [e["action"] for e in events(proc)] == ["export"]
    assert not (shards / "zoo.lock").exists()
    records = list(open_store(s3_store.url, s3_store.options, record_cache=False).records())
    assert len(records) == 2 and all(r.error is None for r in records)

    # the last job: a fresh machine, only the plan and the store
    last = app(tmp_path / "assemble")
    proc = zoo_sync(last, "--json", *store, home=tmp_path / "assembler")
    assert proc.returncode == 0, proc.stderr
    assert [e["action"] for e in events(proc)] == ["store", "store"]  # no export work
    lock = (last / "zoo.lock").read_text()
    assert lock.count("store_record = ") == 2
    assert {r.key.rsplit("/", 1)[1].removesuffix(".json") for r in records} == \
        {line.split('"')[1] for line in lock.splitlines() if line.startswith("store_record")}

    # the same plan synced with --publish on a shard's machine (half cached, half in the
    # store) writes the same lock: publishing what is already there names the same record
    again = app(tmp_path / "publisher")
    proc = zoo_sync(again, "--publish", "--json", *store, home=tmp_path / "shard-1")
    assert proc.returncode == 0, proc.stderr
    assert sorted(e["action"] for e in events(proc)) == ["cache", "store"]
    assert (again / "zoo.lock").read_text() == lock
    assert files(again / "models") == files(last / "models")

    # app CI: --locked on yet another machine installs exactly those bytes from the store
    app_ci = app(tmp_path / "app")
    (app_ci / "zoo.lock").write_text(lock)
    proc = zoo_sync(app_ci, "--locked", *store, home=tmp_path / "app-ci")
    assert proc.returncode == 0, proc.stderr
    assert files(app_ci / "models") == files(last / "models")


def test_publish_and_sign_need_what_they_name(tmp_path: Path) -> None:
    folder = app(tmp_path)
    proc = zoo_sync(folder, "--publish")
    assert proc.returncode == 2 and "--publish needs a store" in proc.stderr
    proc = zoo_sync(folder, "--sign", str(tmp_path / "key.pem"), "--store",
                    f"file://{tmp_path / 'store'}")
    assert proc.returncode == 2 and "--sign only makes sense with --publish" in proc.stderr
    assert not (folder / "models").exists()
