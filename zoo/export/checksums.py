"""``SHA256SUMS`` files in the format ``sha256sum -c`` reads: ``<hex>  <name>`` per line."""

from __future__ import annotations

from pathlib import Path

from zoo._core.fs import atomic_write_text
from zoo._core.names import MAX_SUMS_BYTES, SUMS_LINE

SUMS_NAME = "SHA256SUMS"


def read_sums(path: Path) -> dict[str, str]:
    """``{file name: sha256}`` from a SHA256SUMS file (missing or oversized file: empty;
    lines that are not ``HEX  NAME``, or not UTF-8, are ignored)."""
    if not path.is_file():
        return {}
    sums: dict[str, str] = {}
    with open(path, "rb") as fh:
        blob = fh.read(MAX_SUMS_BYTES + 1)
    if len(blob) > MAX_SUMS_BYTES:  # hostile: it vouches for nothing (checks then fail)
        return {}
    for line in blob.decode("utf-8", errors="replace").splitlines():
        match = SUMS_LINE.match(line.strip())
        if match:
            sums[match.group(2)] = match.group(1)
    return sums


def update_sums(folder: Path, entries: dict[str, str]) -> Path:
    """Merge ``entries`` into ``folder/SHA256SUMS`` (other files' lines kept), atomically."""
    path = folder / SUMS_NAME
    sums = read_sums(path)
    sums.update(entries)
    atomic_write_text(path, "".join(f"{sha}  {name}\n" for name, sha in sorted(sums.items())))
    return path
