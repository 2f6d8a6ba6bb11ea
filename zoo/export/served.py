"""An artifact served by a confined child: what ``zoo run --artifact`` and ``load_artifact``
call instead of loading the artifact into zoo's own process.

The child (:mod:`zoo.export.serve_child`, sent as source) gets a private copy of the
artifact, hashed against the manifest before it starts, confines itself exactly as
``zoo verify``'s child does (:mod:`zoo.export.sandbox`), loads the artifact once and then
answers one input tensor at a time over pipes: the preprocessed float32 input goes in, the
float32 prediction (the contract's tensor) comes back. Its stdout and stderr go to a log
file outside its writable folder, read only to explain a failure.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.export.isolated import (
    DEFAULT_TIME_LIMIT,
    ChildFailed,
    child_launch,
    failure_reason,
    golden_source,
    private_copy,
)
from zoo.export.runtime import runtime_source
from zoo.export.sandbox import CONFINE_SOURCE, DEFAULT_MEMORY_LIMIT, unconfined_reason

MAX_HEADER = 64 << 20
MAX_PAYLOAD = 8 << 30
LOG_TAIL = 64 << 10


def _source() -> str:
    from importlib import resources

    return (resources.files("zoo.export") / "serve_child.py").read_text(encoding="utf-8")


def _frame(header: dict[str, Any], payload: bytes | memoryview = b"") -> bytes:
    head = json.dumps({**header, "nbytes": len(payload)}).encode("utf-8")
    return struct.pack(">I", len(head)) + head


def _stop(proc: subprocess.Popen[bytes], folder: Path, handles: list[Any]) -> None:
    """End the child (its stdin closed, it exits; killed after 5 s) and remove its folder."""
    for handle in handles:
        with contextlib.suppress(OSError):
            handle.close()
    if proc.poll() is None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    shutil.rmtree(folder, ignore_errors=True)


class ServedArtifact:
    """A callable: input tensor ``[1, 3, H, W]`` -> the prediction, computed by a confined
    child that loaded the artifact once. ``close()`` (or garbage collection, or exit) ends it.

    ``expected`` is the manifest's hash of the artifact: the child's private copy must match
    it (None: copied, not checked). ``kind``/``key``: the output contract (a ``dict``
    contract gets ``{key: tensor}`` back, as the runtime returned it)."""

    def __init__(self, runtime_module: str, artifact: Path, options: dict[str, Any], *,
                 kind: str, key: str | None, expected: str | None,
                 memory_limit: int | None = None, confine: bool = True,
                 time_limit: float = DEFAULT_TIME_LIMIT) -> None:
        self.kind, self.key, self.time_limit = kind, key, time_limit
        self.memory_limit = (memory_limit or DEFAULT_MEMORY_LIMIT) if confine else None
        outer = Path(tempfile.mkdtemp(prefix="zoo-run-"))
        work = outer / "work"
        work.mkdir(mode=0o700)
        try:
            copy = private_copy(artifact, work, expected)
        except BaseException:
            shutil.rmtree(outer, ignore_errors=True)
            raise
        prefix, env = child_launch(work, confine)
        self._log = open(outer / "child.log", "w+b")  # noqa: SIM115 - closed by _stop
        read_end, write_end = os.pipe()
        self._answers = os.fdopen(read_end, "rb", buffering=0)
        try:
            self._proc = subprocess.Popen(
                [*prefix, sys.executable, "-I", "-c", _source()], stdin=subprocess.PIPE,
                stdout=self._log, stderr=self._log, cwd=work, env=env, pass_fds=(write_end,),
                start_new_session=True)
        except OSError as exc:
            self._answers.close()
            self._log.close()
            shutil.rmtree(outer, ignore_errors=True)
            raise ChildFailed(f"cannot start the runtime's process: {exc}") from None
        finally:
            os.close(write_end)
        assert self._proc.stdin is not None
        self._closer = weakref.finalize(self, _stop, self._proc, outer,
                                        [self._proc.stdin, self._answers, self._log])
        request = {"reply_fd": write_end, "artifact": str(copy), "options": options,
                   "key": key, "confine": confine, "confine_source": CONFINE_SOURCE,
                   "work": str(work), "memory": self.memory_limit,
                   "golden_source": golden_source(),
                   "runtime_source": runtime_source(runtime_module)}
        try:
            self._send(request)
            ready, _ = self._receive()
        except BaseException:
            self.close()
            raise
        self.confinement: dict[str, Any] | None = ready.get("confinement")
        #: None when confined, else why not ("--in-process" never gets here)
        self.unconfined = "--no-confine" if not confine else unconfined_reason(self.confinement)

    def __call__(self, x: Any) -> Any:
        """The artifact's prediction for ``x`` (float32 ``[1, 3, H, W]``); ZooError, in one
        line, when the runtime fails, runs out of memory or time, or its process is gone."""
        import torch

        x = x.detach().to(torch.float32).contiguous()
        try:
            self._send({"shape": list(x.shape)}, memoryview(x.numpy()).cast("B"))
            header, payload = self._receive()
        except ChildFailed as exc:
            raise ZooError(str(exc)) from None
        if "error" in header:
            text = " ".join(str(header["error"]).split())
            raise ZooError(failure_reason(1, text, self.memory_limit))
        shape = [int(n) for n in header.get("shape", [])]
        if len(payload) != 4 * math.prod(shape):
            raise ZooError(f"the runtime's answer is unreadable: {len(payload)} bytes for a "
                           f"{shape} float32 tensor")
        pred = torch.frombuffer(payload, dtype=torch.float32).reshape(shape) if payload \
            else torch.empty(shape)
        return {self.key: pred} if self.kind == "dict" else pred

    def close(self) -> None:
        """End the child and remove its private folder (idempotent)."""
        self._closer()

    def _send(self, header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(_frame(header, payload))
            if len(payload):
                stdin.write(payload)
            stdin.flush()
        except OSError:  # a broken pipe: the child is gone
            raise self._ended() from None

    def _receive(self) -> tuple[dict[str, Any], bytearray]:
        deadline = time.monotonic() + self.time_limit
        (length,) = struct.unpack(">I", self._read(4, deadline))
        if length > MAX_HEADER:
            raise ChildFailed(f"the runtime's answer is unreadable ({length}-byte header)")
        try:
            header = json.loads(bytes(self._read(length, deadline)))
        except ValueError as exc:
            raise ChildFailed(f"the runtime's answer is unreadable: {exc}") from None
        size = int(header.get("nbytes", 0))
        if not 0 <= size <= MAX_PAYLOAD:
            raise ChildFailed(f"the runtime's answer is unreadable ({size}-byte payload)")
        return header, self._read(size, deadline)

    def _read(self, count: int, deadline: float) -> bytearray:
        data = bytearray(count)
        view, got = memoryview(data), 0
        while got < count:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                self._kill()
                raise ChildFailed(f"the runtime did not answer within {self.time_limit:g} s")
            n = self._answers.readinto(view[got:])
            if not n:
                raise self._ended()
            got += n
        return data

    def _kill(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def _ended(self) -> ChildFailed:
        """The child is gone: why, in one line (from its exit status and log)."""
        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill()
            code = self._proc.wait()
        self._log.seek(max(0, self._log.seek(0, os.SEEK_END) - LOG_TAIL))
        text = self._log.read().decode("utf-8", "replace")
        return ChildFailed(failure_reason(code, text, self.memory_limit))
