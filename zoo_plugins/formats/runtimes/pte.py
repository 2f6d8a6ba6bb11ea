"""ExecuTorch runtime: ``executorch.runtime``, as the ExecuTorch app runtime loads a ``.pte``.

``options["threads"]`` sizes ExecuTorch's own thread pool (XNNPACK runs on it, not on torch's
threads); an app sets the same through its runtime's threadpool API. On two cores, lraspp at
520x520 fp32 runs at about 0.74x eager's latency on one pool thread and 0.49-0.50x on two
(docs/bench.md has the figures and the command).
"""

from __future__ import annotations

from typing import Any

REQUIRES = ("executorch",)
MANIFEST_METHOD = "zoo_manifest"


def _set_threads(threads: int) -> None:
    try:
        from executorch.extension.pybindings import portable_lib
    except ImportError:  # an ExecuTorch build without the pybindings' threadpool API
        return
    if threads > 0 and portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


def load(path: str, options: dict[str, Any]) -> Any:
    from executorch.runtime import Runtime

    _set_threads(int(options.get("threads", 1) or 1))
    method = Runtime.get().load_program(path).load_method("forward")
    return lambda x: method.execute([x])[0]


def read_embedded(path: str) -> str | None:
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(path)
    if MANIFEST_METHOD not in program.method_names:
        return None
    data = program.load_method(MANIFEST_METHOD).execute([])[0]
    return bytes(data.numpy().tobytes()).decode("utf-8")
