"""Sets of artifacts (issue 22): a plan (zoo.toml), a lock (zoo.lock) and `zoo sync`, through
the real CLI (`python -m zoo` processes with their own ZOO_HOME)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_zoo

PLAN = """\
[output]
folder = "models"

[[artifacts]]
models = ["single_conv"]
formats = ["torchscript", "lite"]
input_sizes = ["32x48"]
weights = "none"
"""


def app(tmp_path: Path, plan: str = PLAN) -> Path:
    folder = tmp_path / "app"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zoo.toml").write_text(plan)
    return folder


def zoo_sync(folder: Path, *args: str, home: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
    return run_zoo(["sync", "--plan", str(folder / "zoo.toml"), *args],
                   env={"ZOO_HOME": str(home or folder.parent / "home")})


def files(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".zoo-sync" not in p.parts}


def events(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_sync_writes_the_set_and_its_lock_then_is_a_cheap_no_op(tmp_path: Path) -> None:
    folder = app(tmp_path)
    first = zoo_sync(folder, "--json")
    assert first.returncode == 0, first.stderr
    assert sorted(e["action"] for e in events(first)) == ["export", "export"]
    models = folder / "models" / "single_conv"
    assert {"single_conv.pt", "single_conv.ptl", "SHA256SUMS"} <= {p.name for p in
                                                                   models.iterdir()}
    lock = (folder / "zoo.lock").read_text()
    assert lock.count("[[artifact]]") == 2 and "single_conv/torchscript/fp32/32x48" in lock
    for line in (models / "SHA256SUMS").read_text().splitlines():
        sha, name = line.split("  ")
        assert files(models)[name] == sha

    again = zoo_sync(folder, "--json")
    assert [e["action"] for e in events(again)] == ["present", "present"]
    assert (folder / "zoo.lock").read_text() == lock  # same bytes
    locked = zoo_sync(folder, "--locked")
    assert locked.returncode == 0, locked.stderr
    dry = zoo_sync(folder, "--dry-run", "--json")
    assert [e["action"] for e in events(dry)] == ["present", "present"]

    # a second machine with an empty cache and only the plan and lock: --locked rebuilds
    # the same bytes, or fails
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "zoo.toml").write_text(PLAN)
    (clone / "zoo.lock").write_text(lock)
    other = zoo_sync(clone, "--locked", home=tmp_path / "other-home")
    assert other.returncode == 0, other.stderr
    assert files(clone / "models") == files(folder / "models")


@pytest.mark.parametrize("plan, expect", [
    (PLAN.replace('weights = "none"', 'weights = "none"\ncolour = "red"'), ":9: field "
     "artifacts.0.colour: Extra inputs are not permitted"),
    (PLAN.replace('"32x48"', '"32by48"'), ":7: field artifacts.0.input_sizes: '32by48'"),
    (PLAN.replace('["single_conv"]', '["nothing_*"]'), "no model matches 'nothing_*'"),
    (PLAN.replace('"lite"]', '"lite", "nope"]'), "unknown format 'nope'"),
    (PLAN.replace('folder = "models"', 'folder = "../elsewhere"'), "field output.folder"),
])
def test_a_bad_plan_is_one_line_naming_file_line_and_field(tmp_path: Path, plan: str,
                                                           expect: str) -> None:
    folder = app(tmp_path, plan)
    proc = zoo_sync(folder)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in proc.stderr
    assert not (folder / "models").exists()


def test_locked_refuses_a_hand_edited_a_newer_or_a_disagreeing_lock(tmp_path: Path) -> None:
    folder = app(tmp_path)
    assert zoo_sync(folder).returncode == 0
    lock_path = folder / "zoo.lock"
    lock = lock_path.read_text()
    before = files(folder / "models")

    lock_path.write_text(lock.replace('size = 28 }', 'size = 29 }'))
    edited = zoo_sync(folder, "--locked")
    assert edited.returncode == 2 and "edited by hand" in edited.stderr

    from zoo.sets.lockfile import LOCK_VERSION, dumps, loads

    parsed = loads(lock, "zoo.lock")
    newer = dumps(parsed).replace(f"version = {LOCK_VERSION}\n", "version = 99\n", 1)
    lock_path.write_text(newer)
    assert "newer zoo" in zoo_sync(folder, "--locked").stderr

    lock_path.write_text(lock)
    (folder / "zoo.toml").write_text(PLAN.replace('"lite"]', '"lite", "onnx"]'))
    disagree = zoo_sync(folder, "--locked")
    assert disagree.returncode == 2 and "disagree" in disagree.stderr
    assert "single_conv/onnx/fp32/32x48" in disagree.stderr
    assert files(folder / "models") == before  # nothing changed


def test_locked_fails_changing_nothing_when_a_byte_differs(tmp_path: Path) -> None:
    from dataclasses import replace

    from zoo.sets.lockfile import dumps, loads

    folder = app(tmp_path)
    assert zoo_sync(folder).returncode == 0
    lock = loads((folder / "zoo.lock").read_text(), "zoo.lock")
    first = lock.artifacts[0]
    wrong = replace(first, files=tuple(replace(f, sha256="0" * 64) if f.path ==
                                       first.artifact else f for f in first.files))
    (folder / "zoo.lock").write_text(dumps(replace(lock, artifacts=(wrong, *lock.artifacts[1:]))))
    before = files(folder / "models")
    (folder / "models" / "single_conv" / first.artifact).unlink()  # so it must be rebuilt
    proc = zoo_sync(folder, "--locked")
    assert proc.returncode == 2 and "other bytes than zoo.lock records" in proc.stderr
    after = files(folder / "models")
    assert after == {k: v for k, v in before.items() if not k.endswith(first.artifact)}


def test_jobs_and_shards_give_the_same_bytes_as_one_process(tmp_path: Path) -> None:
    sequential = app(tmp_path / "a")
    assert zoo_sync(sequential, home=tmp_path / "h1").returncode == 0
    parallel = app(tmp_path / "b")
    proc = zoo_sync(parallel, "--jobs", "2", home=tmp_path / "h2")
    assert proc.returncode == 0, proc.stderr
    assert files(parallel / "models") == files(sequential / "models")
    assert (parallel / "zoo.lock").read_text() == (sequential / "zoo.lock").read_text()

    sharded = app(tmp_path / "c")
    for index in ("1/2", "2/2"):
        proc = zoo_sync(sharded, "--shard", index, "--json", home=tmp_path / "h3")
        assert proc.returncode == 0, proc.stderr
        assert len(events(proc)) == 1
    assert not (sharded / "zoo.lock").exists()  # a shard holds part of the plan
    assert files(sharded / "models") == files(sequential / "models")
    last = zoo_sync(sharded, "--json", home=tmp_path / "h3")  # assembles the lock
    assert [e["action"] for e in events(last)] == ["cache", "cache"]  # no export work
    assert (sharded / "zoo.lock").read_text() == (sequential / "zoo.lock").read_text()
    bad = zoo_sync(sharded, "--shard", "3/2")
    assert bad.returncode == 2 and "I/N" in bad.stderr


def test_a_killed_sync_leaves_nothing_half_written_and_a_rerun_finishes(tmp_path: Path) -> None:
    folder = app(tmp_path, PLAN.replace('"lite"]', '"lite", "onnx"]'))
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "sync", "--plan",
                             str(folder / "zoo.toml")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    staging = folder / "models" / ".zoo-sync" / "staging"
    deadline = time.monotonic() + 120
    while not (staging.is_dir() and any(staging.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (folder / "models" / "single_conv").exists()  # staged, never half-installed
    assert not (folder / "zoo.lock").exists()
    rerun = zoo_sync(folder, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert len(events(rerun)) == 3 and (folder / "zoo.lock").exists()
    assert not any(staging.iterdir()) if staging.exists() else True


def test_two_syncs_of_one_folder_do_not_interleave(tmp_path: Path) -> None:
    from zoo._core.locks import OwnedLocks

    folder = app(tmp_path)
    work = folder / "models" / ".zoo-sync"
    with OwnedLocks(work).hold("sync", 5, what="a test holding the folder"):
        proc = zoo_sync(folder, "--wait", "1")
    assert proc.returncode == 2 and "another zoo sync is writing" in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr


def test_zoo_schema_plan_is_a_json_schema() -> None:
    proc = run_zoo(["schema", "plan"])
    schema = json.loads(proc.stdout)
    assert schema["title"] == "Plan" and "artifacts" in schema["properties"]
