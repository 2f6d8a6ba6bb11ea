"""``zoo bench`` end to end: real exports of the tiny built-in single_conv (weights served by a
real local HTTP server), loaded by the real runtimes, timed and compared with eager fp32; the
record on disk validates; rows that cannot run say why; bad input is one line, exit 2."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_zoo
from tests.support.export_helpers import make_weights, sha256_file
from tests.support.httpserver import HTTPTestServer, http_server  # noqa: F401
from zoo.bench import SQNR_CAP_DB, read_record

# `python -m zoo` with some packages made invisible (sys.modules[name] = None: find_spec says
# "not installed", import fails), as on a machine without that extra.
WITHOUT = ("import sys\n"
           "for name in sys.argv[1].split(','):\n"
           "    sys.modules[name] = None\n"
           "from zoo.cli.main import main\n"
           "sys.exit(main(sys.argv[2:]))\n")


def bench(args: list[str], home: Path, cwd: Path, hide: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "ZOO_HOME": str(home)}
    if not hide:
        return run_zoo(["bench", *args], env={"ZOO_HOME": str(home)}, cwd=cwd)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", WITHOUT, hide, "bench", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600,
                          check=False)


def rows_by_key(record: dict) -> dict[str, dict]:
    return {f"{r['format']}:{r['precision']}": r for r in record["rows"]}


def test_bench_single_conv_end_to_end(tmp_path: Path,
                                      http_server: HTTPTestServer) -> None:  # noqa: F811
    weights = make_weights("single_conv", tmp_path)
    url = http_server.serve(f"/{weights.name}", weights) + f"#sha256={sha256_file(weights)}"
    home, out = tmp_path / "home", tmp_path / "out"
    proc = bench(["single_conv", "--weights", url, "--formats", "torchscript:fp32",
                  "onnx:fp32", "coreml:fp32", "--runs", "3", "--size", "64", "--json",
                  "-o", str(out)], home, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = out / "single_conv.bench.json"
    record = read_record(path)  # validates: version, types, finite numbers
    assert json.loads(proc.stdout) == record  # --json prints exactly the record
    assert [f"{r['format']}:{r['precision']}" for r in record["rows"]] == \
        ["torchscript:fp32", "onnx:fp32", "coreml:fp32"]
    assert record["model"] == "single_conv"
    assert record["settings"] == {"size": [64, 64], "runs": 3, "threads": 2, "weights": "user"}
    machine = record["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["torch"]
    assert "onnxruntime" in machine["runtimes"]
    rows = rows_by_key(record)
    for key in ("torchscript:fp32", "onnx:fp32"):
        row = rows[key]
        assert row["status"] == "ok" and row["reason"] is None, row
        assert row["size_bytes"] > 0 and row["export_s"] > 0
        for series in ("latency_ms", "eager_ms", "ratio"):
            s = row[series]
            assert 0 < s["min"] <= s["median"] <= s["max"], (key, series, s)
        assert row["argmax_agreement"] >= 0.999, row
        assert row["sqnr_db"] >= 60, row  # fp32 against fp32: rounding noise at most
    assert rows["torchscript:fp32"]["sqnr_db"] == SQNR_CAP_DB  # the same kernels: identical
    coreml = rows["coreml:fp32"]
    if platform.system() != "Darwin":
        assert coreml["status"] == "size-only", coreml
        assert "runs only on macOS" in coreml["reason"]
        assert coreml["latency_ms"] is None and coreml["sqnr_db"] is None
        assert coreml["size_bytes"] > 0
    # the artifacts lie next to the record, as `zoo fetch` installs them
    assert (out / "single_conv.pt").is_file() and (out / "single_conv.onnx").is_file()
    assert (out / "single_conv.mlpackage").is_dir()

    # Again, on a machine without ExecuTorch: the ONNX artifact comes from the export cache
    # (no export time, still measured), the pte row is skipped with its pip line; the table
    # (no --json) says so too.
    again = bench(["single_conv", "--weights", url, "--formats", "onnx:fp32", "pte:fp32",
                   "--runs", "2", "--size", "64", "-o", str(out)], home, tmp_path,
                  hide="executorch")
    assert again.returncode == 0, again.stderr[-3000:]
    rows = rows_by_key(read_record(path))
    assert rows["onnx:fp32"]["status"] == "ok"
    assert rows["onnx:fp32"]["export_s"] is None  # a cache hit did no export work
    assert rows["onnx:fp32"]["size_bytes"] == (out / "single_conv.onnx").stat().st_size
    assert rows["pte:fp32"] == {**rows["pte:fp32"], "status": "skipped", "size_bytes": None,
                                "reason": "needs an optional extra: pip install "
                                "'zoo[executorch]'"}
    assert "skipped" in again.stdout and "zoo[executorch]" in again.stdout
    assert "Traceback" not in again.stderr


@pytest.mark.parametrize(("args", "said"), [
    (["--formats", "nope"], "unknown format 'nope'"),
    (["--formats", "onnx:fp16"], "onnx exports fp32, int8"),
    (["--runs", "0"], "must be a whole number"),
    (["--size", "64x"], "is not HEIGHTxWIDTH"),
    (["--size", "0"], "'0' is not a size: give N"),
    (["--formats", "onnx", "-o", "{file}"], "exists and is not a folder"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], said: str) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("x")
    args = [a.replace("{file}", str(afile)) for a in args]
    proc = run_zoo(["bench", "single_conv", *args], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], proc.stderr
    assert not list(tmp_path.glob("*.bench.json"))


def test_unknown_model_is_exit_2(tmp_path: Path) -> None:
    proc = run_zoo(["bench", "no_such_model"], cwd=tmp_path)
    assert proc.returncode == 2 and "unknown model 'no_such_model'" in proc.stderr
