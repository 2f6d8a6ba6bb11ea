"""ExecuTorch runtime: ``executorch.runtime``, as the ExecuTorch app runtime loads a ``.pte``."""

from __future__ import annotations

from typing import Any

REQUIRES = ("executorch",)
MANIFEST_METHOD = "zoo_manifest"


def load(path: str, options: dict[str, Any]) -> Any:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(path).load_method("forward")
    return lambda x: method.execute([x])[0]


def read_embedded(path: str) -> str | None:
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(path)
    if MANIFEST_METHOD not in program.method_names:
        return None
    data = program.load_method(MANIFEST_METHOD).execute([])[0]
    return bytes(data.numpy().tobytes()).decode("utf-8")
