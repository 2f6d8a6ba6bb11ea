"""File-system helpers, written once: hashing, atomic writes (temp file in the same folder +
``os.replace``), removal, stale temp files, reading small JSON records that may be damaged,
free space, process liveness, and naming disk failures plainly."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from zoo._core.jsonio import JSONRefused, json_object

CHUNK = 1 << 20
RECORD_MAX = 1 << 20  # a JSON record bigger than this is damaged, not read
TEMP_PREFIX_SUFFIX = (".", ".tmp")  # what atomic writes name their temp files: .NAME.XXXX.tmp
DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _default_mode()  # what open() would give; mkstemp alone gives 0600


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json_record(path: Path, limit: int = RECORD_MAX
                     ) -> tuple[dict[str, Any] | None, str | None]:
    """Read a small JSON object: ``(data, None)``; ``(None, None)`` when there is no file;
    ``(None, why)`` when it is there but damaged (unreadable, over ``limit`` bytes, not UTF-8
    JSON, not an object). Never raises for what the file holds."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"
    if len(raw) > limit:
        return None, f"larger than {limit} bytes"
    try:
        return json_object(raw, limit, "record"), None
    except JSONRefused as exc:
        return None, str(exc)


_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """A warning on zoo's channel (:mod:`zoo._core.log`), once per ``key`` per process."""
    if key in _warned:
        return
    _warned.add(key)
    from zoo._core.log import warn

    warn(message, once=False)


def remove_path(path: Path) -> bool:
    """Delete a file, link or folder at ``path`` (best effort); True when it is gone."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def is_stale_temp(path: Path, age: float = 60.0) -> bool:
    """True for an atomic-write temp file (``.NAME.XXXX.tmp``) untouched for ``age`` seconds:
    what a process killed mid-write leaves. Younger ones may belong to a live writer."""
    name = path.name
    if not (name.startswith(TEMP_PREFIX_SUFFIX[0]) and name.endswith(TEMP_PREFIX_SUFFIX[1])):
        return False
    try:
        return time.time() - path.lstat().st_mtime >= age
    except OSError:
        return False


def free_bytes(folder: Path) -> int | None:
    """Free bytes on the file system holding ``folder`` (its nearest existing parent), or
    None when that cannot be told."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def human_size(n: int) -> str:
    """1536 -> '1.5 KiB' (zoo's one size printer, :func:`zoo._core.settings.format_size`)."""
    from zoo._core.settings import format_size

    return format_size(n)


def disk_error_message(exc: OSError, path: Path, *, needed: int | None = None,
                       written: int | None = None, removed: bool = False,
                       home_hint: str = "") -> str:
    """One line naming a failed write: what happened, where, how much space was needed when
    known, and the way out. ``removed``: the partial file was deleted; ``home_hint`` names the
    setting that moves the folder elsewhere."""
    what = DISK_ERRNOS.get(exc.errno or 0) or (exc.strerror or type(exc).__name__).lower()
    line = f"cannot write {path}: {what}"
    if exc.errno in FULL_ERRNOS:
        if needed is not None:
            free = free_bytes(path.parent)
            line += f"; {human_size(needed)} needed"
            if free is not None:
                line += f", {human_size(free)} free"
        elif written is not None:
            line += f" after {human_size(written)} (the full size was not announced)"
        line += "; the partial file was removed" if removed else ""
        line += "; free some space"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        line += "; downloads need a writable folder (cache hits do not)"
    return line + (f", or {home_hint}" if home_hint else "")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (True when that cannot be told)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True
