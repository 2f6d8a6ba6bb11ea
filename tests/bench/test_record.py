"""The bench record: written atomically, read back only when it is a valid version-1 record
(hostile files: wrong version, NaN, huge, wrong types, duplicate keys, control characters).
No torch here."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from zoo.bench import (
    BenchRecord,
    BenchRecordError,
    loads_record,
    read_record,
    record_path,
    validate_record,
    write_record,
)
from zoo.errors import UsageError


def sample() -> BenchRecord:
    """A valid record with one row of each status."""
    stats = {"median": 10.0, "min": 9.0, "max": 12.5}
    ratio = {"median": 0.5, "min": 0.4, "max": 0.6}
    base = {"reason": None, "size_bytes": None, "export_s": None, "latency_ms": None,
            "eager_ms": None, "ratio": None, "sqnr_db": None, "argmax_agreement": None}
    return {
        "zoo_bench": 1, "model": "single_conv", "zoo_version": "0.1.0",
        "created": "2025-01-02T03:04:05Z",
        "machine": {"cpu": "Test CPU @ 3GHz", "cores": 2, "os": "Linux-6.1-x86_64",
                    "python": "3.11.2", "torch": "2.14.1",
                    "runtimes": {"onnxruntime": "1.20.0"}},
        "settings": {"size": [64, 64], "runs": 3, "threads": 2, "weights": "generated"},
        "rows": [
            {**base, "format": "onnx", "precision": "fp32", "status": "ok", "size_bytes": 1234,
             "export_s": 1.5, "latency_ms": stats, "eager_ms": stats, "ratio": ratio,
             "sqnr_db": 200.0, "argmax_agreement": 1.0},
            {**base, "format": "coreml", "precision": "fp32", "status": "size-only",
             "reason": "runs only on Apple systems", "size_bytes": 999, "export_s": 2.0},
            {**base, "format": "pte", "precision": "int8", "status": "skipped",
             "reason": "needs pip install 'zoo[executorch]'"},
            {**base, "format": "tflite", "precision": "fp32", "status": "failed",
             "reason": "export failed: boom"},
        ],
    }  # type: ignore[return-value]


def test_round_trip_is_atomic_and_identical(tmp_path: Path) -> None:
    record = sample()
    path = write_record(record, tmp_path / "out")
    assert path == record_path(tmp_path / "out", "single_conv")
    assert path.name == "single_conv.bench.json"
    assert read_record(path) == record
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    # the file is plain JSON any reader (the site, a browser) can parse
    assert json.loads(path.read_text(encoding="utf-8"))["rows"][1]["status"] == "size-only"


def write_raw(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "x.bench.json"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def mutated(change: str) -> str:
    """The sample record with one hostile change, as JSON text."""
    r: dict = copy.deepcopy(sample())  # type: ignore[arg-type]
    if change == "version":
        r["zoo_bench"] = 2
    elif change == "version-bool":
        r["zoo_bench"] = True
    elif change == "cores-str":
        r["machine"]["cores"] = "2"
    elif change == "size-shape":
        r["settings"]["size"] = [64]
    elif change == "status":
        r["rows"][0]["status"] = "great"
    elif change == "agreement":
        r["rows"][0]["argmax_agreement"] = 1.5
    elif change == "negative":
        r["rows"][0]["size_bytes"] = -1
    elif change == "unknown-key":
        r["rows"][0]["extra"] = 1
    elif change == "missing":
        del r["machine"]["torch"]
    elif change == "control":
        r["rows"][1]["reason"] = "ok\x1b[31m red"
    elif change == "model-name":
        r["model"] = "../../etc/passwd"
    elif change == "not-utc":
        r["created"] = "2025-01-02T03:04:05+02:00"
    elif change == "stats-order":
        r["rows"][0]["ratio"] = {"median": 2.0, "min": 3.0, "max": 4.0}
    elif change == "ok-without-latency":
        r["rows"][0]["latency_ms"] = None
    elif change == "skipped-without-reason":
        r["rows"][2]["reason"] = None
    elif change == "repeat-row":
        r["rows"].append(r["rows"][0])
    elif change == "rows-object":
        r["rows"] = {"a": 1}
    return json.dumps(r)


@pytest.mark.parametrize(("change", "said"), [
    ("version", "record version 2 is not the version this zoo reads (1)"),
    ("version-bool", "zoo_bench (the record version) must be an integer"),
    ("cores-str", "machine.cores must be an integer, not str"),
    ("size-shape", "settings.size must be [H, W]"),
    ("status", "rows[0].status 'great' is not one of"),
    ("agreement", "rows[0].argmax_agreement 1.5 is outside 0..1"),
    ("negative", "rows[0].size_bytes -1 is outside"),
    ("unknown-key", "rows[0] has unknown field 'extra'"),
    ("missing", "machine lacks torch"),
    ("control", "rows[1].reason holds control or invisible characters"),
    ("model-name", "is not a valid name"),
    ("not-utc", "is not in UTC"),
    ("stats-order", "rows[0].ratio must have min <= median <= max"),
    ("ok-without-latency", "has status ok but no latency"),
    ("skipped-without-reason", "has status skipped but no reason"),
    ("repeat-row", "repeats onnx:fp32"),
    ("rows-object", "rows must be a list"),
])
def test_hostile_fields_are_one_line_naming_the_file(tmp_path: Path, change: str,
                                                     said: str) -> None:
    path = write_raw(tmp_path, mutated(change))
    with pytest.raises(BenchRecordError) as info:
        read_record(path)
    message = str(info.value)
    assert said in message
    assert str(path) in message and "\n" not in message
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


@pytest.mark.parametrize(("text", "said"), [
    ('{"zoo_bench": NaN}', "NaN is not a number"),
    ('{"zoo_bench": 1, "x": Infinity}', "Infinity is not a number"),
    ('{"zoo_bench": 1, "zoo_bench": 1}', "duplicate key 'zoo_bench'"),
    ("[1, 2]", "not a JSON object"),
    ("{", "not valid JSON"),
    ("[" * 100_000, "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    ('{"zoo_bench": 1e400}', "must be an integer"),
])
def test_hostile_bytes(tmp_path: Path, text: str | bytes, said: str) -> None:
    with pytest.raises(BenchRecordError, match=None) as info:
        read_record(write_raw(tmp_path, text))
    assert said in str(info.value)


def test_nan_inside_a_row_is_refused(tmp_path: Path) -> None:
    text = mutated("none").replace('"sqnr_db": 200.0', '"sqnr_db": NaN')
    assert "NaN" in text
    with pytest.raises(BenchRecordError, match="NaN is not a number"):
        read_record(write_raw(tmp_path, text))


def test_huge_file_is_refused_unparsed(tmp_path: Path) -> None:
    path = write_raw(tmp_path, '{"pad": "' + "x" * (2 << 20) + '"}')
    with pytest.raises(BenchRecordError, match="larger than any bench record"):
        read_record(path)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(BenchRecordError, match=r"cannot read bench file .*nope\.bench\.json"):
        read_record(tmp_path / "nope.bench.json")


def test_writing_refuses_an_invalid_record(tmp_path: Path) -> None:
    record = sample()
    record["rows"][0]["sqnr_db"] = float("nan")
    with pytest.raises(BenchRecordError, match=r"rows\[0\].sqnr_db must be finite"):
        write_record(record, tmp_path)
    assert not list(tmp_path.iterdir())


def test_validate_and_loads_accept_the_sample() -> None:
    assert validate_record(sample()) == sample()
    assert loads_record(json.dumps(sample())) == sample()


def test_reading_a_record_imports_no_torch(tmp_path: Path) -> None:
    path = write_record(sample(), tmp_path)
    code = ("import sys; from zoo.bench import read_record; read_record(sys.argv[1]); "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, check=False, cwd=ROOT, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
