"""Make backported lite archives reproducible.

``torch.jit.mobile._backport_for_mobile`` names constant tensors after their memory
addresses (``constants/94828856384912.storage``), so two backports of the same model differ.
This rewrites the archive with the constants numbered in record order and the names inside
the pickles spliced to match; tensor bytes and everything else are copied unchanged.
"""

from __future__ import annotations

import pickletools
import re
import struct
from pathlib import Path

_CONSTANT = re.compile(r"^constants/(\d+\.storage)$")
_STRING_OPS = {"BINUNICODE": 5, "SHORT_BINUNICODE": 2}  # opcode + length-prefix bytes


def _splice(data: bytes, renames: dict[str, str]) -> bytes:
    """Replace pickled strings found in ``renames`` (pickles hold no absolute offsets)."""
    out = bytearray()
    last = 0
    for op, arg, pos in pickletools.genops(data):
        if op.name in _STRING_OPS and isinstance(arg, str) and arg in renames:
            new = renames[arg].encode("utf-8")
            out += data[last:pos] + b"X" + struct.pack("<I", len(new)) + new
            last = pos + _STRING_OPS[op.name] + len(arg.encode("utf-8"))
    return bytes(out + data[last:])


def canonicalize(source: Path, dest: Path) -> None:
    """Copy the archive ``source`` to ``dest`` with address-free constant names."""
    import torch

    reader = torch._C.PyTorchFileReader(str(source))
    records = reader.get_all_records()
    renames: dict[str, str] = {}
    for name in records:
        match = _CONSTANT.match(name)
        if match:
            renames[match.group(1)] = f"{len(renames)}.storage"
    writer = torch._C.PyTorchFileWriter(str(dest))
    for name in records:
        if name == ".data/serialization_id":  # the writer derives a fresh one from content
            continue
        data = reader.get_record(name)
        if name.endswith(".pkl"):
            data = _splice(data, renames)
        match = _CONSTANT.match(name)
        if match:
            name = f"constants/{renames[match.group(1)]}"
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
