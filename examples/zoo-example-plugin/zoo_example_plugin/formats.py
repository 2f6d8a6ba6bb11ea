"""An example export format: a *traced* TorchScript archive (``.traced.pt``).

Tracing records the operations one example input runs through, so the archive only accepts
the export size (``fixed_input_size``); in exchange it needs no scriptable Python. The class
below is everything zoo needs to know about the format: ``zoo fetch --format example_traced``
exports it, ``zoo verify`` checks and runs it, ``zoo run --artifact`` segments with it.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from zoo.export import Exporter, ExportOptions, Prepared

EMBEDDED = "manifest.json"


class TracedExporter(Exporter):
    name = "example_traced"
    suffix = ".traced.pt"
    description = "Traced TorchScript (fixed input size), for LibTorch"
    keeps_dict_output = True
    fixed_input_size = True
    runtime = "zoo_example_plugin.runtime"  # self-contained: imports torch only

    def prepare(self, model: Any, example: Any, card: Any, options: ExportOptions,
                calibration: Any = None) -> Prepared:
        import torch

        with torch.no_grad():
            traced = torch.jit.trace(model.eval(), example, strict=False, check_trace=False)
        frozen = torch.jit.freeze(traced.eval())
        return Prepared(module=frozen, method="trace", static_shape=True,
                        optimizations={"trace": "applied", "freeze": "applied"})

    def save(self, prepared: Prepared, path: Path, embedded: dict[str, str]) -> None:
        import torch

        buffer = io.BytesIO()
        torch.jit.save(prepared.module, buffer, _extra_files=embedded)
        path.write_bytes(buffer.getvalue())

    def read_embedded(self, path: Path) -> str | None:
        try:  # a zip read: safe on hostile bytes, nothing is executed
            with zipfile.ZipFile(path) as archive:
                for entry in archive.namelist():
                    if entry.endswith(f"/extra/{EMBEDDED}"):
                        return archive.read(entry).decode("utf-8")
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError):
            return None
        return None
