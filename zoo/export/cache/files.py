"""File-system moves of the export cache: walking an entry, copying without links (reflink,
copy_file_range, plain copy), swapping folders atomically, removing, naming disk errors."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import sys
import time
from pathlib import Path

from zoo._core.fs import FILE_MODE, is_stale_temp, remove_path
from zoo.errors import ExportError
from zoo.export.cache.entries import FICLONE, RENAME_EXCHANGE, STALE_TEMP_AGE

DIR_MODE = FILE_MODE | ((FILE_MODE & 0o444) >> 2)  # rw-r--r-- -> rwxr-xr-x


_remove = remove_path  # delete a file, link or folder (best effort); True when it is gone


def _listdir(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _size_of(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())
        return path.lstat().st_size
    except OSError:
        return 0


def _is_stale_temp(path: Path) -> bool:
    """An atomic-write temp file no live writer owns (:func:`zoo._core.fs.is_stale_temp`)."""
    return is_stale_temp(path, STALE_TEMP_AGE)


def _tree(folder: Path) -> tuple[dict[str, os.stat_result], str | None]:
    """Every regular file under ``folder`` by relative posix path, with its ``lstat``; or a
    problem (missing folder, a link, a device, unreadable)."""
    found: dict[str, os.stat_result] = {}
    try:
        top = folder.lstat()
    except FileNotFoundError:
        return {}, "the entry folder is missing"
    except OSError as exc:
        return {}, f"unreadable: {exc.strerror or exc}"
    if not stat.S_ISDIR(top.st_mode):
        return {}, "the entry is not a folder"
    stack = [(folder, "")]
    while stack:
        here, prefix = stack.pop()
        try:
            with os.scandir(here) as it:
                items = list(it)
        except OSError as exc:
            return {}, f"unreadable: {exc.strerror or exc}"
        for item in items:
            rel = f"{prefix}{item.name}"
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as exc:
                return {}, f"{rel!r} unreadable: {exc.strerror or exc}"
            if stat.S_ISDIR(st.st_mode):
                stack.append((Path(item.path), f"{rel}/"))
            elif stat.S_ISREG(st.st_mode):
                found[rel] = st
            else:
                return {}, f"{rel!r} is not a regular file (a link or a device)"
    return found, None


def _clone(src: Path, dest: Path) -> None:
    """Copy ``src``'s bytes into the existing file ``dest``: a reflink where the file system
    shares extents (FICLONE), else an in-kernel copy (copy_file_range), else a plain copy.
    Never a hard link: ``dest`` is a new inode."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        if sys.platform.startswith("linux"):
            import fcntl

            with contextlib.suppress(OSError):
                fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
                return
            size = os.fstat(fin.fileno()).st_size
            try:
                copied = 0
                while copied < size:
                    n = os.copy_file_range(fin.fileno(), fout.fileno(), size - copied)
                    if n == 0:
                        break
                    copied += n
                if copied == size:
                    return
            except OSError:
                pass
            fin.seek(0)
            fout.seek(0)
            fout.truncate()
        shutil.copyfileobj(fin, fout, 1 << 20)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two names atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), RENAME_EXCHANGE)
    return rc == 0


def _disk_error(exc: OSError, where: Path, what: str) -> ExportError:
    reason = exc.strerror or type(exc).__name__
    hint = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else \
        "check the folder's permissions"
    return ExportError(f"cannot {what} in the export cache at {where}: {reason}; {hint}, or set "
                       "ZOO_HOME to another folder")


def _old(path: Path) -> bool:
    try:
        return time.time() - path.lstat().st_mtime >= STALE_TEMP_AGE
    except OSError:
        return False
