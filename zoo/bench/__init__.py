"""zoo bench: size, latency against eager fp32 and fidelity of each format x precision of a
model, measured here and kept as a versioned JSON record (``NAME.bench.json``).

The record functions (:func:`read_record`, :func:`write_record`, ...) import no torch; the
measuring (:func:`run_bench`) imports it when called.

Modules: ``record`` (the JSON record: write, read, validate), ``machine`` (the machine
description), ``measure`` (interleaved timing and fidelity), ``runner`` (export, load, measure
every row).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zoo.bench.record import (
    RECORD_SUFFIX,
    RECORD_VERSION,
    SQNR_CAP_DB,
    STATUSES,
    BenchRecord,
    BenchRecordError,
    Machine,
    Row,
    Settings,
    Stats,
    dumps_record,
    loads_record,
    read_record,
    record_path,
    validate_record,
    write_record,
)

if TYPE_CHECKING:
    from zoo.bench.runner import BenchOptions, run_bench

__all__ = [
    "RECORD_SUFFIX", "RECORD_VERSION", "SQNR_CAP_DB", "STATUSES", "BenchOptions", "BenchRecord",
    "BenchRecordError", "Machine", "Row", "Settings", "Stats", "dumps_record", "loads_record",
    "read_record", "record_path", "run_bench", "validate_record", "write_record",
]

_LAZY = {"BenchOptions": "zoo.bench.runner", "run_bench": "zoo.bench.runner"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo.bench' has no attribute {name!r}")
