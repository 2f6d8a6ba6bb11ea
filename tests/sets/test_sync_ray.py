"""`zoo sync --ray` on a real local Ray cluster (`ray start --head` on 127.0.0.1, 2 CPUs, no
dashboard, no usage stats), reached with its address as a KubeRay cluster would be: same lock
and bytes as a sequential run, a worker killed mid-task is retried, tasks publish to a team
store (moto's S3 server) when there is one, and an unreachable cluster is one line, fast."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sets.test_sync import PLAN, app, events, files, zoo_sync
from tests.support.s3server import S3Store

ray = pytest.importorskip("ray", reason="zoo[ray] is installed by .ci/run")


@dataclass
class Cluster:
    address: str
    process: subprocess.Popen[bytes]
    home: Path  # the workers' ZOO_HOME

    def pids(self) -> list[int]:
        """Every process of this cluster (its own session: workers get process groups of
        their own within it)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) == self.process.pid:
                        found.append(int(entry))
                except OSError:
                    continue
        return found


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A Ray head node of our own (its own process group, every port chosen free), stopped
    with its processes at the end of the module."""
    root = tmp_path_factory.mktemp("ray")
    # Ray's sockets live under --temp-dir and a Unix socket path has at most 107 bytes: pytest's
    # folders (deeper under xdist) are too long, so the sessions go in a short folder of /tmp
    short = Path(tempfile.mkdtemp(prefix="zray", dir="/tmp"))
    gcs, agent, grpc, env_agent, metrics = _free_ports(5)
    ray_bin = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "ZOO_HOME": str(root / "home")}
    log = (root / "ray.log").open("wb")
    process = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--num-cpus", "2",
         "--include-dashboard=false", "--dashboard-agent-listen-port", str(agent),
         "--dashboard-agent-grpc-port", str(grpc), "--runtime-env-agent-port",
         str(env_agent), "--metrics-export-port", str(metrics), "--disable-usage-stats",
         "--temp-dir", str(short)],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while b"Ray runtime started" not in (root / "ray.log").read_bytes():
        assert process.poll() is None and time.monotonic() < deadline, \
            (root / "ray.log").read_text()[-2000:]
        time.sleep(0.2)
    yield Cluster(f"127.0.0.1:{gcs}", process, root / "home")
    process.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(20)
    cluster_pids = Cluster("", process, root).pids()
    for pid in cluster_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
    process.wait(10)
    log.close()
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plan synced by one process (the reference)."""
    folder = app(tmp_path_factory.mktemp("sequential"))
    proc = zoo_sync(folder)
    assert proc.returncode == 0, proc.stderr
    return folder


def ray_env() -> dict[str, str]:
    return {"RAY_USAGE_STATS_ENABLED": "0"}


def test_ray_gives_the_sequential_lock_and_bytes(tmp_path: Path, cluster: Cluster,
                                                  sequential: Path) -> None:
    folder = app(tmp_path)
    proc = zoo_sync(folder, "--ray", cluster.address, "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(e["action"] for e in events(proc)) == ["export", "export"]
    assert (folder / "zoo.lock").read_text() == (sequential / "zoo.lock").read_text()
    assert files(folder / "models") == files(sequential / "models")
    assert list((folder / "models" / ".zoo-sync").glob("staging/*")) == []
    # the exports ran on the cluster's workers (their ZOO_HOME), not in the driver
    assert any(cluster.home.rglob("*.ptl")) and not any((tmp_path / "home").rglob("*.ptl"))


def _task_worker(cluster: Cluster, name: str) -> int | None:
    """The pid of a worker of this cluster running the task named ``name``."""
    for pid in cluster.pids():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if title.startswith(b"ray::") and name.encode() in title:
            return pid
    return None


def test_a_worker_killed_during_its_task_is_retried_and_the_sync_completes(
        tmp_path: Path, cluster: Cluster, sequential: Path) -> None:
    plan = PLAN.replace('["torchscript", "lite"]', '["torchscript", "lite", "onnx"]')
    folder = app(tmp_path, plan)
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home"), **ray_env()}
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "sync", "--plan",
                             str(folder / "zoo.toml"), "--ray", cluster.address, "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    victim = None
    while victim is None:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        victim = _task_worker(cluster, "onnx")
        time.sleep(0.02)
    os.kill(victim, signal.SIGKILL)  # a worker of our cluster, mid-task
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "will be retried" in err  # Ray's word for it, on stderr (stdout is --json's)
    assert sorted(e["key"] for e in map(json.loads, out.splitlines())) == [
        "single_conv/lite/fp32/32x48", "single_conv/onnx/fp32/32x48",
        "single_conv/torchscript/fp32/32x48"]
    assert not Path(f"/proc/{victim}").exists() or \
        b"zombie" in Path(f"/proc/{victim}/status").read_bytes().lower()
    mine = files(folder / "models")
    assert "single_conv/single_conv.onnx" in mine
    assert {k: v for k, v in files(sequential / "models").items()
            if not k.endswith("SHA256SUMS")}.items() <= mine.items()


def test_ray_tasks_publish_to_the_team_store_and_the_driver_pulls(
        tmp_path: Path, cluster: Cluster, sequential: Path, s3_store: S3Store) -> None:
    folder = app(tmp_path)
    store = ["--store", s3_store.url, *s3_store.server.store_options()]
    proc = zoo_sync(folder, "--ray", cluster.address, "--json", *store)
    assert proc.returncode == 0, proc.stderr
    assert files(folder / "models") == files(sequential / "models")
    lock = (folder / "zoo.lock").read_text()
    assert lock.count("store_record = ") == 2  # the records the tasks published

    # a second machine: empty cache, only the plan, the lock and the store: no export work
    clone = app(tmp_path / "clone")
    (clone / "zoo.lock").write_text(lock)
    pulled = zoo_sync(clone, "--locked", "--json", *store, home=tmp_path / "other")
    assert pulled.returncode == 0, pulled.stderr
    assert [e["action"] for e in events(pulled)] == ["store", "store"]
    assert files(clone / "models") == files(sequential / "models")


def test_an_unreachable_cluster_is_one_line_within_the_deadline(tmp_path: Path) -> None:
    (port,) = _free_ports(1)
    folder = app(tmp_path)
    start = time.monotonic()
    proc = zoo_sync(folder, "--ray", f"127.0.0.1:{port}")
    assert time.monotonic() - start < 30
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"Ray cluster at 127.0.0.1:{port} is unreachable" in lines[0]
    assert not (folder / "zoo.lock").exists()
    bad = zoo_sync(folder, "--ray", "not an address")
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
    both = zoo_sync(folder, "--ray", f"127.0.0.1:{port}", "--jobs", "2")
    assert both.returncode == 2 and "use one" in both.stderr
