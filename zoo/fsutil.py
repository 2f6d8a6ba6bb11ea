"""File helpers: hashing and atomic writes (temp file in the same folder + ``os.replace``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

CHUNK = 1 << 20


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


def atomic_copy(src: Path, dest: Path, *, link: bool = False) -> None:
    """Copy ``src`` to ``dest`` atomically (temp copy beside ``dest``, then rename).

    With ``link``, hard-link instead where the filesystem allows (no bytes copied); the two
    names then share one file, so only use it for files nobody edits in place.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        if link:
            os.unlink(tmp)
            try:
                os.link(src, tmp)
            except OSError:  # another filesystem, or no hard links: copy
                link = False
        if not link:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, FILE_MODE)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StatMemo:
    """Remembers files' sha256 by (size, mtime_ns) in one JSON file, so a re-check of an
    unchanged file costs a ``stat`` instead of a full read. A changed file is re-hashed."""

    def __init__(self, store: Path) -> None:
        self.store = store
        try:
            self._data: dict[str, dict] = json.loads(store.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self._data = {}

    def sha256(self, path: Path) -> str:
        """The file's sha256, from the memo when its size and mtime are unchanged."""
        st = path.stat()
        record = self._data.get(str(path.resolve()))
        if record and record["size"] == st.st_size and record["mtime_ns"] == st.st_mtime_ns:
            return str(record["sha256"])
        sha = sha256_file(path)
        self.remember(path, sha)
        return sha

    def remember(self, path: Path, sha: str) -> None:
        """Record ``path``'s current stat with a hash the caller already knows."""
        st = path.stat()
        self._data[str(path.resolve())] = {
            "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}

    def save(self) -> None:
        """Write the memo (best effort: a read-only store only costs re-hashing later)."""
        with contextlib.suppress(OSError):
            atomic_write_text(self.store, json.dumps(self._data, indent=1, sort_keys=True))
