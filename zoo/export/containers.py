"""Strict readers for the containers artifacts and weights come in: ZIP archives and folders.

One home for the rule "every container is parsed strictly" (TorchScript and lite archives,
the ZIP appended to a ``.tflite``, ``torch.save`` weights, Core ML ``.mlpackage`` folders).
A container is refused, with a one-line reason, when two readers could see different things
in it or when reading it could cost more than its size promises:

- **ZIP**: duplicate names; absolute paths, drive letters, backslashes, ``..`` or empty
  components, NUL or control characters; encryption or a compression other than stored and
  deflate; more entries than a bound; an entry or a total whose *declared* uncompressed size
  is above a bound, or a deflated entry that would expand more than ``max_ratio`` times (a
  bomb is refused from the central directory, before anything is inflated); a local header
  that disagrees with the central directory (name, method, sizes, CRC) or whose data
  overlaps another entry or the central directory.
- **Folders**: only regular files and folders (no links, devices, sockets), no ``..`` or
  odd names, bounded file count and sizes.

Nothing here imports torch or runs anything; the checks read headers only.
"""

from __future__ import annotations

import itertools
import os
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from zoo._core.fs import human_size

__all__ = ["ContainerError", "FolderLimits", "ZipEntry", "ZipLimits", "check_folder",
           "check_zip", "name_problem", "read_zip_entry"]

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_ZIP64_MARK = 0xFFFFFFFF
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}


class ContainerError(ValueError):
    """A container refused by a strict check; the message says what and where."""


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on a ZIP archive (declared sizes, read from the central directory)."""

    max_entries: int = 100_000
    max_entry_size: int = 4 << 30
    max_total_size: int = 8 << 30
    #: Most a deflated entry may expand (uncompressed / compressed), beyond ``ratio_floor``.
    max_ratio: int = 100
    #: Entries smaller than this are not held to ``max_ratio`` (tiny text compresses well).
    ratio_floor: int = 1 << 20


@dataclass(frozen=True)
class ZipEntry:
    """One checked entry: its name, sizes and compression."""

    name: str
    size: int
    compressed: int
    method: str
    offset: int  # of its local header, in the file


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a member name of a container (None when it can): a relative
    POSIX path of plain components."""
    if not name:
        return "an empty name"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{name!r} holds a control character"
    if "\\" in name:
        return f"{name!r} holds a backslash"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return f"{name!r} is an absolute path"
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        return f"{name!r} has a '..', '.' or empty path component"
    return None


def check_zip(source: Path | BinaryIO, what: str, limits: ZipLimits | None = None
              ) -> list[ZipEntry]:
    """The entries of the ZIP archive ``source`` (a file, or a seekable binary stream; data
    before the archive, as in ``.tflite``, is allowed), after every strict check; raises
    :class:`ContainerError` naming ``what`` and the problem."""
    limits = limits or ZipLimits()
    if isinstance(source, Path):
        try:
            with source.open("rb") as fh:
                return _check_zip(fh, what, limits)
        except OSError as exc:
            raise ContainerError(f"{what}: cannot read it ({exc.strerror or exc})") from None
    return _check_zip(source, what, limits)


def _check_zip(fh: BinaryIO, what: str, limits: ZipLimits) -> list[ZipEntry]:
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise ContainerError(f"{what}: not a readable ZIP archive ({exc})") from None
    infos = archive.infolist()
    end_of_data = int(getattr(archive, "start_dir", 0) or 0)
    fh.seek(0, os.SEEK_END)
    file_size = fh.tell()
    if len(infos) > limits.max_entries:
        raise ContainerError(f"{what}: {len(infos)} entries, more than the {limits.max_entries} "
                             "allowed")
    seen: set[str] = set()
    entries: list[ZipEntry] = []
    total = 0
    for info in infos:
        name = info.orig_filename
        problem = name_problem(name) if name == info.filename else \
            f"{name!r} holds a NUL character"
        if problem is not None:
            raise ContainerError(f"{what}: entry {problem}")
        if name in seen:
            raise ContainerError(f"{what}: two entries are named {name!r} (readers would "
                                 "disagree on which one counts)")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise ContainerError(f"{what}: entry {name!r} is encrypted")
        method = _METHODS.get(info.compress_type)
        if method is None:
            raise ContainerError(f"{what}: entry {name!r} uses compression method "
                                 f"{info.compress_type} (only stored and deflate are read)")
        if info.file_size > limits.max_entry_size:
            raise ContainerError(f"{what}: entry {name!r} declares {human_size(info.file_size)}, "
                                 f"more than the {human_size(limits.max_entry_size)} allowed")
        if method == "stored" and info.file_size != info.compress_size:
            raise ContainerError(f"{what}: stored entry {name!r} declares {info.file_size} "
                                 f"bytes but holds {info.compress_size}")
        if method == "deflate" and info.file_size > limits.ratio_floor and \
                info.file_size > info.compress_size * limits.max_ratio:
            raise ContainerError(
                f"{what}: entry {name!r} would expand from {human_size(info.compress_size)} to "
                f"{human_size(info.file_size)} (more than {limits.max_ratio}x: a decompression "
                "bomb); refused before inflating it")
        total += info.file_size
        if total > limits.max_total_size:
            raise ContainerError(f"{what}: entries declare more than "
                                 f"{human_size(limits.max_total_size)} in all")
        entries.append(ZipEntry(name, info.file_size, info.compress_size, method,
                                info.header_offset))
    _check_local_headers(fh, infos, what, end_of_data or file_size)
    return entries


def _check_local_headers(fh: BinaryIO, infos: list[zipfile.ZipInfo], what: str,
                         end_of_data: int) -> None:
    """Each local header agrees with its central-directory record, and the entries' bytes
    neither overlap each other nor the central directory."""
    spans: list[tuple[int, int, str]] = []
    for info in infos:
        name = info.orig_filename
        fh.seek(info.header_offset)
        raw = fh.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size:
            raise ContainerError(f"{what}: entry {name!r}: its local header is cut off")
        (signature, _version, flags, method, _time, _date, crc, compressed, size, name_len,
         extra_len) = _LOCAL_HEADER.unpack(raw)
        if signature != _LOCAL_SIGNATURE:
            raise ContainerError(f"{what}: entry {name!r}: no local header where the central "
                                 "directory points")
        local_name = fh.read(name_len)
        central_name = name.encode("utf-8" if info.flag_bits & 0x800 else "cp437",
                                   errors="replace")
        if local_name != central_name:
            raise ContainerError(f"{what}: entry {name!r}: its local header names "
                                 f"{local_name[:80]!r} (the two directories disagree)")
        if method != info.compress_type or (flags & 0x1) != (info.flag_bits & 0x1):
            raise ContainerError(f"{what}: entry {name!r}: local header and central directory "
                                 "disagree on compression or encryption")
        if not flags & 0x8:  # sizes are in the local header (no data descriptor)
            sizes_ok = (compressed == _ZIP64_MARK or compressed == info.compress_size) and \
                (size == _ZIP64_MARK or size == info.file_size) and crc == info.CRC
            if not sizes_ok:
                raise ContainerError(f"{what}: entry {name!r}: local header and central "
                                     "directory disagree on its size or CRC")
        start = info.header_offset
        end = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + \
            info.compress_size
        if flags & 0x8:
            end += _check_descriptor(fh, end, info, what)
        if end > end_of_data:
            raise ContainerError(f"{what}: entry {name!r}: its data runs into the central "
                                 "directory or past the end")
        spans.append((start, end, name))
    spans.sort()
    for (_s1, end1, name1), (start2, _e2, name2) in itertools.pairwise(spans):
        if start2 < end1:
            raise ContainerError(f"{what}: entries {name1!r} and {name2!r} overlap")


def _check_descriptor(fh: BinaryIO, at: int, info: zipfile.ZipInfo, what: str) -> int:
    """Check the data descriptor after an entry's data against the central directory; its
    length in bytes."""
    fh.seek(at)
    raw = fh.read(24)
    signed = raw[:4] == b"PK\x07\x08"
    body = raw[4:] if signed else raw
    want = (info.CRC, info.compress_size, info.file_size)
    for fmt in ("<III", "<IQQ"):  # 32-bit sizes, or zip64's 64-bit ones
        need = struct.calcsize(fmt)
        if len(body) >= need and struct.unpack(fmt, body[:need]) == want:
            break
    else:
        raise ContainerError(f"{what}: entry {info.orig_filename!r}: its data descriptor and "
                             "the central directory disagree on its size or CRC")
    return need + (4 if signed else 0)


def read_zip_entry(source: Path, name: str, what: str, max_bytes: int,
                   limits: ZipLimits | None = None) -> bytes | None:
    """The bytes of entry ``name`` of a strictly checked archive (None when absent); raises
    :class:`ContainerError` for a refused archive or an entry above ``max_bytes``."""
    try:
        with source.open("rb") as fh:
            entries = {e.name: e for e in _check_zip(fh, what, limits or ZipLimits())}
            entry = entries.get(name)
            if entry is None:
                return None
            if entry.size > max_bytes:
                raise ContainerError(f"{what}: entry {name!r} holds {entry.size} bytes, more "
                                     f"than the {max_bytes} allowed")
            fh.seek(0)
            with zipfile.ZipFile(fh) as archive:
                return archive.read(name)
    except OSError as exc:
        raise ContainerError(f"{what}: cannot read it ({exc.strerror or exc})") from None
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ContainerError(f"{what}: entry {name!r} cannot be read ({exc})") from None


@dataclass(frozen=True)
class FolderLimits:
    """Bounds on a folder container (an ``.mlpackage``)."""

    max_files: int = 10_000
    max_file_size: int = 4 << 30
    max_total_size: int = 8 << 30
    max_depth: int = 16


def check_folder(root: Path, what: str, limits: FolderLimits | None = None
                 ) -> list[tuple[str, int]]:
    """``(relative POSIX path, size)`` of every file under ``root``, sorted, after checking
    that it holds only regular files and folders (no links or special files), plain names
    and bounded sizes; raises :class:`ContainerError`."""
    limits = limits or FolderLimits()
    try:
        top = os.lstat(root)
    except OSError as exc:
        raise ContainerError(f"{what}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISDIR(top.st_mode):
        raise ContainerError(f"{what}: not a folder")
    found: list[tuple[str, int]] = []
    total = 0
    pending = [(root, PurePosixPath())]
    while pending:
        folder, rel = pending.pop()
        if len(rel.parts) > limits.max_depth:
            raise ContainerError(f"{what}: folders nested deeper than {limits.max_depth}")
        try:
            names = sorted(os.listdir(folder))
        except OSError as exc:
            raise ContainerError(f"{what}: cannot list {rel or '.'} "
                                 f"({exc.strerror or exc})") from None
        for name in names:
            member = (rel / name).as_posix()
            problem = name_problem(member)
            if problem is not None:
                raise ContainerError(f"{what}: {problem}")
            try:
                st = os.lstat(folder / name)
            except OSError as exc:
                raise ContainerError(f"{what}: cannot read {member} "
                                     f"({exc.strerror or exc})") from None
            if stat.S_ISDIR(st.st_mode):
                pending.append((folder / name, rel / name))
            elif stat.S_ISREG(st.st_mode):
                if st.st_size > limits.max_file_size:
                    raise ContainerError(f"{what}: {member} holds {st.st_size} bytes, more "
                                         f"than the {limits.max_file_size} allowed")
                total += st.st_size
                found.append((member, st.st_size))
                if len(found) > limits.max_files or total > limits.max_total_size:
                    raise ContainerError(f"{what}: more than {limits.max_files} files or "
                                         f"{limits.max_total_size} bytes")
            else:
                kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                raise ContainerError(f"{what}: {member} is {kind}")
    return sorted(found)
