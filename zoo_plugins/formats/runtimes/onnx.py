"""ONNX runtime: ``onnxruntime.InferenceSession`` on the CPU provider.

``options["threads"]`` sets the intra-op thread count. Two settings make it faster without
costing whatever runs next in the process (``zoo run``'s other work, a benchmark's eager
pass); both are what docs/apps.md advises apps:

- Worker threads spin while a run lasts and stop when it ends
  (``session.intra_op.allow_spinning`` 1 with ``session.force_spinning_stop`` 1): waking
  blocked workers for each operator cost lraspp 4-6 % at 520x520 on 2 threads, and threads
  left spinning after a run slowed the next eager PyTorch pass by 27-35 %.
- An input size that comes back gets its own session, with the graph's free dimensions
  (height, width) fixed to it (``add_free_dimension_override_by_name``): shapes known when the
  session is made let ONNX Runtime fuse more (residual adds into convolutions) and plan
  memory once; about 5 %. A size seen once runs on the general session (making a session
  costs about as much as a run: images of ever new sizes would pay it each time); the last
  :data:`MAX_SESSIONS` fixed sizes are kept, each with its own copy of the weights and its
  own memory arena. A graph without free dimensions has only the general session. Every
  session is made from the bytes read at load: the file is read once, so what was checked
  before loading is what every later session runs (the model's bytes stay in memory).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

REQUIRES = ("onnxruntime", "torch")

#: sessions with fixed sizes kept besides the general one (the least recently used goes)
MAX_SESSIONS = 2
#: sizes remembered as seen once, waiting to come back
_SEEN_LIMIT = 64


def load(path: str, options: dict[str, Any]) -> Any:
    import torch

    threads = int(options.get("threads", 1) or 1)
    with open(path, "rb") as file:  # read once: later sessions run the bytes read now
        model = file.read()
    general = make_session(model, threads, {})  # fails here, at load, for a model it cannot run
    meta = general.get_inputs()[0]
    if not any(isinstance(d, str) for d in meta.shape):
        return lambda x: torch.from_numpy(general.run(None, {meta.name: x.numpy()})[0])
    return SizedSessions(model, threads, general, meta.name, list(meta.shape))


class SizedSessions:
    """The artifact as a callable: the general session, and one session per input shape that
    came back, its free dimensions fixed (``sessions``, the last :data:`MAX_SESSIONS`), all
    made from the model bytes read at load (the file is not opened again). Safe to call from
    several threads (onnxruntime's ``run`` is; the cache is behind a lock)."""

    def __init__(self, model: bytes, threads: int, general: Any, name: str,
                 dims: list[Any]) -> None:
        import threading

        self.model, self.threads, self.general, self.name, self.dims = (
            model, threads, general, name, dims)
        self.sessions: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._seen: OrderedDict[tuple[int, ...], None] = OrderedDict()
        self._lock = threading.Lock()

    def session_for(self, shape: tuple[int, ...]) -> Any:
        with self._lock:
            session = self.sessions.get(shape)
            if session is not None:
                self.sessions.move_to_end(shape)
                return session
            fixed = _free_dimensions(self.dims, shape)
            if fixed is None:  # wrong rank, or one name for two sizes: onnxruntime answers
                return self.general
            if shape not in self._seen:  # seen once: remembered, answered by the general one
                self._seen[shape] = None
                if len(self._seen) > _SEEN_LIMIT:
                    self._seen.popitem(last=False)
                return self.general
            del self._seen[shape]
            session = self.sessions[shape] = make_session(self.model, self.threads, fixed)
            if len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
            return session

    def __call__(self, x: Any) -> Any:
        import torch

        session = self.session_for(tuple(x.shape))
        return torch.from_numpy(session.run(None, {self.name: x.numpy()})[0])


def make_session(model: bytes, threads: int, fixed: dict[str, int]) -> Any:
    """An onnxruntime CPU session of ``model`` as zoo makes every one: ``threads`` intra-op
    threads that spin only while a run lasts, and the free dimensions ``fixed`` names set
    (benchmarks/onnx_session.py measures this against other settings)."""
    import onnxruntime

    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = threads
    settings.inter_op_num_threads = 1
    settings.add_session_config_entry("session.intra_op.allow_spinning", "1")
    settings.add_session_config_entry("session.force_spinning_stop", "1")
    for dim, value in fixed.items():
        settings.add_free_dimension_override_by_name(dim, value)
    return onnxruntime.InferenceSession(model, settings, providers=["CPUExecutionProvider"])


def _free_dimensions(dims: list[Any], shape: tuple[int, ...]) -> dict[str, int] | None:
    """{dimension name: size} for the input's named dimensions, or None when the input's rank
    differs or one name would need two sizes."""
    if len(dims) != len(shape):
        return None
    fixed: dict[str, int] = {}
    for dim, size in zip(dims, shape, strict=True):
        if isinstance(dim, str) and fixed.setdefault(dim, size) != size:
            return None
    return fixed
