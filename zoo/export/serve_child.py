"""The confined child that serves an artifact to ``zoo run --artifact`` and ``load_artifact``.

Its *source* is run with ``python -I -c`` (see :mod:`zoo.export.served`); it imports nothing
but the standard library until it has confined itself with the source of
:data:`zoo.export.sandbox.CONFINE_SOURCE`. Then it builds the golden and runtime modules
from their source text, loads the artifact once and answers one frame per input tensor.

Frames go both ways: a 4-byte big-endian header length, a JSON header, then
``header["nbytes"]`` bytes. Requests come on stdin; answers go to the pipe ``reply_fd``,
never to stdout or stderr, which the artifact can print to. The first request carries the
sources and options; each later one a float32 ``[1, 3, H, W]`` tensor (``shape``), answered
with the float32 prediction (``shape``) or ``error``.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import types
from typing import Any

MAX_HEADER = 64 << 20


def read_exact(stream: Any, count: int) -> bytearray | None:
    """``count`` bytes from ``stream``; None at end of stream before the first byte."""
    data = bytearray(count)
    view, got = memoryview(data), 0
    while got < count:
        n = stream.readinto(view[got:])
        if not n:
            if got == 0:
                return None
            raise EOFError(f"stream ended after {got} of {count} bytes")
        got += n
    return data


def read_frame(stream: Any) -> tuple[dict[str, Any] | None, bytearray]:
    """The next (header, payload) from ``stream``; (None, empty) at its end."""
    size = read_exact(stream, 4)
    if size is None:
        return None, bytearray()
    (length,) = struct.unpack(">I", size)
    if length > MAX_HEADER:
        raise ValueError(f"a frame header of {length} bytes")
    header = json.loads(bytes(read_exact(stream, length) or b""))
    payload = read_exact(stream, int(header.get("nbytes", 0))) or bytearray()
    return header, payload


def write_frame(fd: int, header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
    """Write one frame to ``fd``, all of it."""
    head = json.dumps({**header, "nbytes": len(payload)}).encode("utf-8")
    for chunk in (struct.pack(">I", len(head)) + head, payload):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]


def _module(name: str, source: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    exec(compile(source, "<" + name + ">", "exec"), mod.__dict__)
    return mod


def main() -> None:
    """Read the first request, confine, load the artifact, then answer every input."""
    stdin = sys.stdin.buffer
    request, _ = read_frame(stdin)
    assert request is not None
    reply = int(request["reply_fd"])
    confinement = None
    if request["confine"]:  # first, before any runtime is imported or the artifact opened
        confinement = _module("zoo_confine", request["confine_source"]).confine(
            request["work"], request["memory"])
    golden = _module("zoo_golden", request["golden_source"])
    runtime = _module("zoo_format_runtime", request["runtime_source"])
    import torch

    torch.set_num_threads(int(request["options"].get("threads", 1) or 1))
    fn = runtime.load(request["artifact"], request["options"])
    modules = {m: m in sys.modules for m in ("zoo", "torchvision")}
    write_frame(reply, {"ready": True, "confinement": confinement, "modules": modules})
    key = request["key"]
    while True:
        header, payload = read_frame(stdin)
        if header is None:
            return
        try:
            x = torch.frombuffer(payload, dtype=torch.float32).reshape(header["shape"])
            with torch.no_grad():
                pred = golden.select_output(fn(x), key)
            pred = pred.detach().to(torch.float32).contiguous()
            write_frame(reply, {"shape": list(pred.shape)}, memoryview(pred.numpy()).cast("B"))
        except Exception as exc:  # the runtime's own failure, reported for this input
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            last = lines[-1] if lines else ""  # TorchScript puts its traceback first
            write_frame(reply, {"error": f"{type(exc).__name__}: {last}"})


if __name__ == "__main__":
    main()
