"""``zoo fetch`` and ``zoo cache`` in real subprocesses against a real local HTTP server."""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_zoo
from tests.support.httpserver import (
    HTTPTestServer,
    card_with_weights,
    state_dict_bytes,
    tmpfs,
    write_registry,
)

TINY = state_dict_bytes("single_conv")
TINY_SHA = hashlib.sha256(TINY).hexdigest()


@pytest.fixture(scope="module")
def big() -> bytes:
    """lraspp_mobilenet_v3_large's state dict (~13 MB): big enough to kill mid-body."""
    return state_dict_bytes("lraspp_mobilenet_v3_large")


def registry_env(tmp_path: Path, *cards: object) -> dict[str, str]:
    return {"ZOO_REGISTRY": str(write_registry(tmp_path / "registry.yaml", *cards))}


def tiny_env(server: HTTPTestServer, tmp_path: Path, **faults: object) -> dict[str, str]:
    url = server.serve("/tiny.pth", TINY, **faults)
    return registry_env(tmp_path, card_with_weights("single_conv", "tiny", url, TINY))


def zoo_popen(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "zoo", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_fetch_prints_only_the_path_then_hits(http_server: HTTPTestServer, tmp_path: Path,
                                              zoo_home: Path) -> None:
    env = tiny_env(http_server, tmp_path)
    first = run_zoo(["fetch", "tiny"], env=env)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""  # non-TTY stderr: no progress, no chatter
    path = Path(first.stdout.strip())
    assert first.stdout == f"{path}\n"
    assert path == zoo_home / "weights" / "sha256" / TINY_SHA and path.read_bytes() == TINY
    second = run_zoo(["fetch", "tiny", "--offline"], env=env)
    assert (second.returncode, second.stdout) == (0, first.stdout)
    assert http_server.stats("/tiny.pth").requests == 1


def test_weights_none_is_loudly_untrained() -> None:
    proc = run_zoo(["fetch", "single_conv", "--weights", "none", "--quiet"])
    assert proc.returncode == 0 and proc.stdout == ""
    assert "UNTRAINED" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_usage_errors_exit_2() -> None:
    proc = run_zoo(["fetch", "deeplabv3_resnet50", "--weights", "imagenet"])
    assert proc.returncode == 2
    assert "coco_with_voc_labels_v1" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert run_zoo(["fetch", "single_conv"]).returncode == 2  # no published weights
    assert run_zoo(["fetch", "single_conv", "--retries", "-1"]).returncode == 2


def test_404_exits_1_with_one_line(http_server: HTTPTestServer, tmp_path: Path) -> None:
    env = tiny_env(http_server, tmp_path, status=404)
    proc = run_zoo(["fetch", "tiny"], env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert "HTTP 404" in line and http_server.url("/tiny.pth") in line and "--weights none" in line


def test_mismatch_exits_1_and_caches_nothing(http_server: HTTPTestServer, tmp_path: Path) -> None:
    env = tiny_env(http_server, tmp_path, corrupt=True)
    proc = run_zoo(["fetch", "tiny"], env=env)
    assert proc.returncode == 1
    assert f"expected {TINY_SHA}, got " in proc.stderr
    assert http_server.url("/tiny.pth") in proc.stderr
    listing = run_zoo(["cache", "list", "--json"])
    assert json.loads(listing.stdout) == []


def test_progress_is_opt_in_off_a_terminal(http_server: HTTPTestServer, tmp_path: Path) -> None:
    env = tiny_env(http_server, tmp_path, fail_first=(503,))
    quiet = run_zoo(["fetch", "tiny", "--quiet"], env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""  # even the retry note is silenced
    run_zoo(["cache", "clear"])
    shown = run_zoo(["fetch", "tiny", "--progress"], env=env)
    assert shown.returncode == 0 and "tiny test_v1" in shown.stderr and "kB" in shown.stderr
    assert shown.stdout.strip().endswith(TINY_SHA)


def test_offline_miss_fails_fast(http_server: HTTPTestServer, tmp_path: Path) -> None:
    env = {**tiny_env(http_server, tmp_path), "ZOO_OFFLINE": "1"}
    proc = run_zoo(["fetch", "tiny"], env=env)
    assert proc.returncode == 1 and "offline" in proc.stderr and "--weights PATH" in proc.stderr
    assert http_server.stats("/tiny.pth").requests == 0


def test_no_network_names_url_and_ways_out(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        mirror = f"http://127.0.0.1:{sock.getsockname()[1]}"
    start = time.monotonic()
    proc = run_zoo(["fetch", "lraspp_mobilenet_v3_large", "--mirror", mirror, "--retries", "1",
                    "--quiet"])
    assert time.monotonic() - start < 10
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert f"{mirror}/models/lraspp_mobilenet_v3_large-d234d4ea.pth" in line
    assert "--mirror" in line and "--weights PATH" in line and "--weights none" in line


def test_sigkill_mid_body_then_rerun_resumes(http_server: HTTPTestServer, big: bytes,
                                            tmp_path: Path, zoo_home: Path) -> None:
    url = http_server.serve("/big.pth", big, slow=0.05, chunk=256 * 1024)
    env = registry_env(tmp_path, card_with_weights("lraspp_mobilenet_v3_large", "big", url, big))
    sha = hashlib.sha256(big).hexdigest()
    proc = zoo_popen(["fetch", "big", "--quiet"], env)
    wait_for(lambda: http_server.stats("/big.pth").bytes_sent >= 4 << 20)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    part = zoo_home / "weights" / "sha256" / f"{sha}.part"
    kept = part.stat().st_size
    assert 0 < kept < len(big)
    assert not (zoo_home / "weights" / "sha256" / sha).exists()  # nothing under the final name
    http_server.set_faults("/big.pth")
    http_server.reset_stats("/big.pth")
    rerun = run_zoo(["fetch", "big", "--quiet"], env=env)
    assert rerun.returncode == 0, rerun.stderr
    stats = http_server.stats("/big.pth")
    assert stats.statuses == [206]
    assert stats.bytes_sent == len(big) - kept < len(big)  # counted on the server
    path = Path(rerun.stdout.strip())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert not part.exists()


def test_four_processes_download_once(http_server: HTTPTestServer, big: bytes,
                                      tmp_path: Path) -> None:
    url = http_server.serve("/big.pth", big, slow=0.1, chunk=512 * 1024)
    env = registry_env(tmp_path, card_with_weights("lraspp_mobilenet_v3_large", "big", url, big))
    procs = [zoo_popen(["fetch", "big"], env) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in results]
    assert len({out for out, _ in results}) == 1
    stats = http_server.stats("/big.pth")
    assert (stats.full_downloads, stats.requests) == (1, 1)
    assert any("waiting for another zoo process" in err for _, err in results)  # they overlapped


def test_cache_commands(http_server: HTTPTestServer, tmp_path: Path, zoo_home: Path) -> None:
    env = tiny_env(http_server, tmp_path)
    assert run_zoo(["fetch", "tiny"], env=env).returncode == 0
    assert run_zoo(["cache", "path"]).stdout == f"{zoo_home}\n"
    [row] = json.loads(run_zoo(["cache", "list", "--json"]).stdout)
    assert row["sha256"] == TINY_SHA and row["size"] == len(TINY)
    assert row["refs"] == [{"model": "tiny", "weights": "test_v1"}]
    table = run_zoo(["cache", "list"]).stdout
    assert TINY_SHA[:12] in table and "tiny:test_v1" in table
    good = run_zoo(["cache", "verify"])
    assert good.returncode == 0 and "1 ok, 0 bad" in good.stdout
    blob = Path(row["path"])
    blob.write_bytes(b"\0" * len(TINY))
    bad = run_zoo(["cache", "verify"])
    assert bad.returncode == 1 and "BAD" in bad.stderr and not blob.exists()
    assert run_zoo(["fetch", "tiny"], env=env).returncode == 0
    cleared = run_zoo(["cache", "clear", "tiny"], env=env)
    assert cleared.returncode == 0 and "removed 1 file" in cleared.stdout
    assert json.loads(run_zoo(["cache", "list", "--json"]).stdout) == []


# -- bounded faults, as a user sees them ----------------------------------------------------


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (and no traceback)."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "internal error" not in lines[0] and "Traceback" not in proc.stderr
    return lines[0]


def test_a_trickling_server_ends_with_a_clear_message(http_server: HTTPTestServer,
                                                      tmp_path: Path) -> None:
    env = tiny_env(http_server, tmp_path, trickle=1)
    start = time.monotonic()
    proc = run_zoo(["fetch", "tiny", "--timeout", "1", "--retries", "1", "--quiet"], env=env)
    assert time.monotonic() - start < 10
    assert proc.returncode == 1 and proc.stdout == ""
    line = one_line(proc)
    assert "timed out:" in line and "gave up after 2 attempts" in line
    assert "--weights none" in line


@pytest.mark.slow
def test_timeout_5_against_one_byte_a_second_ends_within_a_minute(
    http_server: HTTPTestServer, tmp_path: Path
) -> None:
    """The issue's report: `zoo fetch --timeout 5` against a 1-byte-per-second server."""
    env = tiny_env(http_server, tmp_path, trickle=1)
    start = time.monotonic()
    proc = run_zoo(["fetch", "tiny", "--timeout", "5"], env=env)
    took = time.monotonic() - start
    assert proc.returncode == 1 and took < 60, (took, proc.stderr)
    assert "gave up after 4 attempts" in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize("value", ["2", "maybe"])
def test_bad_zoo_offline_is_exit_2(value: str) -> None:
    for extra in ([], ["--offline"]):
        proc = run_zoo(["fetch", "single_conv", "--weights", "none", *extra],
                       env={"ZOO_OFFLINE": value})
        assert proc.returncode == 2
        assert f"ZOO_OFFLINE='{value}' is not a yes/no value" in one_line(proc)


def test_a_damaged_sidecar_never_stops_the_commands(http_server: HTTPTestServer,
                                                    tmp_path: Path, zoo_home: Path) -> None:
    env = tiny_env(http_server, tmp_path)
    assert run_zoo(["fetch", "tiny"], env=env).returncode == 0
    sidecar = zoo_home / "weights" / "sha256" / f"{TINY_SHA}.json"
    for damage in (b"{not json", b"[]"):
        sidecar.write_bytes(damage)
        fetched = run_zoo(["fetch", "tiny", "--offline"], env=env)
        assert fetched.returncode == 0 and fetched.stdout.strip().endswith(TINY_SHA)
        assert fetched.stderr.count("damaged cache record") == 1
        assert json.loads(sidecar.read_text())["sha256"] == TINY_SHA  # repaired
        sidecar.write_bytes(damage)
        listed = run_zoo(["cache", "list", "--json"])
        assert listed.returncode == 0 and json.loads(listed.stdout)[0]["sha256"] == TINY_SHA
        sidecar.write_bytes(damage)
        verified = run_zoo(["cache", "verify"])
        assert verified.returncode == 0 and "1 ok, 0 bad" in verified.stdout
        assert "1 damaged record(s) repaired" in verified.stdout
    sidecar.write_bytes(b"\0\0\0")
    cleared = run_zoo(["cache", "clear"])
    assert cleared.returncode == 0 and "internal error" not in cleared.stderr
    assert not (zoo_home / "weights" / "sha256" / TINY_SHA).exists()
    assert http_server.stats("/tiny.pth").requests == 1


def test_cache_verify_reports_and_clear_removes_leftovers(http_server: HTTPTestServer,
                                                          tmp_path: Path,
                                                          zoo_home: Path) -> None:
    env = tiny_env(http_server, tmp_path)
    assert run_zoo(["fetch", "tiny"], env=env).returncode == 0
    blobs = zoo_home / "weights" / "sha256"
    temp = blobs / f".{TINY_SHA}.json.k1ll3d.tmp"
    part = blobs / f"{'ab' * 32}.part"
    for path in (temp, part):
        path.write_bytes(b"left by kill -9")
        os.utime(path, (0, 0))
    verified = run_zoo(["cache", "verify", "--json"])
    assert verified.returncode == 0
    report = json.loads(verified.stdout)
    assert [f["ok"] for f in report["files"]] == [True]
    assert {x["path"] for x in report["leftovers"]} == {str(temp), str(part)}
    text = run_zoo(["cache", "verify"]).stdout
    assert "2 leftover(s) of interrupted processes (`zoo cache clear` removes them)" in text
    cleared = run_zoo(["cache", "clear"])
    assert cleared.returncode == 0 and "removed 2 leftover(s)" in cleared.stdout
    assert not temp.exists() and not part.exists()
    assert json.loads(run_zoo(["cache", "verify", "--json"]).stdout)["leftovers"] == []


def test_pinned_local_file_that_does_not_match_is_exit_1(tmp_path: Path) -> None:
    local = tmp_path / "w.pth"
    local.write_bytes(TINY)
    for spec in (f"{local.as_uri()}#sha256={'0' * 64}", f"{local}#sha256={'0' * 64}"):
        proc = run_zoo(["fetch", "single_conv", "--weights", spec])
        assert proc.returncode == 1 and proc.stdout == ""
        line = one_line(proc)
        assert "sha256 mismatch for local file" in line and TINY_SHA in line
    good = run_zoo(["fetch", "single_conv", "--weights", f"{local}#sha256={TINY_SHA}"])
    assert good.returncode == 0 and good.stdout == f"{local}\n"


def test_a_full_disk_is_exit_1_and_leaves_no_partial_file(http_server: HTTPTestServer,
                                                          tmp_path: Path) -> None:
    """ZOO_HOME on a real 2 MiB tmpfs (skipped with the reason where mounting is refused)."""
    url = http_server.serve("/endless.pth", TINY, endless=True)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        proc = run_zoo(["fetch", "single_conv", "--weights", url], env={"ZOO_HOME": str(disk)})
        assert proc.returncode == 1
        line = one_line(proc)
        assert "no space left on the device" in line and "partial file was removed" in line
        assert not list(disk.rglob("*.part"))


def test_max_size_option(http_server: HTTPTestServer) -> None:
    url = http_server.serve("/endless.pth", TINY, endless=True)
    proc = run_zoo(["fetch", "single_conv", "--weights", url, "--max-size", "100KB"])
    assert proc.returncode == 1 and "--max-size of 97.7 KiB" in one_line(proc)
    for bad in ("lots", "0", "-5MB"):
        proc = run_zoo(["fetch", "single_conv", "--weights", url, "--max-size", bad])
        assert proc.returncode == 2 and "--max-size" in one_line(proc)
    for option in ("--deadline", "--timeout"):
        assert run_zoo(["fetch", "single_conv", option, "nan"]).returncode == 2


def test_defaults_shown_in_help_are_the_real_ones() -> None:
    text = run_zoo(["fetch", "--help"]).stdout
    for shown in ("--deadline 3600", "--max-size 4GiB", "--timeout 30", "(1 KiB/s)",
                  "0/false/no/off or empty"):
        assert shown in text


def test_a_waiter_takes_over_when_the_holder_is_killed(http_server: HTTPTestServer,
                                                       big: bytes, tmp_path: Path,
                                                       zoo_home: Path) -> None:
    url = http_server.serve("/big.pth", big, slow=0.1, slow_times=1, chunk=128 * 1024)
    env = registry_env(tmp_path, card_with_weights("lraspp_mobilenet_v3_large", "big", url, big))
    holder = zoo_popen(["fetch", "big", "--quiet"], env)
    owner = zoo_home / "weights" / "locks" / f"{hashlib.sha256(big).hexdigest()}.owner.json"
    wait_for(lambda: owner.exists() and http_server.stats("/big.pth").bytes_sent > 1 << 20)
    waiter = zoo_popen(["fetch", "big"], env)
    assert waiter.stderr is not None
    ready, _, _ = select.select([waiter.stderr], [], [], 60)
    said = waiter.stderr.readline() if ready else ""  # printed once it waits on the lock
    assert f"waiting for another zoo process that is downloading big weights test_v1: " \
           f"pid {holder.pid} on " in said
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=10)
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert hashlib.sha256(Path(out.strip()).read_bytes()).hexdigest() == \
        hashlib.sha256(big).hexdigest()
    assert http_server.stats("/big.pth").statuses[-1] == 206  # it resumed the dead one's part


def test_a_cold_export_downloads_while_torch_imports_and_errors_stay_one_line(
        http_server: HTTPTestServer, tmp_path: Path) -> None:
    """`zoo fetch --format` on an empty export cache resolves the weights on a thread while
    torch imports: the download lands and the export is made; a download that fails there is
    the same one line, exit 1, no traceback."""
    from zoo.export.cache import ArtifactCache

    home = tmp_path / "home"
    env = {**tiny_env(http_server, tmp_path), "ZOO_HOME": str(home)}
    cache = ArtifactCache(home / "artifacts")
    assert not cache.may_hold("tiny.pt")
    out = tmp_path / "out"
    first = run_zoo(["fetch", "tiny", "--format", "torchscript", "-o", str(out)], env=env)
    assert first.returncode == 0, first.stderr
    assert (out / "tiny.pt").is_file()
    assert cache.may_hold("tiny.pt") and not cache.may_hold("tiny.ptl")

    (tmp_path / "b").mkdir()
    env404 = {**tiny_env(http_server, tmp_path / "b", status=404),
              "ZOO_HOME": str(tmp_path / "home2")}
    failed = run_zoo(["fetch", "tiny", "--format", "lite", "-o", str(tmp_path / "o2")],
                     env=env404)
    assert failed.returncode == 1 and failed.stdout == ""
    [line] = failed.stderr.splitlines()
    assert "HTTP 404" in line
