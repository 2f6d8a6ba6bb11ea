"""ONNX Runtime session settings, and what each costs the eager PyTorch pass that follows.

Why zoo's ONNX runtime module (:mod:`zoo_plugins.formats.runtimes.onnx`) makes its sessions
as it does. Four sessions of one ``.onnx`` artifact live in one process with the eager model
(generated weights, as ``benchmarks/formats.py``); each round runs every session once (in an
order that rotates from round to round), each followed by one eager forward, every call after
an idle gap as ``zoo bench`` does:

- ``blocking``: workers block between operators (``allow_spinning`` 0; zoo before 2026-12);
- ``spin``: workers spin, also after the run (onnxruntime's default);
- ``spin-stop``: workers spin only while a run lasts (``session.force_spinning_stop`` 1);
- ``zoo``: that, with height and width fixed to the input size: the session zoo's runtime
  makes (:func:`zoo_plugins.formats.runtimes.onnx.make_session`, called here, not copied).

Printed per setting: its median ms, the median (min-max) of its per-round ratio to
``blocking``, and the eager forward right after it, as milliseconds and as a ratio to the
eager forward after ``blocking``. A setting that only moves time into the next caller shows
as an eager-after ratio above 1.

    python benchmarks/onnx_session.py ARTIFACT.onnx [--model lraspp_mobilenet_v3_large]
        [--size 520] [--threads 2] [--rounds 15]

Get an artifact with ``python benchmarks/formats.py --formats onnx:fp32 onnx:int8 -o DIR``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support

SETTINGS: dict[str, dict[str, str]] = {
    "blocking": {"session.intra_op.allow_spinning": "0"},
    "spin": {"session.intra_op.allow_spinning": "1"},
    "spin-stop": {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"},
    "zoo": {},  # zoo's own session, fixed to the input size
}


def _session(path: Path, threads: int, name: str, size: int) -> Any:
    import onnxruntime

    from zoo_plugins.formats.runtimes.onnx import make_session

    if name == "zoo":
        return make_session(path.read_bytes(), threads, {"height": size, "width": size})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    for key, value in SETTINGS[name].items():
        options.add_session_config_entry(key, value)
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _timed(fn: Any, x: Any, settle: float) -> float:
    time.sleep(settle)
    start = time.perf_counter()
    fn(x)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--model", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=520)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    import torch

    from tests.support.export_helpers import make_weights
    from zoo.bench.measure import SETTLE_S, stats, steady_allocator
    from zoo.catalog.registry import default_registry
    from zoo.export.build import build_model
    from zoo.weights.resolve import resolve_weights

    torch.set_num_threads(args.threads)
    steady_allocator()
    card = default_registry().get(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        weights = resolve_weights(card, str(make_weights(args.model, Path(tmp))))
        model = build_model(card, weights)
    sessions = {name: _session(args.artifact, args.threads, name, args.size)
                for name in SETTINGS}
    x = torch.rand(1, 3, args.size, args.size)
    feed = {sessions["blocking"].get_inputs()[0].name: x.numpy()}
    runs = {name: (lambda _x, s=s: s.run(None, feed)) for name, s in sessions.items()}
    own: dict[str, list[float]] = {name: [] for name in SETTINGS}
    after: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with torch.inference_mode():
        for name in SETTINGS:  # warm-up
            runs[name](x)
            model(x)
        names = list(SETTINGS)
        for turn in range(args.rounds):  # the order rotates: no setting always follows "spin"
            for name in names[turn % len(names):] + names[:turn % len(names)]:
                own[name].append(_timed(runs[name], x, SETTLE_S))
                after[name].append(_timed(model, x, SETTLE_S))

    def ratio(values: list[float], base: list[float]) -> str:
        pairs = stats([v / b for v, b in zip(values, base, strict=True)])
        return f"{pairs['median']:.3f} ({pairs['min']:.2f}-{pairs['max']:.2f})"

    print(f"{args.artifact.name}: {args.size}x{args.size}, {args.threads} threads, "
          f"{args.rounds} rounds")
    print(f"{'setting':16s} {'ms':>7s}  {'vs blocking':18s} {'eager after ms':>14s}  "
          "eager after vs blocking's")
    for name in SETTINGS:
        print(f"{name:16s} {stats(own[name])['median']:7.2f}  "
              f"{ratio(own[name], own['blocking']):18s} {stats(after[name])['median']:14.2f}  "
              f"{ratio(after[name], after['blocking'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
