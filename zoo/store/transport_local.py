"""A ``file://`` store read and written safely: only regular files through real folders,
opened without following links and without waiting on FIFOs; writes appear atomically."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.store.errors import StoreError
from zoo.store.transport_core import (
    _DIR_FD,
    _O_CLOEXEC,
    _O_DIRECTORY,
    _O_NOFOLLOW,
    _O_NONBLOCK,
    NotRegularFile,
    Progress,
    SizeMismatch,
    TransportCore,
    _copy_hashing,
    _kind,
)


class LocalFiles(TransportCore):
    """The local (``file://``) side of a transport."""

    def _local_list(self, prefix: str) -> list[tuple[str, int]]:
        """Regular files under ``prefix``, through real folders only; anything else found
        (symbolic links, FIFOs, sockets, devices) is listed too, with its reason kept in
        :attr:`refused`, so readers see it and refuse it rather than miss it."""
        assert self.local is not None
        found: list[tuple[str, int]] = []
        base = self.local / prefix
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
                    rel = full.relative_to(self.local).as_posix()
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
            raise self._error("error", exc.strerror or str(exc), f"listing {prefix}", 1,
                              0) from exc
        return sorted(found)

    def _real_folders(self, rel: str, full: Path) -> None:
        """NotRegularFile unless every folder of ``rel`` below the root is a real folder
        (FileNotFoundError when one is missing)."""
        assert self.local is not None
        parts = [p for p in rel.split("/") if p]
        for i in range(1, len(parts) + 1):
            st = os.lstat(self.local.joinpath(*parts[:i]))
            if not stat.S_ISDIR(st.st_mode):
                raise NotRegularFile("/".join(parts[:i]), _kind(st.st_mode))

    def _open_local(self, rel: str) -> int:
        """A read-only descriptor of the regular file ``rel``, reached through real folders
        (no symbolic link is followed, a FIFO is not waited on). NotRegularFile otherwise."""
        assert self.local is not None
        parts = [p for p in rel.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise NotRegularFile(rel, "not a path inside the store")
        flags = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC
        if not _DIR_FD:
            self._real_folders("/".join(parts[:-1]), self.local)
            fd = self._open_checked(rel, str(self.local.joinpath(*parts)), flags, None)
        else:
            dfd = os.open(self.local, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
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

    def _local_install(self, rel: str, fill: Callable[[Any], Any]) -> None:
        assert self.local is not None
        final = self.local / rel
        tmp_dir = self.local / "tmp"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp_dir.mkdir(parents=True, exist_ok=True)
            # never write through a symbolic link someone planted in the store
            self._real_folders(Path(rel).parent.as_posix(), final.parent)
            self._real_folders("tmp", tmp_dir)
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
            raise StoreError(f"store {self.url}: cannot write {rel}: {exc}") from None
        except OSError as exc:
            raise self._error("error", exc.strerror or str(exc), f"writing {rel}", 1, 0) from exc

    def _local_get(self, rel: str, dest: Path | None, size: int, progress: Progress) -> str:
        assert self.local is not None
        with os.fdopen(self._open_local(rel), "rb") as src:
            if os.fstat(src.fileno()).st_size != size:
                raise SizeMismatch(rel)
            return _copy_hashing(src.read, dest, size, progress)
