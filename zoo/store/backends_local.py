"""A ``file://`` store read and written safely: only regular files through real folders,
opened without following links and without waiting on FIFOs; writes appear atomically (a
temporary file under ``tmp/``, renamed into place)."""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.store.backends import Rooted, relative
from zoo.store.errors import StoreError
from zoo.store.transport_core import (
    CHUNK,
    NotRegularFile,
    Progress,
    SizeMismatch,
    TransportCore,
    copy_hashing,
)

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FD = os.open in os.supports_dir_fd


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


class LocalBackend(Rooted):
    """A store in a folder of this machine (``file://`` or a plain path). Only a regular file
    reached through real folders is an object; anything else is refused with its reason
    (kept in :attr:`refused`)."""

    def __init__(self, root: str, core: TransportCore) -> None:
        super().__init__(root, core)
        self.folder: Path = Path(root)

    def rel(self, full: str) -> str:
        """Backslashes (Windows paths) count as slashes."""
        return relative(full.replace("\\", "/"), self.root.replace("\\", "/"))

    def check_root(self) -> None:
        """The folder must exist and be readable."""
        url = self.core.url
        try:
            st = os.stat(self.folder)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder")
            with os.scandir(self.folder):
                pass
        except FileNotFoundError:
            raise StoreError(f"store {url}: the folder {self.folder} does not exist; check "
                             "--store / ZOO_STORE (`zoo publish` creates a new store)") from None
        except OSError as exc:
            raise StoreError(f"store {url}: cannot read the folder {self.folder} "
                             f"({exc.strerror or exc}); check --store / ZOO_STORE and its "
                             "permissions") from None

    def size(self, rel: str) -> int | None:
        """Only a regular file in real folders is an object."""
        try:
            fd = self._open(rel)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except (FileNotFoundError, NotADirectoryError, NotRegularFile):
            return None
        except OSError as exc:
            raise self.core.error("error", exc.strerror or str(exc), f"checking {rel}") from exc
        return st.st_size

    def read_many(self, rels: builtins.list[str], limit: int) -> dict[str, bytes | Exception]:
        out: dict[str, bytes | Exception] = {}
        for rel in rels:
            try:
                with os.fdopen(self._open(rel), "rb") as fh:
                    out[rel] = fh.read(limit + 1)
            except (OSError, NotRegularFile) as exc:
                out[rel] = exc
        return out

    def write_new(self, rel: str, data: bytes) -> None:
        self._install(rel, lambda fh: fh.write(data))

    def get(self, rel: str, dest: Path | None, size: int, progress: Progress) -> str:
        with os.fdopen(self._open(rel), "rb") as src:
            if os.fstat(src.fileno()).st_size != size:
                raise SizeMismatch(rel)
            return copy_hashing(src.read, dest, size, progress)

    def put(self, source: Path | bytes, rel: str, size: int, progress: Progress) -> None:
        def fill(fh: Any) -> None:
            if isinstance(source, bytes):
                fh.write(source)
                progress(len(source))
                return
            with open(source, "rb") as src:
                while chunk := src.read(CHUNK):
                    fh.write(chunk)
                    progress(len(chunk))

        self._install(rel, fill)

    def list(self, prefix: str, start_after: str | None = None
             ) -> builtins.list[tuple[str, int]]:
        """Regular files under ``prefix`` (after ``start_after``), through real folders only;
        anything else found (symbolic links, FIFOs, sockets, devices) is listed too, with its
        reason kept in :attr:`refused`, so readers see it and refuse it rather than miss it."""
        found: builtins.list[tuple[str, int]] = []
        base = self.folder / prefix
        try:
            self._real_folders(prefix.rstrip("/"), base)
        except FileNotFoundError:
            return []
        except NotRegularFile as exc:
            self.refused[exc.rel] = str(exc)
            return [(exc.rel, 0)]
        try:
            for dirpath, dirs, names in os.walk(base):  # never follows symbolic links
                for name in [*dirs, *names]:
                    full = Path(dirpath, name)
                    rel = full.relative_to(self.folder).as_posix()
                    if start_after is not None and rel <= start_after:
                        continue
                    try:
                        st = os.lstat(full)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        self.refused[rel] = str(NotRegularFile(rel, _kind(st.st_mode)))
                    found.append((rel, st.st_size))
        except OSError as exc:
            raise self.core.error("error", exc.strerror or str(exc), f"listing {prefix}") \
                from exc
        return sorted(found)

    def _real_folders(self, rel: str, full: Path) -> None:
        """NotRegularFile unless every folder of ``rel`` below the root is a real folder
        (FileNotFoundError when one is missing)."""
        parts = [p for p in rel.split("/") if p]
        for i in range(1, len(parts) + 1):
            st = os.lstat(self.folder.joinpath(*parts[:i]))
            if not stat.S_ISDIR(st.st_mode):
                raise NotRegularFile("/".join(parts[:i]), _kind(st.st_mode))

    def _make_real_folders(self, rel: str) -> None:
        """Create the folders of ``rel`` below the root, one level at a time; NotRegularFile
        when one of them is not a real folder (a link is never followed, even to create).
        The root itself is the user's own path and is created like any output folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder
        for part in [p for p in rel.split("/") if p not in ("", ".")]:
            if part == "..":
                raise NotRegularFile(rel, "not a path inside the store")
            path = path / part
            with contextlib.suppress(FileExistsError):
                os.mkdir(path)
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                raise NotRegularFile(str(path.relative_to(self.folder)), _kind(st.st_mode))

    def _open(self, rel: str) -> int:
        """A read-only descriptor of the regular file ``rel``, reached through real folders
        (no symbolic link is followed, a FIFO is not waited on). NotRegularFile otherwise."""
        parts = [p for p in rel.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise NotRegularFile(rel, "not a path inside the store")
        flags = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC
        if not _DIR_FD:
            self._real_folders("/".join(parts[:-1]), self.folder)
            fd = self._open_checked(rel, str(self.folder.joinpath(*parts)), flags, None)
        else:
            dfd = os.open(self.folder, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
            try:
                for i, part in enumerate(parts[:-1]):
                    try:
                        nfd = os.open(part, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW |
                                      _O_CLOEXEC, dir_fd=dfd)
                    except OSError as exc:
                        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                            raise
                        st = os.lstat(part, dir_fd=dfd)
                        raise NotRegularFile("/".join(parts[:i + 1]), _kind(st.st_mode)) \
                            from None
                    os.close(dfd)
                    dfd = nfd
                fd = self._open_checked(rel, parts[-1], flags, dfd)
            finally:
                os.close(dfd)
        return fd

    @staticmethod
    def _open_checked(rel: str, name: str, flags: int, dir_fd: int | None) -> int:
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except NotADirectoryError:
            raise FileNotFoundError(errno.ENOENT, "not found", rel) from None
        if not stat.S_ISREG(st.st_mode):  # devices and FIFOs are never opened
            raise NotRegularFile(rel, _kind(st.st_mode))
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # replaced by a symbolic link since the lstat
                raise NotRegularFile(rel, "a symbolic link") from None
            raise
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise NotRegularFile(rel, _kind(mode))
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
        return fd

    def _install(self, rel: str, fill: Callable[[Any], Any]) -> None:
        final = self.folder / rel
        tmp_dir = self.folder / "tmp"
        try:
            # never create or write through a symbolic link someone planted in the store:
            # each folder is made (or found) one level at a time and checked before the next
            self._make_real_folders(Path(rel).parent.as_posix())
            self._make_real_folders("tmp")
            fd, tmp = tempfile.mkstemp(prefix=f"{final.name[:40]}.", suffix=".tmp",
                                       dir=tmp_dir)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fill(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, final)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except NotRegularFile as exc:
            raise StoreError(f"store {self.core.url}: cannot write {rel}: {exc}") from None
        except OSError as exc:
            raise self.core.error("error", exc.strerror or str(exc), f"writing {rel}") from exc
