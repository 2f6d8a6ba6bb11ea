"""Installing a cached export into an output folder: copies (reflink where possible, never
links), each re-hashed before it takes its name, each name appearing atomically."""

from __future__ import annotations

import builtins
import contextlib
import os
import stat
import tempfile
from pathlib import Path

from zoo._core.fs import sha256_file
from zoo.errors import ExportError
from zoo.export.cache.base import CacheBase
from zoo.export.cache.entries import (
    BUSY_TIMEOUT,
    CachedExport,
    _bare,
)
from zoo.export.cache.files import (
    DIR_MODE,
    FILE_MODE,
    _clone,
    _exchange,
    _remove,
    _tree,
)


class InstallMixin(CacheBase):
    """Copy entries out of the cache."""

    def install(self, entry: CachedExport, out_dir: Path,
                names: builtins.list[str]) -> dict[str, str]:
        """Copy the top-level ``names`` of ``entry`` into ``out_dir``; returns ``{relative
        path: sha256}`` of every file now in place (a folder artifact: one item per file).

        Copies (reflink where the file system can), never links: an output never shares an
        inode with the cache. Each name appears atomically (temp name, then rename; a folder
        is swapped in whole). A destination that already holds the recorded bytes is left
        alone. Every copy is re-hashed against the record before it takes its name.
        """
        plan: dict[str, dict[str, str]] = {}
        for name in names:
            if not _bare(name):
                raise ValueError(f"not a bare file name: {name!r}")
            members = {rel: sha for rel, sha in entry.files.items()
                       if rel == name or rel.startswith(f"{name}/")}
            if not members:
                raise ValueError(f"{name!r} is not in the cache entry {entry.folder}")
            plan[name] = members
        out_dir.mkdir(parents=True, exist_ok=True)
        written: dict[str, str] = {}
        guard = self._try_hold(entry.key, BUSY_TIMEOUT) if self.writable and \
            entry.folder.parent == self.root else contextlib.nullcontext(True)
        with guard:
            for name, members in plan.items():
                if name in members:
                    self._install_file(entry, name, out_dir / name, members[name])
                else:
                    self._install_folder(entry, name, out_dir / name, members)
                written.update(members)
        return written

    def _copy_checked(self, entry: CachedExport, rel: str, dest: Path, sha: str) -> None:
        src = entry.folder / rel
        try:
            st = src.lstat()
        except OSError as exc:
            raise ExportError(f"the cached export {entry.folder} lost {rel} while it was being "
                              f"installed ({exc.strerror or exc}); run the command again") from exc
        if not stat.S_ISREG(st.st_mode):
            raise ExportError(f"the cached export {entry.folder}: {rel} is not a regular file; "
                              "run `zoo cache verify`")
        _clone(src, dest)
        os.chmod(dest, FILE_MODE)
        if sha256_file(dest) != sha:
            raise ExportError(f"the cached export {entry.folder}: {rel} no longer hashes to "
                              "its recorded sha256; run `zoo cache verify` and the command "
                              "again")

    def _install_file(self, entry: CachedExport, name: str, dest: Path, sha: str) -> None:
        with contextlib.suppress(OSError):
            st = dest.lstat()
            if stat.S_ISREG(st.st_mode) and sha256_file(dest) == sha:
                return  # already the recorded bytes
            if stat.S_ISDIR(st.st_mode):
                raise ExportError(f"cannot install {name} into {dest.parent}: a folder of that "
                                  "name is in the way")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        try:
            self._copy_checked(entry, name, Path(tmp), sha)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _install_folder(self, entry: CachedExport, name: str, dest: Path,
                        members: dict[str, str]) -> None:
        if dest.is_dir() and not dest.is_symlink():
            found, why = _tree(dest)
            want = {rel.split("/", 1)[1]: sha for rel, sha in members.items()}
            if why is None and set(found) == set(want) and all(
                    sha256_file(dest / rel) == sha for rel, sha in want.items()):
                return
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=dest.parent))
        old: Path | None = None
        try:
            os.chmod(tmp, DIR_MODE)
            for rel, sha in members.items():
                part = tmp / rel.split("/", 1)[1]
                if not part.parent.is_dir():
                    part.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
                part.touch()
                self._copy_checked(entry, rel, part, sha)
            if os.path.lexists(dest):
                if dest.is_dir() and not dest.is_symlink() and _exchange(tmp, dest):
                    old = tmp  # tmp now holds the previous folder
                else:
                    old = Path(f"{tmp}.old")
                    os.rename(dest, old)
                    try:
                        os.rename(tmp, dest)
                    except OSError:
                        os.rename(old, dest)  # put the user's folder back
                        old = None
                        raise
            else:
                os.rename(tmp, dest)
        except BaseException:
            if old is None or old != tmp:
                _remove(tmp)
            raise
        if old is not None:
            _remove(old)
