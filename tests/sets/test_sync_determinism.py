"""The bytes do not depend on how many torch threads a process had: golden outputs and
calibration are float sums whose last bits change with the thread count, so every export of a
sync runs on EXPORT_THREADS threads (a real model: single_conv is too small to show it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_zoo
from tests.sets.test_sync import app, files, zoo_sync

PLAN = """\
[output]
folder = "models"

[[artifacts]]
models = ["lraspp_mobilenet_v3_large"]
formats = ["torchscript", "onnx"]
input_sizes = ["128x128"]
weights = "none"
"""


@pytest.mark.slow
def test_sequential_and_jobs_give_the_same_bytes_for_a_real_model(tmp_path: Path) -> None:
    one = app(tmp_path / "one", PLAN)
    proc = run_zoo(["sync", "--plan", str(one / "zoo.toml")],
                   env={"ZOO_HOME": str(tmp_path / "h1"), "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr
    two = app(tmp_path / "two", PLAN)
    proc = zoo_sync(two, "--jobs", "2", home=tmp_path / "h2")
    assert proc.returncode == 0, proc.stderr
    assert (one / "zoo.lock").read_text() == (two / "zoo.lock").read_text()
    assert files(one / "models") == files(two / "models")


@pytest.mark.slow
def test_zoo_fetch_gives_the_same_bytes_whatever_the_thread_count(tmp_path: Path) -> None:
    """`zoo fetch` on a many-core laptop and on a 2-core CI runner: one identity, one byte
    string (the export pins its own thread count; OMP_NUM_THREADS only sets the default)."""
    outputs = []
    for threads in ("1", "2"):
        out = tmp_path / f"out{threads}"
        proc = run_zoo(["fetch", "lraspp_mobilenet_v3_large", "--weights", "none", "--format",
                        "torchscript", "--input-size", "128x128", "-o", str(out), "--quiet"],
                       env={"ZOO_HOME": str(tmp_path / f"h{threads}"),
                            "OMP_NUM_THREADS": threads})
        assert proc.returncode == 0, proc.stderr
        outputs.append(files(out))
    assert outputs[0] == outputs[1]
