"""ONNX runtime: ``onnxruntime.InferenceSession`` on the CPU provider.

``options["threads"]`` sets the intra-op thread count. Two settings make it faster without
costing whatever runs next in the process (``zoo run``'s other work, a benchmark's eager
pass); both are what docs/apps.md advises apps:

- Worker threads spin while a run lasts and stop when it ends
  (``session.intra_op.allow_spinning`` 1 with ``session.force_spinning_stop`` 1): waking
  blocked workers for each operator cost lraspp 4-5 % at 520x520 on 2 threads, and threads
  left spinning after a run slowed the next eager PyTorch pass by a third.
- A session is made per input size, with the graph's free dimensions (height, width) fixed to
  it (``add_free_dimension_override_by_name``): shapes known when the session is made let
  ONNX Runtime fuse more (residual adds into convolutions) and plan memory once; about 5 %.
  The last :data:`MAX_SESSIONS` sizes are kept; a graph without free dimensions gets one
  session.
"""

from __future__ import annotations

from typing import Any

REQUIRES = ("onnxruntime", "torch")

#: sessions kept, one per input size (the oldest is dropped first)
MAX_SESSIONS = 4


def load(path: str, options: dict[str, Any]) -> Any:
    import torch

    threads = int(options.get("threads", 1) or 1)
    probe = _session(path, threads, {})  # fails here, at load, for a model it cannot run
    meta = probe.get_inputs()[0]
    if not any(isinstance(d, str) for d in meta.shape):
        return lambda x: torch.from_numpy(probe.run(None, {meta.name: x.numpy()})[0])
    # sessions per input size from here on (two copies of the weights otherwise)
    return SizedSessions(path, threads, meta.name, list(meta.shape))


class SizedSessions:
    """The artifact as a callable: one session per input shape, its free dimensions fixed
    to that shape; ``sessions`` keeps the last :data:`MAX_SESSIONS`. Safe to call from
    several threads (onnxruntime's ``run`` is; the cache is behind a lock)."""

    def __init__(self, path: str, threads: int, name: str, dims: list[Any]) -> None:
        import threading

        self.path, self.threads, self.name, self.dims = path, threads, name, dims
        self.sessions: dict[tuple[int, ...], Any] = {}
        self._lock = threading.Lock()

    def session_for(self, shape: tuple[int, ...]) -> Any:
        with self._lock:
            session = self.sessions.get(shape)
            if session is None:
                fixed = _free_dimensions(self.dims, shape) or {}
                session = _session(self.path, self.threads, fixed)
                if len(self.sessions) >= MAX_SESSIONS:
                    self.sessions.pop(next(iter(self.sessions)))
                self.sessions[shape] = session
            return session

    def __call__(self, x: Any) -> Any:
        import torch

        session = self.session_for(tuple(x.shape))
        return torch.from_numpy(session.run(None, {self.name: x.numpy()})[0])


def _session(path: str, threads: int, fixed: dict[str, int]) -> Any:
    import onnxruntime

    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = threads
    settings.inter_op_num_threads = 1
    settings.add_session_config_entry("session.intra_op.allow_spinning", "1")
    settings.add_session_config_entry("session.force_spinning_stop", "1")
    for dim, value in fixed.items():
        settings.add_free_dimension_override_by_name(dim, value)
    return onnxruntime.InferenceSession(path, settings, providers=["CPUExecutionProvider"])


def _free_dimensions(dims: list[Any], shape: tuple[int, ...]) -> dict[str, int] | None:
    """{dimension name: size} for the input's named dimensions, or None when the input's rank
    differs or one name would need two sizes (a session without overrides then answers,
    with its own error for a wrong rank)."""
    if len(dims) != len(shape):
        return None
    fixed: dict[str, int] = {}
    for dim, size in zip(dims, shape, strict=True):
        if isinstance(dim, str) and fixed.setdefault(dim, size) != size:
            return None
    return fixed
