"""The bench record: ``NAME.bench.json``, written atomically, read back as hostile input.

A record is what ``zoo bench`` measured for one model on one machine (version 1)::

    {"zoo_bench": 1, "model": NAME, "zoo_version": str, "created": ISO-8601 UTC,
     "machine": {"cpu", "cores", "os", "python", "torch", "runtimes": {name: version}},
     "settings": {"size": [H, W], "runs", "threads", "weights"},
     "rows": [{"format", "precision", "status", "reason", "size_bytes", "export_s",
               "latency_ms", "eager_ms", "ratio", "sqnr_db", "argmax_agreement"}]}

:func:`read_record` accepts only that shape: the version, every field's type and range,
finite numbers (JSON's ``NaN``/``Infinity`` are refused), no duplicate or unknown keys, one-line
printable strings, at most :data:`RECORD_MAX_BYTES`. Anything else is one
:class:`BenchRecordError` line naming the file. Imports no torch.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypedDict

from zoo._core.errors import UsageError
from zoo._core.fs import atomic_write_text
from zoo._core.jsonio import JSONRefused, json_object
from zoo._core.names import MAX_BYTES, MAX_NAME, MAX_SIDE, MAX_TEXT, MODEL_NAME_RE

#: the record version this zoo writes and reads
RECORD_VERSION = 1
#: a bench file bigger than this is refused unread
RECORD_MAX_BYTES = 1 << 20
#: a file's name: ``NAME.bench.json``
RECORD_SUFFIX = ".bench.json"
#: identical outputs have an infinite SQNR, which JSON cannot hold: it is recorded as this
SQNR_CAP_DB = 200.0
#: the statuses a row can have
STATUSES = ("ok", "size-only", "skipped", "failed")
MAX_ROWS = 256
MAX_RUNTIMES = 64
MAX_REASON = 1000
MAX_RUNS = 100_000
MAX_THREADS = 4096
MAX_CORES = 1 << 20
MAX_SECONDS = 1e7  # an export or run time beyond ~4 months is damage, not a measurement
MAX_RATIO = 1e6

FORMAT_TOKEN = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")  # format and precision names


class Stats(TypedDict):
    """Median, min and max of a series (milliseconds, or a ratio)."""

    median: float
    min: float
    max: float


class Row(TypedDict):
    """One format x precision: what ran, or why it did not."""

    format: str
    precision: str
    status: Literal["ok", "size-only", "skipped", "failed"]
    reason: str | None
    size_bytes: int | None
    export_s: float | None
    latency_ms: Stats | None
    eager_ms: Stats | None
    ratio: Stats | None
    sqnr_db: float | None
    argmax_agreement: float | None


class Machine(TypedDict):
    """The machine a record was measured on."""

    cpu: str
    cores: int
    os: str
    python: str
    torch: str
    runtimes: dict[str, str]


class Settings(TypedDict):
    """How a record was measured: input size [H, W], interleaved pairs, threads, weights."""

    size: list[int]
    runs: int
    threads: int
    weights: str


class BenchRecord(TypedDict):
    """A whole ``NAME.bench.json``."""

    zoo_bench: int
    model: str
    zoo_version: str
    created: str
    machine: Machine
    settings: Settings
    rows: list[Row]


class BenchRecordError(UsageError):
    """A bench file that is not a valid record of this version (exit 2: bad input)."""


class _Invalid(Exception):
    """Internal: what is wrong, without the file name (added once, at the top)."""


_ROW_KEYS = tuple(Row.__annotations__)
_MACHINE_KEYS = tuple(Machine.__annotations__)
_SETTINGS_KEYS = tuple(Settings.__annotations__)
_RECORD_KEYS = tuple(BenchRecord.__annotations__)
_STATS_KEYS = ("median", "min", "max")


def record_path(folder: Path, model: str) -> Path:
    """Where the record of ``model`` lives in ``folder``: ``folder/MODEL.bench.json``."""
    return Path(folder) / f"{model}{RECORD_SUFFIX}"


def dumps_record(record: BenchRecord) -> str:
    """The record as the JSON text a file holds (validated first; key order as written)."""
    validate_record(record)
    return json.dumps(record, indent=1, allow_nan=False, ensure_ascii=False) + "\n"


def write_record(record: BenchRecord, folder: Path) -> Path:
    """Validate ``record`` and write it atomically as ``folder/MODEL.bench.json``; the path."""
    text = dumps_record(record)
    if len(text.encode("utf-8")) > RECORD_MAX_BYTES:
        raise BenchRecordError(f"bench record of {record['model']!r} would be larger than "
                               f"{RECORD_MAX_BYTES} bytes; bench fewer formats")
    path = record_path(folder, record["model"])
    atomic_write_text(path, text)
    return path


def read_record(path: Path | str) -> BenchRecord:
    """Read and validate a bench file; raises :class:`BenchRecordError` (one line naming the
    file) for anything that is not a version-1 record within bounds."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(RECORD_MAX_BYTES + 1)
    except OSError as exc:
        raise BenchRecordError(f"cannot read bench file {path}: {exc.strerror or exc}; "
                               "check the path") from None
    return loads_record(raw, source=str(path))


def loads_record(raw: bytes | str, source: str = "<bench record>") -> BenchRecord:
    """:func:`read_record` for bytes already in memory (``source`` names them in errors)."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    try:
        try:
            parsed = json_object(data, RECORD_MAX_BYTES, "bench record")
        except JSONRefused as exc:
            raise _Invalid(str(exc)) from None
        return _validate(parsed)
    except _Invalid as exc:
        raise BenchRecordError(f"bench file {source} is not a zoo bench record: {exc}; "
                               "produce it again with `zoo bench`") from None


def validate_record(data: Any, source: str = "<bench record>") -> BenchRecord:
    """``data`` checked as a version-1 record (see the module docstring); the same object."""
    try:
        return _validate(data)
    except _Invalid as exc:
        raise BenchRecordError(f"bench file {source} is not a zoo bench record: {exc}; "
                               "produce it again with `zoo bench`") from None


# --- the checks -----------------------------------------------------------------------------

def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _obj(value: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{where} must be an object, not {type(value).__name__}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise _Invalid(f"{where} lacks {', '.join(missing)}")
    extra = [k for k in value if k not in keys]
    if extra:
        raise _Invalid(f"{where} has unknown field {_show(extra[0])}")
    return value


def _str(value: Any, where: str, limit: int = MAX_TEXT, pattern: re.Pattern[str] | None = None
         ) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{where} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise _Invalid(f"{where} is longer than {limit} characters")
    if not value.isprintable():
        raise _Invalid(f"{where} holds control or invisible characters")
    if pattern is not None and not pattern.match(value):
        raise _Invalid(f"{where} {_show(value)} is not a valid name")
    return value


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"{where} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise _Invalid(f"{where} {value} is outside {low}..{high}")
    return value


def _num(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"{where} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise _Invalid(f"{where} must be finite")
    if not low <= value <= high:
        raise _Invalid(f"{where} {value} is outside {low:g}..{high:g}")
    return float(value)


def _opt(value: Any, check: Any, where: str, *args: Any) -> Any:
    return None if value is None else check(value, where, *args)


def _stats(value: Any, where: str, high: float) -> Stats:
    obj = _obj(value, where, _STATS_KEYS)
    for key in _STATS_KEYS:
        _num(obj[key], f"{where}.{key}", 0.0, high)
    if not obj["min"] <= obj["median"] <= obj["max"]:
        raise _Invalid(f"{where} must have min <= median <= max")
    return value  # type: ignore[no-any-return]


def _created(value: Any, where: str) -> str:
    text = _str(value, where, 64)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _Invalid(f"{where} {_show(text)} is not an ISO-8601 time") from None
    if when.utcoffset() != timedelta(0):
        raise _Invalid(f"{where} {_show(text)} is not in UTC")
    return text


def _machine(value: Any) -> None:
    obj = _obj(value, "machine", _MACHINE_KEYS)
    for key in ("cpu", "os", "python", "torch"):
        _str(obj[key], f"machine.{key}")
    _int(obj["cores"], "machine.cores", 1, MAX_CORES)
    runtimes = obj["runtimes"]
    if not isinstance(runtimes, dict):
        raise _Invalid("machine.runtimes must be an object")
    if len(runtimes) > MAX_RUNTIMES:
        raise _Invalid(f"machine.runtimes has more than {MAX_RUNTIMES} entries")
    for name, version in runtimes.items():
        _str(name, "a machine.runtimes name", MAX_NAME)
        _str(version, f"machine.runtimes[{_show(name)}]")


def _settings(value: Any) -> None:
    obj = _obj(value, "settings", _SETTINGS_KEYS)
    size = obj["size"]
    if not isinstance(size, list) or len(size) != 2:
        raise _Invalid("settings.size must be [H, W]")
    for side in size:
        _int(side, "settings.size", 1, MAX_SIDE)
    _int(obj["runs"], "settings.runs", 1, MAX_RUNS)
    _int(obj["threads"], "settings.threads", 1, MAX_THREADS)
    _str(obj["weights"], "settings.weights")


def _row(value: Any, where: str) -> None:
    obj = _obj(value, where, _ROW_KEYS)
    _str(obj["format"], f"{where}.format", MAX_NAME, FORMAT_TOKEN)
    _str(obj["precision"], f"{where}.precision", MAX_NAME, FORMAT_TOKEN)
    status = obj["status"]
    if status not in STATUSES:
        raise _Invalid(f"{where}.status {_show(status)} is not one of {', '.join(STATUSES)}")
    reason = _opt(obj["reason"], _str, f"{where}.reason", MAX_REASON)
    _opt(obj["size_bytes"], _int, f"{where}.size_bytes", 0, MAX_BYTES)
    _opt(obj["export_s"], _num, f"{where}.export_s", 0.0, MAX_SECONDS)
    for key in ("latency_ms", "eager_ms"):
        _opt(obj[key], _stats, f"{where}.{key}", MAX_SECONDS * 1000)
    _opt(obj["ratio"], _stats, f"{where}.ratio", MAX_RATIO)
    _opt(obj["sqnr_db"], _num, f"{where}.sqnr_db", -SQNR_CAP_DB, SQNR_CAP_DB)
    _opt(obj["argmax_agreement"], _num, f"{where}.argmax_agreement", 0.0, 1.0)
    measured = [obj[k] is not None for k in ("latency_ms", "eager_ms", "ratio")]
    if status == "ok" and not all(measured):
        raise _Invalid(f"{where} has status ok but no latency_ms/eager_ms/ratio")
    if status != "ok" and any(measured):
        raise _Invalid(f"{where} has status {status} but latency figures")
    if status != "ok" and reason is None:
        raise _Invalid(f"{where} has status {status} but no reason")
    if status == "size-only" and obj["size_bytes"] is None:
        raise _Invalid(f"{where} has status size-only but no size_bytes")


def _validate(data: Any) -> BenchRecord:
    if not isinstance(data, dict):
        raise _Invalid(f"the record must be an object, not {type(data).__name__}")
    # the version first: another version's record is named as such, not as missing fields
    version = data.get("zoo_bench")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _Invalid("zoo_bench (the record version) must be an integer")
    if version != RECORD_VERSION:
        raise _Invalid(f"record version {version} is not the version this zoo reads "
                       f"({RECORD_VERSION})")
    obj = _obj(data, "the record", _RECORD_KEYS)
    _str(obj["model"], "model", MAX_NAME, MODEL_NAME_RE)
    _str(obj["zoo_version"], "zoo_version", 64)
    _created(obj["created"], "created")
    _machine(obj["machine"])
    _settings(obj["settings"])
    rows = obj["rows"]
    if not isinstance(rows, list):
        raise _Invalid("rows must be a list")
    if len(rows) > MAX_ROWS:
        raise _Invalid(f"more than {MAX_ROWS} rows")
    seen: set[tuple[str, str]] = set()
    for i, row in enumerate(rows):
        _row(row, f"rows[{i}]")
        key = (row["format"], row["precision"])
        if key in seen:
            raise _Invalid(f"rows[{i}] repeats {key[0]}:{key[1]}")
        seen.add(key)
    return data  # type: ignore[return-value]
