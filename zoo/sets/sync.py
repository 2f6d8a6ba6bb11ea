"""`zoo sync`: make an output folder match a plan, and record the bytes in ``zoo.lock``.

Each entry of the plan is a local cache hit, a team-store pull or an export (the export
pipeline decides, under the run's custody rules). Every artifact is first made in a staging
folder (``OUT/.zoo-sync/staging``); only when all of them are there (and, with ``--locked``,
all match the lock byte for byte) are they moved into place, one rename per name; the lock is
written last, atomically. A killed sync leaves only staging, which the next run clears. Two
syncs of one folder at once: the second waits for the first's lock (a clear error after a
bound). Work fans out over local processes (``--jobs``), CI shards (``--shard I/N``, each
publishing to the team store) or an existing Ray cluster (``--ray``, :mod:`zoo.sets.on_ray`);
zoo schedules nothing across machines itself. Whatever the mode, the lock and the bytes are
the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import UsageError
from zoo.sets.lockfile import LOCK_NAME, Lock, LockedArtifact, LockedFile, read_lock, write_lock
from zoo.sets.plan import Entry, expand, plan_digest, read_plan

WORK = ".zoo-sync"
LOCK_WAIT = 600.0


@dataclass(frozen=True)
class StoreSpec:
    """A team store as plain values (picklable for worker processes)."""

    url: str
    options: tuple[str, ...] = ()
    trusted_keys: tuple[str, ...] = ()
    require_signed: bool = False
    publish: bool = False  # publish what this run exported (shards and Ray tasks do)
    sign: str | None = None  # a private key (PEM) to sign what is published


@dataclass
class SyncOptions:
    locked: bool = False
    dry_run: bool = False
    jobs: int = 1
    shard: tuple[int, int] | None = None  # (index from 1, count)
    verify: bool = False
    store: StoreSpec | None = None
    wait: float = LOCK_WAIT  # seconds to wait for another sync of the same folder
    ray: str | None = None  # a Ray cluster's address ("auto": RAY_ADDRESS or the local one)
    ray_retries: int = 3  # Ray's max_retries for a task whose worker or node dies
    ray_deadline: float = 20.0  # seconds to reach the Ray cluster


@dataclass
class SyncResult:
    output: Path
    lock_path: Path
    done: list[dict[str, Any]] = field(default_factory=list)
    wrote_lock: bool = False


Report = Callable[[dict[str, Any]], None]
#: watch(key, state): state is "running", "done" or "failed" (for progress displays)
Watch = Callable[[str, str], None]


def _silent(_event: dict[str, Any]) -> None:
    return None


def _unwatched(_key: str, _state: str) -> None:
    return None


def sync(plan_path: Path, options: SyncOptions | None = None, *,
         report: Report = _silent, watch: Watch = _unwatched) -> SyncResult:
    """Make the plan's output folder match the plan (see the module docstring).
    ``report`` gets one event per finished artifact; ``watch`` each export's state changes."""
    from zoo._core.locks import LockTimeout, OwnedLocks
    from zoo.catalog.registry import default_registry

    options = options or SyncOptions()
    plan_path = Path(plan_path)
    plan = read_plan(plan_path)
    registry = default_registry()
    entries = expand(plan, registry)
    digest = plan_digest(entries)
    root = (plan_path.parent / plan.output.folder).resolve()
    lock_path = plan_path.parent / LOCK_NAME
    lock = read_lock(lock_path)
    if options.locked:
        _check_locked(lock, entries, digest, lock_path)
    mine = _shard(entries, options.shard)
    result = SyncResult(root, lock_path)
    if options.dry_run:
        state = _state(root)
        for entry in mine:
            event = _plan_event(entry, root, lock, options, state)
            result.done.append(event)
            report(event)
        return result
    work = root / WORK
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {root}: {exc.strerror or exc}") \
            from None
    try:
        with OwnedLocks(work).hold("sync", options.wait, what=f"zoo sync {plan_path}"):
            _run(mine, entries, root, work, lock, digest, options, report, result, watch)
    except LockTimeout as exc:
        raise UsageError(f"another zoo sync is writing {root}: held by {exc.holder}; wait for "
                         "it, or end it") from None
    return result


def _shard(entries: list[Entry], shard: tuple[int, int] | None) -> list[Entry]:
    if shard is None:
        return entries
    index, count = shard
    return [e for i, e in enumerate(entries) if i % count == index - 1]


def _check_locked(lock: Lock | None, entries: list[Entry], digest: str, where: Path) -> None:
    if lock is None:
        raise UsageError(f"--locked needs {where}; run `zoo sync` first to write it")
    if lock.plan != digest:
        locked = set(lock.by_key())
        planned = {e.key for e in entries}
        extra = sorted(planned - locked)[:3]
        gone = sorted(locked - planned)[:3]
        detail = (f"not locked: {', '.join(extra)}" if extra else "") + \
            ("; " if extra and gone else "") + (f"not planned: {', '.join(gone)}" if gone
                                                 else "")
        raise UsageError(f"the plan and {where.name} disagree ({detail or 'settings changed'})"
                         "; run `zoo sync` to update the lock, or restore the plan")


def _state(root: Path) -> dict[str, Any]:
    """The stat of every file the last sync put in place (read once per run)."""
    from zoo._core.fs import read_json_record

    state, _why = read_json_record(root / WORK / "state.json")
    return state or {}


def _present(root: Path, locked: LockedArtifact, verify: bool,
             state: dict[str, Any]) -> bool:
    """Whether the locked files are in place (size, and sha256 with ``verify`` or when the
    recorded stat no longer matches)."""
    from zoo._core.fs import sha256_file

    for f in locked.files:
        path = root / locked.folder / f.path
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_size != f.size:
            return False
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino, f.sha256]
        if (verify or state.get(str(path.relative_to(root))) != stamp) and \
                sha256_file(path) != f.sha256:
            return False
    return True


def _plan_event(entry: Entry, root: Path, lock: Lock | None, options: SyncOptions,
                state: dict[str, Any]) -> dict[str, Any]:
    """What a sync would do for ``entry`` (``--dry-run``): nothing is resolved or built."""
    locked = lock.by_key().get(entry.key) if lock else None
    size: int | None
    if locked is not None and _present(root, locked, options.verify, state):
        action, size = "present", locked.size
    else:
        action, size = _would(entry, locked)
    return {**entry.as_dict(), "action": action, "size": size}


def _would(entry: Entry, locked: LockedArtifact | None) -> tuple[str, int | None]:
    from zoo.export.cache import ArtifactCache

    identity = locked.identity if locked else None
    if identity:
        hit = ArtifactCache(budget=None).lookup(identity)
        if hit is not None:
            return "cache", hit.size
    return ("pull or export" if identity else "export"), (locked.size if locked else None)


def _run(mine: list[Entry], entries: list[Entry], root: Path, work: Path, lock: Lock | None,
         digest: str, options: SyncOptions, report: Report, result: SyncResult,
         watch: Watch = _unwatched) -> None:
    staging = work / "staging"
    shutil.rmtree(staging, ignore_errors=True)  # what a killed sync left
    locked = lock.by_key() if lock else {}
    state = _state(root)
    todo, made = [], {}
    for entry in mine:
        old = locked.get(entry.key)
        if old is not None and lock is not None and lock.plan == digest and \
                _present(root, old, options.verify, state):
            made[entry.key] = old
            event = {**entry.as_dict(), "action": "present", "size": old.size}
            result.done.append(event)
            report(event)
        else:
            todo.append(entry)
            watch(entry.key, "queued")
    for artifact in _realize(todo, staging, options, watch):
        made[artifact.key] = artifact
        if options.locked:
            _same_bytes(locked[artifact.key], artifact)
        event = {"key": artifact.key, "model": artifact.model, "format": artifact.format,
                 "precision": artifact.precision, "action": artifact.source,
                 "size": artifact.size, "folder": artifact.folder}
        result.done.append(event)
        report(event)
    for entry in todo:  # everything is staged (and checked): now into place
        _install(staging / _slot(entry), root / made[entry.key].folder, made[entry.key])
    _remember(root, [made[e.key] for e in mine])
    shutil.rmtree(staging, ignore_errors=True)
    if options.locked or (options.shard is not None and options.shard[1] > 1):
        return  # --locked installs what the lock says; a shard holds only part of the plan
    from zoo import __version__

    new = Lock(plan=digest, zoo=__version__,
               artifacts=tuple(made[e.key] for e in entries if e.key in made))
    write_lock(result.lock_path, new)
    result.wrote_lock = True


def _same_bytes(want: LockedArtifact, got: LockedArtifact) -> None:
    mine = {f.path: f.sha256 for f in got.files}
    theirs = {f.path: f.sha256 for f in want.files}
    if mine != theirs:
        differ = sorted(p for p in set(mine) | set(theirs) if mine.get(p) != theirs.get(p))
        raise UsageError(f"--locked: {want.key} gives other bytes than zoo.lock records "
                         f"({', '.join(differ[:3])}); nothing was changed. The lock was made "
                         "with other code or weights: run `zoo sync` to update it")


def _slot(entry: Entry) -> str:
    return hashlib.sha256(entry.key.encode()).hexdigest()[:16]


def _realize(todo: list[Entry], staging: Path, options: SyncOptions,
             watch: Watch = _unwatched) -> Iterator[LockedArtifact]:
    """Make each entry in ``staging/<slot>`` (in order, over ``options.jobs`` processes, or as
    Ray tasks), yielding each as it finishes."""
    staging.mkdir(parents=True, exist_ok=True)
    if options.ray is not None:
        from zoo.sets.on_ray import realize_on_ray

        yield from realize_on_ray(todo, staging, options, watch)
        return
    jobs = max(1, min(options.jobs, len(todo)))
    if jobs == 1:
        for entry in todo:
            watch(entry.key, "running")
            try:
                artifact = realize(entry, staging / _slot(entry), options.store)
            except BaseException:
                watch(entry.key, "failed")
                raise
            watch(entry.key, "done")
            yield artifact
        return
    with ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init,
                             initargs=(_worker_threads(),)) as pool:
        futures = {pool.submit(realize, e, staging / _slot(e), options.store): e for e in todo}
        queued = list(todo)
        for entry in queued[:jobs]:  # the pool starts work in submission order
            watch(entry.key, "running")
        started = jobs
        for future in as_completed(futures):
            entry = futures[future]
            if started < len(queued):
                watch(queued[started].key, "running")
                started += 1
            try:
                artifact = future.result()
            except BaseException:
                watch(entry.key, "failed")
                raise
            watch(entry.key, "done")
            yield artifact


def _worker_threads() -> int:
    """Torch threads of a worker process: the export's own count (it pins it anyway)."""
    from zoo.export.pipeline import EXPORT_THREADS

    return EXPORT_THREADS


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def realize(entry: Entry, folder: Path, store: StoreSpec | None) -> LockedArtifact:
    """Export (or pull, or take from the cache) one entry into ``folder``; its lock record.
    The export runs on zoo.export.pipeline.EXPORT_THREADS torch threads, as every export
    does, so the bytes do not depend on the mode."""
    from zoo import __version__
    from zoo.catalog.registry import default_registry
    from zoo.export import get_exporter
    from zoo.export.base import ExportOptions, default_extra
    from zoo.export.pipeline import export_artifact
    from zoo.weights.resolve import UNTRAINED, resolve_weights

    registry = default_registry()
    card = registry.get(entry.model)
    exporter = get_exporter(entry.format, registry.host)
    weights = UNTRAINED if entry.weights == "none" else resolve_weights(
        card, None if entry.weights == "default" else entry.weights, progress="never")
    options = ExportOptions(input_size=entry.input_size, precision=entry.precision,
                            keep_aux=entry.keep_aux,
                            extra=default_extra(entry.precision, exporter.extra_options))
    config, custody = _store_config(store)
    outcome = export_artifact(card, weights, entry.format, folder, options, registry=registry,
                              pull=config.pull_for_export if config is not None else None,
                              custody=custody)
    manifest = outcome.manifest
    prov = outcome.provenance
    record, signer = (prov.get("record"), prov.get("signer")) if prov.get("kind") == "pulled" \
        else (None, None)
    if config is not None and store is not None and store.publish and record is None:
        published = config.publish(outcome.artifact)  # idempotent: an identical record is kept
        record = published.record.digest
        sig = published.record.signature
        signer = sig.public_key.fingerprint if sig is not None else None
    return LockedArtifact(
        key=entry.key, model=entry.model, format=entry.format, precision=entry.precision,
        input_size=entry.input_size, folder=entry.folder, artifact=outcome.artifact.name,
        identity=manifest.export.identity or "", weights=weights.sha256 or "untrained",
        manifest_sha256=sha256_of(outcome.manifest_path), files=folder_files(folder),
        source=outcome.source,
        code={"zoo": __version__,
              "builder": f"{manifest.export.builder.plugin} "
                         f"{manifest.export.builder.source_sha256[:12]}"
              if manifest.export.builder else "",
              "exporter": f"{manifest.export.exporter.plugin} "
                          f"{manifest.export.exporter.source_sha256[:12]}"
              if manifest.export.exporter else ""},
        store_record=record, signer=signer)


def folder_files(folder: Path) -> tuple[LockedFile, ...]:
    """Every file under ``folder`` but SHA256SUMS (written at install), sorted, hashed."""
    from zoo._core.fs import sha256_file

    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != "SHA256SUMS":
            files.append(LockedFile(rel, sha256_file(path), path.stat().st_size))
    return tuple(files)


def sha256_of(path: Path) -> str:
    from zoo._core.fs import sha256_file

    return sha256_file(path)


def _store_config(store: StoreSpec | None) -> tuple[Any, Any]:
    from zoo.store.config import custody_for, store_config

    config = store_config(store.url, options=list(store.options), publish=store.publish,
                          sign=Path(store.sign) if store.sign else None,
                          trusted_keys=[Path(p) for p in store.trusted_keys]) if store else None
    custody = custody_for(config, trusted_keys=[Path(p) for p in store.trusted_keys]
                          if store else None,
                          require_signed=bool(store and store.require_signed))
    return config, custody


def _install(staged: Path, target: Path, artifact: LockedArtifact) -> None:
    """Move one staged artifact's files into ``target`` (each name by one rename) and update
    the folder's SHA256SUMS."""
    from zoo.export.checksums import update_sums

    target.mkdir(parents=True, exist_ok=True)
    tops = sorted({f.path.split("/", 1)[0] for f in artifact.files})
    for name in tops:
        src, dest = staged / name, target / name
        if src.is_dir():
            if dest.exists():
                old = target / f".{name}.old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(dest, old)
                os.replace(src, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(src, dest)
        else:
            os.replace(src, dest)
    update_sums(target, {f.path: f.sha256 for f in artifact.files})


def _remember(root: Path, artifacts: list[LockedArtifact]) -> None:
    """Record the stat of every file in place, so a no-op sync costs a stat per file."""
    import json

    from zoo._core.fs import atomic_write_text, read_json_record

    state, _why = read_json_record(root / WORK / "state.json")
    state = dict(state or {})
    for a in artifacts:
        for f in a.files:
            path = root / a.folder / f.path
            with contextlib.suppress(OSError):
                st = path.stat()
                state[str(path.relative_to(root))] = [st.st_size, st.st_mtime_ns, st.st_ino,
                                                      f.sha256]
    with contextlib.suppress(OSError):
        atomic_write_text(root / WORK / "state.json", json.dumps(state, sort_keys=True))
