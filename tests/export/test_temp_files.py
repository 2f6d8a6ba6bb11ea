"""Exports leave nothing in the temp folder: the int8 scratch copy, coremltools' converted
packages (removed when dropped, and by the atexit handlers the CLI now runs before
``os._exit``)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from tests.support.export_helpers import fetch, make_weights


@pytest.mark.parametrize("fmt, precision", [("coreml", "fp32"), ("onnx", "int8")])
def test_an_export_leaves_the_temp_folder_as_it_found_it(tmp_path: Path, fmt: str,
                                                         precision: str) -> None:
    pytest.importorskip({"coreml": "coremltools", "onnx": "onnxruntime"}[fmt])
    temp = tmp_path / "temp"
    temp.mkdir()
    proc = fetch(["single_conv", "--format", fmt, "--precision", precision, "--weights",
                  str(make_weights("single_conv", tmp_path)), "--input-size", "32x48", "-o",
                  str(tmp_path / "out"), "--quiet"], tmp_path / "home", TMPDIR=str(temp))
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Folders are what leaked (zoo-scratch-*, tmp*.mlpackage); a library's 51-byte session
    # marker file (.ses, not zoo's) may appear and stay.
    assert sorted(p.name for p in temp.iterdir() if p.is_dir()) == []


def test_a_dropped_core_ml_model_takes_its_temporary_package_along() -> None:
    ct = pytest.importorskip("coremltools")
    import numpy as np
    import torch

    from zoo_plugins.formats.coreml import _reclaim_when_dropped

    program = torch.export.export(torch.nn.Conv2d(3, 2, 1).eval(), (torch.zeros(1, 3, 8, 8),))
    model = ct.convert(program.run_decompositions({}), convert_to="mlprogram",
                       inputs=[ct.TensorType(name="x", shape=(1, 3, 8, 8), dtype=np.float32)],
                       skip_model_load=True)
    package = Path(model.package_path)
    assert model.is_temp_package and package.is_dir()
    assert _reclaim_when_dropped(model) is model
    del model
    gc.collect()
    assert not package.exists()
