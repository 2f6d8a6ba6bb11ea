"""The ONNX runtime module: one onnxruntime session per input size, free dimensions fixed.

A session made for one size lets onnxruntime plan for known shapes (lraspp 520x520: about 5 %
faster); its threads spin during a run and stop after it. These tests check what the module
promises: every size answers what a plain session answers, a size that comes back gets a
session fixed to it, the settings are set, only the ``MAX_SESSIONS`` most recently used
sizes are kept, and threads share them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from tests.support.export_helpers import tiny_segmenter_onnx  # noqa: E402
from zoo_plugins.formats.runtimes import onnx as runtime  # noqa: E402


def _export(path: Path, dynamic: bool) -> Path:
    path.write_bytes(tiny_segmenter_onnx(dynamic=dynamic)[1])
    return path


def _plain(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


def test_a_size_that_comes_back_gets_its_own_fixed_session(tmp_path: Path) -> None:
    model = _export(tmp_path / "m.onnx", dynamic=True)
    run = runtime.load(str(model), {"threads": 2})
    assert isinstance(run, runtime.SizedSessions)
    sizes = [(32, 48), (64, 40), (32, 48), (16, 16), (64, 40)]
    for height, width in sizes:
        x = torch.rand(1, 3, height, width)
        got = run(x)
        assert tuple(got.shape) == (1, 4, height, width)
        np.testing.assert_allclose(got.numpy(), _plain(model, x), rtol=1e-5, atol=1e-5)
    # 16x16 came once: the general session answered it
    assert list(run.sessions) == [(1, 3, 32, 48), (1, 3, 64, 40)]
    for shape, session in [*run.sessions.items(), (None, run.general)]:
        want = list(shape) if shape else [1, 3, "height", "width"]
        assert session.get_inputs()[0].shape == want  # height and width fixed, or free
        settings = session.get_session_options()
        assert settings.intra_op_num_threads == 2
        assert settings.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert settings.get_session_config_entry("session.force_spinning_stop") == "1"


def test_the_least_recently_used_size_goes(tmp_path: Path) -> None:
    model = _export(tmp_path / "m.onnx", dynamic=True)
    run = runtime.load(str(model), {"threads": 1})
    shapes = [(1, 3, 16, 16 + 8 * i) for i in range(runtime.MAX_SESSIONS + 1)]
    for shape in shapes[:-1]:
        run(torch.rand(*shape))
        run(torch.rand(*shape))
    run(torch.rand(*shapes[0]))  # used again: the second is now the least recent
    run(torch.rand(*shapes[-1]))
    run(torch.rand(*shapes[-1]))
    assert list(run.sessions) == [*shapes[2:-1], shapes[0], shapes[-1]]
    x = torch.rand(*shapes[1])  # dropped: answered by the general session, then made again
    np.testing.assert_allclose(run(x).numpy(), _plain(model, x), rtol=1e-5, atol=1e-5)
    assert shapes[1] not in run.sessions
    run(x)
    assert shapes[1] in run.sessions and len(run.sessions) == runtime.MAX_SESSIONS


def test_the_file_is_read_once(tmp_path: Path) -> None:
    """Sessions made later run the bytes read at load, not whatever the path holds by then
    (the bytes ``zoo verify`` or ``zoo run --artifact`` checked are the bytes that run)."""
    model = _export(tmp_path / "m.onnx", dynamic=True)
    x = torch.rand(1, 3, 24, 40)
    want = _plain(model, x)
    run = runtime.load(str(model), {"threads": 1})
    model.write_bytes(b"not an onnx model any more")
    for _ in range(2):  # the second call makes the fixed session
        np.testing.assert_allclose(run(x).numpy(), want, rtol=1e-5, atol=1e-5)
    assert list(run.sessions) == [(1, 3, 24, 40)]


def test_a_static_graph_gets_one_session(tmp_path: Path) -> None:
    model = _export(tmp_path / "static.onnx", dynamic=False)
    run = runtime.load(str(model), {"threads": 1})
    assert not isinstance(run, runtime.SizedSessions)
    x = torch.rand(1, 3, 32, 32)
    np.testing.assert_allclose(run(x).numpy(), _plain(model, x), rtol=1e-5, atol=1e-5)


def test_a_wrong_rank_gets_onnxruntimes_own_error_and_no_session(tmp_path: Path) -> None:
    run = runtime.load(str(_export(tmp_path / "m.onnx", dynamic=True)), {"threads": 1})
    for _ in range(2):
        run(torch.rand(1, 3, 32, 32))
    for _ in range(2):
        with pytest.raises(Exception, match=r"(?i)rank|dimension"):
            run(torch.rand(3, 32, 32))
    assert list(run.sessions) == [(1, 3, 32, 32)]


def test_threads_share_the_sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four threads meet a new size at the same moment, three times each: one session is made
    for it, and every answer is right."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    model = _export(tmp_path / "m.onnx", dynamic=True)
    run = runtime.load(str(model), {"threads": 1})
    made = []
    original = runtime.make_session

    def counted(*args: object) -> object:  # slow, so that the others arrive meanwhile
        made.append(args)
        time.sleep(0.05)
        return original(*args)

    monkeypatch.setattr(runtime, "make_session", counted)
    start = threading.Barrier(4)
    x = torch.rand(1, 3, 40, 24)
    want = _plain(model, x)

    def worker(_: int) -> list[np.ndarray]:
        start.wait()
        return [run(x).numpy() for _ in range(3)]

    with ThreadPoolExecutor(4) as pool:
        answers = [a for batch in pool.map(worker, range(4)) for a in batch]
    for got in answers:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(made) == 1 and list(run.sessions) == [(1, 3, 40, 24)]
