"""`zoo sync --ray [ADDRESS]`: one Ray task per export on an existing Ray cluster.

zoo schedules nothing itself: each export is a Ray task (one CPU, ``max_retries`` for a worker
or node that dies, per Ray's rules; an export's own error is not retried, it is reported by
name). A task exports into a temporary folder on its node; with a team store it publishes
there and the driver pulls the record (checked like any pull), else (or with ``--locked``,
which writes nothing to the store) it returns the bytes to the driver. Either way the driver
re-hashes every file against what the task reported before it is staged, so the lock and the
bytes are those a sequential run makes.

The cluster is reached with ``ray.init(address=...)`` (``auto``: ``RAY_ADDRESS``, else the
cluster started on this machine); an address that does not answer is one error line within
``SyncOptions.ray_deadline`` seconds, never a hang. The nodes run their own zoo (the same
version: the lock records the code that made each artifact) with their own environment.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ExportError, UsageError, ZooError

if TYPE_CHECKING:
    from zoo.sets.lockfile import LockedArtifact
    from zoo.sets.plan import Entry
    from zoo.sets.sync import StoreSpec, SyncOptions, Watch

AUTO = "auto"
_ADDRESS = re.compile(r"^(?:ray://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]{1,253}):(\d{1,5})$")
MAX_SHOWN = 5


def run_entry(entry: Entry, store: StoreSpec | None, publish: bool
              ) -> tuple[LockedArtifact, dict[str, bytes] | None]:
    """The Ray task: export (or pull, or take from the node's cache) one entry; with
    ``publish``, publish it to ``store`` (then only its lock record comes back), else return
    its bytes."""
    from dataclasses import replace

    from zoo.sets.sync import realize

    if store is not None:
        store = replace(store, publish=publish)
    with tempfile.TemporaryDirectory(prefix="zoo-ray-") as tmp:
        folder = Path(tmp) / "artifact"
        artifact = realize(entry, folder, store)
        if store is not None and publish:
            return artifact, None
        return artifact, {f.path: (folder / f.path).read_bytes() for f in artifact.files}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'zoo[ray]'") from None
    return ray


def resolve_address(address: str | None) -> str:
    """The address to connect to: ``address``, else ``RAY_ADDRESS``, else ``auto``;
    UsageError for one that is not HOST:PORT, ray://HOST:PORT or auto."""
    target = (address or "").strip() or os.environ.get("RAY_ADDRESS", "").strip() or AUTO
    if target != AUTO and not _ADDRESS.match(target):
        raise UsageError(f"--ray {target[:100]!r}: expected HOST:PORT (the head node's GCS "
                         "port, e.g. 127.0.0.1:6379), ray://HOST:PORT, or nothing (auto)")
    return target


def _probe(target: str, deadline: float) -> None:
    """A TCP connection to the head node, so a dead address fails fast with its reason."""
    match = _ADDRESS.match(target)
    assert match is not None
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=max(0.1, deadline)).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ZooError(f"the Ray cluster at {target} is unreachable ({reason}); start one "
                       "(`ray start --head`) or pass the head node's address to --ray") from None


def connect(ray: Any, address: str | None, deadline: float) -> str:
    """``ray.init`` on an existing cluster within ``deadline`` seconds; the address used."""
    target = resolve_address(address)
    start = time.monotonic()
    if target != AUTO:
        _probe(target, deadline)
    outcome: dict[str, BaseException] = {}

    def init() -> None:
        import logging

        try:
            ray.init(address=target, log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=True)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=init, name="zoo-ray-init", daemon=True)
    thread.start()
    thread.join(max(0.1, deadline - (time.monotonic() - start)))
    if thread.is_alive():
        raise ZooError(f"the Ray cluster at {target} did not answer within {deadline:g} s; "
                       "check that the address is a Ray head node (GCS port) and that it runs")
    if "error" in outcome:
        first = (str(outcome["error"]).strip().splitlines() or ["no detail"])[0][:200]
        where = "on this machine (RAY_ADDRESS is not set)" if target == AUTO else f"at {target}"
        raise ZooError(f"cannot reach a Ray cluster {where}: {first}; start one (`ray start "
                       "--head`) or pass its address to --ray")
    return target


def _failure(ray: Any, exc: BaseException) -> str:
    """One line for a failed task: the export's own error, or what Ray says happened."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ZooError):
        return str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    if isinstance(exc, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError):
        return f"its worker died on every attempt ({type(exc).__name__})"
    text = str(cause or exc).strip().splitlines()
    return f"{type(cause or exc).__name__}: {text[-1] if text else ''}"[:300]


def realize_on_ray(todo: list[Entry], staging: Path, options: SyncOptions,
                   watch: Watch) -> Iterator[LockedArtifact]:
    """Run every entry as a Ray task; stage each result as it finishes (checked), then raise
    ExportError naming every task that failed."""
    ray = _import_ray()
    # Ray prints its raylet's messages (a worker died, a task is retried) on sys.stdout:
    # stdout is for --json, so they go to stderr while Ray's code runs; never while the
    # caller's own code runs between two artifacts
    tasks = _run_tasks(ray, todo, staging, options, watch)
    try:
        while True:
            with contextlib.redirect_stdout(sys.stderr):
                artifact = next(tasks, None)
            if artifact is None:
                return
            yield artifact
    finally:
        with contextlib.redirect_stdout(sys.stderr):
            tasks.close()


def _run_tasks(ray: Any, todo: list[Entry], staging: Path, options: SyncOptions,
               watch: Watch) -> Generator[LockedArtifact, None, None]:
    from zoo.sets.sync import _slot

    connect(ray, options.ray, options.ray_deadline)
    try:
        task = ray.remote(num_cpus=1, max_retries=options.ray_retries,
                          retry_exceptions=False)(run_entry)
        # with a store, tasks hand their bytes over through it (--locked writes nothing there)
        publish = options.store is not None and not options.locked
        refs = {task.options(name=f"zoo-sync {e.key}").remote(e, options.store, publish): e
                for e in todo}
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        queued = list(todo)
        for entry in queued[:slots]:  # Ray starts tasks in submission order as CPUs free up
            watch(entry.key, "running")
        started = min(slots, len(queued))
        pending, failed = list(refs), []
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            entry = refs[ready[0]]
            if started < len(queued):
                watch(queued[started].key, "running")
                started += 1
            try:
                artifact, blobs = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                watch(entry.key, "failed")
                failed.append(f"{entry.key}: {_failure(ray, exc)}")
                continue
            try:
                _stage(artifact, blobs, staging / _slot(entry), options.store)
            except (ZooError, OSError) as exc:  # bytes that are not what the task reported
                watch(entry.key, "failed")
                failed.append(f"{entry.key}: {str(exc).splitlines()[0][:300] if str(exc) else exc}")
                continue
            watch(entry.key, "done")
            yield artifact
        if failed:
            more = f"; and {len(failed) - MAX_SHOWN} more" if len(failed) > MAX_SHOWN else ""
            raise ExportError(f"{len(failed)} of {len(todo)} exports failed on Ray: "
                              f"{'; '.join(failed[:MAX_SHOWN])}{more}")
    finally:
        ray.shutdown()


def _stage(artifact: LockedArtifact, blobs: dict[str, bytes] | None, folder: Path,
           store: StoreSpec | None) -> None:
    """Put a task's artifact into ``folder``: its bytes, or a pull of what it published;
    every file must hash to what the task reported."""
    from zoo._core.fs import atomic_write_bytes
    from zoo._core.names import inside
    from zoo.sets.sync import _store_config, folder_files

    if blobs is None:
        config, _custody = _store_config(store)
        if config is None or config.pull(artifact.identity, folder, include_sums=False) is None:
            raise ExportError(f"{artifact.key}: the Ray task published it, but the store has no "
                              f"record for identity {artifact.identity[:16]}…")
    else:
        for rel, data in blobs.items():
            if rel not in {f.path for f in artifact.files} or not inside(rel) or \
                    rel in ("", "SHA256SUMS"):
                raise ExportError(f"{artifact.key}: the Ray task returned {rel[:80]!r}, which is "
                                  "not a file it reported inside its folder")
            atomic_write_bytes(folder / rel, data)
    got = {f.path: f.sha256 for f in folder_files(folder)}
    want = {f.path: f.sha256 for f in artifact.files}
    if got != want:
        differ = sorted(p for p in set(got) | set(want) if got.get(p) != want.get(p))
        raise ExportError(f"{artifact.key}: the bytes that reached the driver differ from what "
                          f"the Ray task reported ({', '.join(differ[:3])})")
