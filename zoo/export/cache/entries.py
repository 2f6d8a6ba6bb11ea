"""What an export-cache entry is: its dataclasses, its record's constants and field checks,
and its provenance (where its bytes came from). No file-system work here."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from zoo._core.names import HEX64

BUDGET_ENV = "ZOO_CACHE_MAX"
RECORD_VERSION = 1
RECORD_MAX = 4 << 20  # bytes: a bigger record is damaged, not read
LOCK_TIMEOUT = 1800.0  # seconds a waiter waits for another process's export of the same key
BUSY_TIMEOUT = 10.0  # seconds clear/evict wait for an entry in use
STALE_TEMP_AGE = 60.0  # seconds: a temp file untouched this long belongs to no live writer
FICLONE = 0x40049409  # Linux ioctl: share the source's extents (btrfs, xfs, ...)
RENAME_EXCHANGE = 2  # Linux renameat2 flag: swap two names atomically
_HEX64 = HEX64

Warn = Callable[[str], None]
UNKNOWN_PROVENANCE: dict[str, Any] = {"kind": "unknown"}


def read_provenance(value: Any) -> dict[str, Any]:
    """A record's provenance, checked field by field; anything malformed (or a record written
    before provenance existed) is ``{"kind": "unknown"}``, which no trust rule accepts.

    ``built``: this machine exported the bytes (``weights_from``: how the weights arrived).
    ``pulled``: installed from team store ``store``, record ``record`` (its sha256), signed by
    ``signer`` (a key fingerprint) or unsigned (None).
    """
    if not isinstance(value, dict):
        return dict(UNKNOWN_PROVENANCE)
    kind = value.get("kind")
    if kind == "built":
        source = value.get("weights_from")
        return {"kind": "built",
                "weights_from": source if _label(source, 1000) else "unknown"}
    if kind == "pulled":
        store, record, signer = value.get("store"), value.get("record"), value.get("signer")
        if _label(store, 1000) and isinstance(record, str) and _HEX64.fullmatch(record) and \
                (signer is None or (isinstance(signer, str) and _HEX64.fullmatch(signer))):
            return {"kind": "pulled", "store": store, "record": record, "signer": signer}
    return dict(UNKNOWN_PROVENANCE)


@dataclass(frozen=True)
class CachedExport:
    """One committed entry. ``files`` maps each file's path inside ``folder`` (posix, a folder
    artifact's files as ``x.mlpackage/Data/...``) to its recorded sha256."""

    key: str
    folder: Path
    model: str
    format: str
    files: dict[str, str]
    manifest_file: str
    size: int
    last_used: float
    created: float = 0.0
    artifact_file: str = ""
    #: Where the bytes came from (see :func:`read_provenance`): ``{"kind": "built", ...}``,
    #: ``{"kind": "pulled", "store", "record", "signer"}`` or ``{"kind": "unknown"}``.
    provenance: dict[str, Any] = field(default_factory=lambda: dict(UNKNOWN_PROVENANCE))

    @property
    def names(self) -> list[str]:
        """The entry's top-level names (files and folders), sorted."""
        return sorted({rel.split("/", 1)[0] for rel in self.files})


@dataclass(frozen=True)
class Leftover:
    """Something a killed process left behind: where, what it is, how many bytes."""

    path: Path
    kind: str
    size: int


@dataclass(frozen=True)
class _Record:
    entry: CachedExport
    sizes: dict[str, int]
    stats: dict[str, list[int]]  # rel -> [inode, mtime_ns, ctime_ns]
    raw: dict[str, Any] = field(default_factory=dict)


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _HEX64.fullmatch(key):
        raise ValueError(f"not an export cache key (64 hex digits): {key!r}")


def _safe_rel(rel: Any) -> bool:
    """A relative posix path that stays inside its folder."""
    if not isinstance(rel, str) or not rel or len(rel) > 1024 or "\\" in rel or \
            not rel.isprintable():
        return False
    parts = PurePosixPath(rel).parts
    return not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts) and \
        "/".join(parts) == rel


def _bare(name: str) -> bool:
    return _safe_rel(name) and "/" not in name


def _label(value: Any, limit: int = 200) -> bool:
    """A short printable text (model and format names in records)."""
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _fingerprint(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
