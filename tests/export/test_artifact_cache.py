"""The export cache (zoo.export.cache) on hand-made staging folders: no torch, no exports.

Real files, real processes (kill -9, concurrent commits, a lock holder), and a read-only root
read by an unprivileged user (the tests run as root, which ignores permission bits).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_zoo
from zoo.errors import ExportError, UsageError
from zoo.export.cache import ArtifactCache, CachedExport, cache_budget, parse_size

MANIFEST = "m.pt.manifest.json"


@pytest.fixture(autouse=True)
def _no_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZOO_CACHE_MAX", raising=False)


@pytest.fixture
def warnings() -> list[str]:
    return []


@pytest.fixture
def cache(tmp_path: Path, warnings: list[str]) -> ArtifactCache:
    return ArtifactCache(tmp_path / "artifacts", warn=warnings.append)


def _fill(staging: Path, payload: bytes = b"artifact bytes", folder: bool = True) -> None:
    (staging / "m.pt").write_bytes(payload)
    (staging / MANIFEST).write_text('{"model": "m"}')
    if folder:  # a folder artifact, as a Core ML .mlpackage is
        (staging / "m.mlpackage" / "Data").mkdir(parents=True)
        (staging / "m.mlpackage" / "Data" / "weights.bin").write_bytes(payload * 3)
        (staging / "m.mlpackage" / "Manifest.json").write_text("{}")


def _commit(cache: ArtifactCache, seed: object, payload: bytes = b"artifact bytes", *,
            model: str = "m", folder: bool = True) -> CachedExport:
    key = ArtifactCache.key({"seed": seed})
    with cache.staging() as staging:
        _fill(staging, payload, folder)
        return cache.commit(key, staging, manifest_file=MANIFEST, model=model,
                            format="torchscript")


def _flip_keep_mtime(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(path, "r+b") as fh:  # in place: same inode, same size
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns


def _python(code: str, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, **kw)  # type: ignore


# -- keys, commit, lookup, install ---------------------------------------------------------


def test_key_is_the_sha256_of_canonical_json() -> None:
    import hashlib

    assert ArtifactCache.key({"b": 1, "a": [1, 2]}) == \
        hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()
    assert ArtifactCache.key({"a": 1}) != ArtifactCache.key({"a": 2})


def test_commit_records_every_file_outside_the_entry(cache: ArtifactCache) -> None:
    entry = _commit(cache, 1)
    assert entry.folder == cache.root / entry.key
    assert sorted(entry.files) == ["m.mlpackage/Data/weights.bin", "m.mlpackage/Manifest.json",
                                   "m.pt", MANIFEST]
    assert entry.artifact_file == "m.pt" and entry.names == ["m.mlpackage", "m.pt", MANIFEST]
    record = json.loads(cache.record_path(entry.key).read_text())
    assert not cache.record_path(entry.key).is_relative_to(entry.folder)
    assert record["files"]["m.pt"]["size"] == len(b"artifact bytes")
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".staging-")]
    hit = cache.lookup(entry.key)
    assert hit is not None and hit.files == entry.files and hit.model == "m"
    assert cache.lookup(ArtifactCache.key({"seed": 2})) is None


def test_install_copies_never_links_and_reports_every_file(cache: ArtifactCache,
                                                           tmp_path: Path) -> None:
    entry = _commit(cache, 1)
    out = tmp_path / "out"
    sums = cache.install(entry, out, ["m.pt", MANIFEST, "m.mlpackage"])
    assert sums == entry.files
    for rel in entry.files:
        mine, cached = (out / rel).stat(), (entry.folder / rel).stat()
        assert mine.st_ino != cached.st_ino and cached.st_nlink == 1
        assert (out / rel).read_bytes() == (entry.folder / rel).read_bytes()
    inode = (out / "m.pt").stat().st_ino
    cache.install(entry, out, ["m.pt"])  # identical bytes already there: left alone
    assert (out / "m.pt").stat().st_ino == inode
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_an_output_edited_in_place_never_reaches_the_cache(cache: ArtifactCache,
                                                           tmp_path: Path) -> None:
    entry = _commit(cache, 1)
    out = tmp_path / "out"
    cache.install(entry, out, entry.names)
    recorded = (out / "m.pt").read_bytes()
    _flip_keep_mtime(out / "m.pt")
    (out / "m.mlpackage" / "Data" / "weights.bin").write_bytes(b"edited")
    (out / "m.mlpackage" / "planted.py").write_text("import os")
    assert cache.lookup(entry.key, verify=True) is not None  # the cache kept its bytes
    sums = cache.install(entry, out, entry.names)
    assert (out / "m.pt").read_bytes() == recorded
    assert sums["m.pt"] == entry.files["m.pt"]
    assert (out / "m.mlpackage" / "Data" / "weights.bin").read_bytes() == b"artifact bytes" * 3
    assert not (out / "m.mlpackage" / "planted.py").exists()  # the folder was swapped whole
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_install_replaces_a_symlink_instead_of_writing_through_it(cache: ArtifactCache,
                                                                   tmp_path: Path) -> None:
    entry = _commit(cache, 1, folder=False)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "m.pt").symlink_to(victim)
    cache.install(entry, out, ["m.pt"])
    assert not (out / "m.pt").is_symlink() and victim.read_text() == "keep me"
    with pytest.raises(ValueError):
        cache.install(entry, out, ["../m.pt"])
    with pytest.raises(ValueError):
        cache.install(entry, out, ["not-there"])


# -- damage ----------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["m.pt", "m.mlpackage/Data/weights.bin"])
def test_a_flipped_byte_with_the_mtime_kept_is_detected_and_evicted(
        cache: ArtifactCache, warnings: list[str], rel: str) -> None:
    entry = _commit(cache, 1)
    assert cache.lookup(entry.key) is not None
    _flip_keep_mtime(entry.folder / rel)
    assert cache.lookup(entry.key) is None
    assert len(warnings) == 1 and rel in warnings[0] and "removed" in warnings[0]
    assert not entry.folder.exists() and not cache.record_path(entry.key).exists()
    assert cache.lookup(entry.key) is None and len(warnings) == 1  # reported once
    again = _commit(cache, 1)  # repaired: the next export fills it again
    assert cache.lookup(again.key) is not None


def test_a_planted_or_missing_file_is_a_miss(cache: ArtifactCache, warnings: list[str]) -> None:
    entry = _commit(cache, 1)
    (entry.folder / "m.mlpackage" / "evil.py").write_text("import os")
    assert cache.lookup(entry.key) is None
    entry = _commit(cache, 2)
    (entry.folder / "m.pt").unlink()
    assert cache.lookup(entry.key) is None
    entry = _commit(cache, 3)
    (entry.folder / "m.pt").unlink()
    (entry.folder / "m.pt").symlink_to(entry.folder / MANIFEST)
    assert cache.lookup(entry.key) is None
    assert len(warnings) == 3 and not cache.entries()


def test_a_copied_entry_is_rehashed_and_its_fingerprints_rerecorded(
        cache: ArtifactCache, warnings: list[str]) -> None:
    entry = _commit(cache, 1)
    copy = entry.folder.with_name("copy")
    shutil.copytree(entry.folder, copy)  # new inodes and ctimes, same bytes
    shutil.rmtree(entry.folder)
    copy.rename(entry.folder)
    before = json.loads(cache.record_path(entry.key).read_text())["files"]["m.pt"]["stat"]
    assert cache.lookup(entry.key) is not None and not warnings
    after = json.loads(cache.record_path(entry.key).read_text())["files"]["m.pt"]["stat"]
    assert before != after and after[0] == (entry.folder / "m.pt").stat().st_ino


@pytest.mark.parametrize("damage", [
    b"{not json", b"[]", b"\xff\xfe", b"",
    "files-escape", "bad-sha", "wrong-key", "folder-in-the-way",
])
def test_a_malformed_or_unreadable_record_is_a_miss_reported_once_and_repaired(
        cache: ArtifactCache, warnings: list[str], damage: object) -> None:
    entry = _commit(cache, 1)
    path = cache.record_path(entry.key)
    record = json.loads(path.read_text())
    if isinstance(damage, bytes):
        path.write_bytes(damage)
    elif damage == "folder-in-the-way":  # unreadable as a file
        path.unlink()
        path.mkdir()
    else:
        if damage == "files-escape":
            record["files"]["../../outside"] = record["files"].pop("m.pt")
        elif damage == "bad-sha":
            record["files"]["m.pt"]["sha256"] = "0" * 63
        else:
            record["key"] = "f" * 64
        path.write_text(json.dumps(record))
    assert cache.lookup(entry.key) is None
    assert cache.lookup(entry.key) is None
    assert len(warnings) == 1 and "treated as a miss" in warnings[0]
    assert cache.repaired and cache.repaired[0][0] == entry.key
    assert not entry.folder.exists() and not path.exists()
    assert cache.lookup(_commit(cache, 1).key) is not None


def test_record_text_is_data_never_terminal_control(cache: ArtifactCache, warnings: list[str],
                                                    zoo_home: Path) -> None:
    entry = _commit(cache, 1)
    record = json.loads(cache.record_path(entry.key).read_text())
    record["model"] = "m\x1b]0;pwned\x07"
    cache.record_path(entry.key).write_text(json.dumps(record))
    assert cache.lookup(entry.key) is None and len(warnings) == 1
    assert "\x1b" not in warnings[0]
    with cache.staging() as staging, pytest.raises(ExportError, match="cannot be recorded"):
        _fill(staging)
        (staging / "evil\x1b[2J.bin").write_bytes(b"")
        cache.commit(entry.key, staging, manifest_file=MANIFEST, model="m", format="x")
    home = ArtifactCache(zoo_home / "artifacts")
    key = ArtifactCache.key({"seed": "markup"})
    with home.staging() as staging:
        (staging / "[red]m[bold].pt").write_bytes(b"x")
        (staging / "[red]m[bold].pt.manifest.json").write_text("{}")
        home.commit(key, staging, manifest_file="[red]m[bold].pt.manifest.json", model="m",
                    format="torchscript")
    listed = run_zoo(["cache", "list", "--artifacts"])
    assert listed.returncode == 0 and "[red]m[bold].pt" in listed.stdout


def test_verify_rehashes_everything_and_evicts_the_bad(cache: ArtifactCache) -> None:
    good, bad = _commit(cache, 1), _commit(cache, 2, b"other bytes")
    _flip_keep_mtime(bad.folder / "m.mlpackage" / "Data" / "weights.bin")
    report = {e.key: (ok, why) for e, ok, why in cache.verify()}
    assert report[good.key] == (True, "ok")
    assert report[bad.key][0] is False and "weights.bin" in report[bad.key][1]
    assert [e.key for e in cache.entries()] == [good.key]


# -- leftovers, clear, prune, budget -----------------------------------------------------


def test_a_killed_processs_staging_folder_is_a_leftover_that_clear_removes(
        cache: ArtifactCache, zoo_home: Path) -> None:
    proc = _python("""
        import os, signal, sys
        from pathlib import Path
        from zoo.export.cache import ArtifactCache
        cache = ArtifactCache(Path(sys.argv[1]))
        with cache.staging() as staging:
            (staging / "half.pt").write_bytes(b"x" * 1000)
            print(staging, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """, str(cache.root))
    assert proc.returncode == -signal.SIGKILL
    dead = Path(proc.stdout.strip())
    assert dead.is_dir()
    kept = _commit(cache, 1)
    with cache.staging() as live:  # this process's staging folder is in use, not a leftover
        found = {x.path: x for x in cache.leftovers()}
        assert dead in found and live not in found
        assert found[dead].size == 1000 and "interrupted" in found[dead].kind
        assert [e.key for e in cache.clear()] == [kept.key]
        assert live.is_dir()
    assert not dead.exists() and cache.leftovers() == []
    # through the CLI: `zoo cache verify` reports it, `zoo cache clear` removes it
    proc = _python("""
        import os, signal, sys
        from pathlib import Path
        from zoo.export.cache import ArtifactCache
        with ArtifactCache(Path(sys.argv[1])).staging() as staging:
            (staging / "half.pt").write_bytes(b"x")
            os.kill(os.getpid(), signal.SIGKILL)
        """, str(zoo_home / "artifacts"))
    verify = run_zoo(["cache", "verify", "--json"])
    assert verify.returncode == 0, verify.stderr
    assert [x["kind"] for x in json.loads(verify.stdout)["export_leftovers"]] == \
        ["staging folder of an interrupted export"]
    clear = run_zoo(["cache", "clear"])
    assert clear.returncode == 0 and "1 leftover(s) of interrupted exports" in clear.stdout
    assert not [p for p in (zoo_home / "artifacts").iterdir() if p.name.startswith(".staging")]


def test_leftovers_of_an_interrupted_commit_or_removal(cache: ArtifactCache) -> None:
    entry = _commit(cache, 1)
    cache.record_path(entry.key).unlink()  # killed between the rename and the record
    trash = cache.root / f".trash-{'a' * 64}-0000"
    trash.mkdir()
    orphan_record = cache.record_path("b" * 64)
    orphan_record.write_text("{}")
    legacy = cache.root / f"{'c' * 64}.stat.json"
    legacy.write_text("{}")
    kinds = {x.path: x.kind for x in cache.leftovers()}
    assert set(kinds) == {entry.folder, trash, orphan_record, legacy}
    assert cache.lookup(entry.key) is None  # never trusted without its record
    assert {x.path for x in cache.remove_leftovers()} == set(kinds)
    assert cache.leftovers() == []


def test_clear_one_model(cache: ArtifactCache) -> None:
    a, b = _commit(cache, 1, model="alpha"), _commit(cache, 2, model="beta")
    assert [e.key for e in cache.clear("alpha")] == [a.key]
    assert [e.key for e in cache.entries()] == [b.key]


def test_prune_evicts_least_recently_used_first(cache: ArtifactCache) -> None:
    entries = [_commit(cache, i, bytes([i]) * 1000, folder=False) for i in range(4)]
    size = entries[0].size
    for age, entry in zip((40, 10, 30, 20), entries, strict=True):  # last used, seconds ago
        t = time.time() - age
        os.utime(cache.record_path(entry.key), (t, t))
    assert cache.lookup(entries[0].key) is not None  # a hit makes 0 the most recent
    removed = cache.prune(2 * size)
    assert [e.key for e in removed] == [entries[2].key, entries[3].key]
    assert {e.key for e in cache.entries()} == {entries[0].key, entries[1].key}
    assert cache.prune(0, keep={entries[0].key})[0].key == entries[1].key
    assert [e.key for e in cache.entries()] == [entries[0].key]


def test_the_budget_is_applied_after_each_commit(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    first = _commit(ArtifactCache(tmp_path), 1, b"x" * 1000, folder=False)
    monkeypatch.setenv("ZOO_CACHE_MAX", "1500")
    cache = ArtifactCache(tmp_path)
    assert cache.budget == 1500
    second = _commit(cache, 2, b"y" * 1000, folder=False)
    assert [e.key for e in cache.entries()] == [second.key]
    assert first.key != second.key
    big = _commit(cache, 3, b"z" * 5000, folder=False)  # alone over budget: kept, others go
    assert [e.key for e in cache.entries()] == [big.key]


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("123", 123), ("500M", 500 << 20), ("20G", 20 << 30), ("20g", 20 << 30),
    ("1.5K", 1536), ("2GiB", 2 << 30), ("3 MB", 3_000_000), ("1T", 1 << 40),
])
def test_sizes_parse(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["-1", "12Q", "G", "1e9", "ten", "1.2.3G", "99999999999T"])
def test_a_bad_zoo_cache_max_is_a_usage_error_naming_it(text: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError):
        parse_size(text)
    monkeypatch.setenv("ZOO_CACHE_MAX", text)
    with pytest.raises(UsageError, match="ZOO_CACHE_MAX"):
        cache_budget()
    with pytest.raises(UsageError, match="ZOO_CACHE_MAX"):
        ArtifactCache()  # before any export work


def test_zoo_cache_prune_with_a_bad_zoo_cache_max_exits_2() -> None:
    proc = run_zoo(["cache", "prune"], env={"ZOO_CACHE_MAX": "12Q"})
    assert proc.returncode == 2 and "ZOO_CACHE_MAX" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_zoo_cache_prune_and_list(zoo_home: Path) -> None:
    cache = ArtifactCache(zoo_home / "artifacts")
    entries = [_commit(cache, i, b"x" * 1000, model=f"m{i}", folder=False) for i in range(3)]
    for age, entry in zip((30, 10, 20), entries, strict=True):
        t = time.time() - age
        os.utime(cache.record_path(entry.key), (t, t))
    listed = run_zoo(["cache", "list", "--artifacts", "--json"])
    assert [r["model"] for r in json.loads(listed.stdout)] == ["m0", "m1", "m2"]
    assert json.loads(listed.stdout)[0]["file"] == "m.pt"
    proc = run_zoo(["cache", "prune", "--max-size", str(2 * entries[0].size), "--json"])
    assert proc.returncode == 0, proc.stderr
    assert [r["model"] for r in json.loads(proc.stdout)["removed"]] == ["m0"]
    proc = run_zoo(["cache", "prune"], env={"ZOO_CACHE_MAX": "0"})
    assert proc.returncode == 0 and "removed 2 cached exports" in proc.stdout
    proc = run_zoo(["cache", "prune"])
    assert proc.returncode == 2 and "--max-size" in proc.stderr
    proc = run_zoo(["cache", "prune", "--max-size", "lots"])
    assert proc.returncode == 2 and "--max-size" in proc.stderr


# -- processes: locks, concurrent commits, read-only roots --------------------------------


def test_a_waiter_names_the_lock_holder_and_gives_up_after_its_bound(
        cache: ArtifactCache) -> None:
    key = ArtifactCache.key({"seed": "locked"})
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from zoo.export.cache import ArtifactCache
        with ArtifactCache(Path(sys.argv[1])).lock(sys.argv[2]):
            print("held", flush=True)
            time.sleep(60)
        """), str(cache.root), key], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        said: list[str] = []
        start = time.monotonic()
        with pytest.raises(ExportError, match=f"pid {holder.pid}") as info, \
                cache.lock(key, on_wait=said.append, timeout=1.0):
            pass
        assert time.monotonic() - start < 10
        assert "gave up after 1 s" in str(info.value)
        assert len(said) == 1 and f"pid {holder.pid}" in said[0]
    finally:
        holder.kill()
        holder.wait()
    with cache.lock(key, timeout=5.0):  # a dead holder's lock goes with it
        owner = json.loads((cache.locks / f"{key}.owner.json").read_text())
        assert owner["pid"] == os.getpid()


COMMITTER = """
import sys, time
from pathlib import Path
from zoo.export.cache import ArtifactCache
root, key, tag, start = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
cache = ArtifactCache(root)
while time.time() < start:
    time.sleep(0.005)
for i in range(15):
    with cache.staging() as staging:
        (staging / "m.pt").write_bytes(tag.encode() * 5000)
        (staging / "m.mlpackage").mkdir()
        (staging / "m.mlpackage" / "w.bin").write_bytes(tag.encode() * 700 + bytes([i]))
        (staging / "m.pt.manifest.json").write_text(tag)
        cache.commit(key, staging, manifest_file="m.pt.manifest.json", model="m",
                     format="torchscript")
    with cache.lock(key):  # as the pipeline looks up: under the lock
        assert cache.lookup(key) is not None, "a fresh commit must be a hit"
"""


def test_concurrent_commits_of_one_key_leave_one_valid_entry(cache: ArtifactCache,
                                                              warnings: list[str]) -> None:
    key = ArtifactCache.key({"seed": "race"})
    start = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", COMMITTER, str(cache.root), key, tag,
                               start], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for tag in ("A", "B")]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert not any("warning" in e for e in errors), errors  # no false damage reports
    entry = cache.lookup(key, verify=True)
    assert entry is not None and not warnings
    tag = (entry.folder / MANIFEST).read_text()
    assert tag in ("A", "B") and (entry.folder / "m.pt").read_bytes() == tag.encode() * 5000
    assert [e.key for e in cache.entries()] == [key]
    assert cache.leftovers() == []
    assert not [p for p in cache.root.iterdir() if p.name.startswith((".staging", ".trash"))]


READER = """
import json, os, sys
from pathlib import Path
from zoo.export.cache import ArtifactCache
import fcntl, hashlib, shutil, tempfile  # everything the cache needs, before dropping root
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)  # nobody: permission bits now bind
root, key, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
said = []
cache = ArtifactCache(root, warn=said.append)
with cache.lock(key):
    entry = cache.lookup(key, verify=True)
sums = cache.install(entry, out / "hit", entry.names)
other = ArtifactCache.key({"seed": "miss"})
with cache.lock(other):
    assert cache.lookup(other) is None
    with cache.staging() as staging:
        (staging / "m.pt").write_bytes(b"fresh")
        (staging / "m.pt.manifest.json").write_text("{}")
        made = cache.commit(other, staging, manifest_file="m.pt.manifest.json", model="m",
                            format="torchscript")
cache.install(made, out / "miss", made.names)
print(json.dumps({"writable": cache.writable, "uid": os.geteuid(), "sums": sums,
                  "said": said, "made": str(made.folder)}))
"""


def _snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_ino,
                     p.read_bytes() if p.is_file() else b"")
            for p in sorted(folder.rglob("*"))}


def test_a_read_only_root_serves_hits(tmp_path: Path) -> None:
    """Read-only for real: the reader drops to user nobody when the tests run as root (root
    ignores permission bits), otherwise the current user reads a chmod a-w tree."""
    base = Path(tempfile.mkdtemp(prefix="zoo-ro-"))  # reachable by nobody, unlike tmp_path
    try:
        os.chmod(base, 0o755)
        root, out = base / "artifacts", base / "out"
        entry = _commit(ArtifactCache(root), "ro")
        out.mkdir(mode=0o777)
        os.chmod(out, 0o777)
        for path in [root, *root.rglob("*")]:
            mode = path.stat().st_mode
            os.chmod(path, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        before = _snapshot(root)
        proc = subprocess.run([sys.executable, "-c", READER, str(root), entry.key, str(out)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        if os.geteuid() == 0:
            assert report["uid"] == 65534
        assert report["writable"] is False
        assert report["sums"] == entry.files
        assert (out / "hit" / "m.pt").read_bytes() == (entry.folder / "m.pt").read_bytes()
        assert (out / "miss" / "m.pt").read_bytes() == b"fresh"  # exported, not cached
        assert len(report["said"]) == 1 and "not writable" in report["said"][0]
        assert not Path(report["made"]).exists()  # the private folder went at exit
        assert _snapshot(root) == before  # nothing was written to the cache
    finally:
        for path in [base, *base.rglob("*")]:
            if not path.is_symlink():
                os.chmod(path, 0o755)
        shutil.rmtree(base, ignore_errors=True)
