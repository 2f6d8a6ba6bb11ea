"""Run an artifact in an isolated, confined child process, the way a device runtime would.

The child is ``python -I`` (no ``PYTHONPATH``, no user site, no current folder on
``sys.path``) started in a fresh private working folder, with a time limit. The parent copies
the artifact into that folder and hashes the *copy* against the manifest before the child
starts, so the bytes that run are exactly the bytes that were checked (a file swapped after
the check never runs). The child first confines itself (:mod:`zoo.export.sandbox`: a memory
ceiling, no writes outside its folder, no network), then receives, on stdin, the source of
:mod:`zoo.export.golden`, the source of the format's runtime module and a request; it imports
neither zoo nor torchvision. It writes its answer as JSON into a file in its working folder,
so nothing the runtime or the artifact prints can forge it. A runtime that aborts on a corrupt
file (ExecuTorch does) takes only the child down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from zoo.export.runtime import runtime_source
from zoo.export.sandbox import (
    CONFINE_SOURCE,
    DEFAULT_MEMORY_LIMIT,
    artifact_digest,
    copy_artifact,
    macos_prefix,
)

DEFAULT_TIME_LIMIT = 300.0
RESULT_FILE = "result.json"

_CHILD = r'''
import json, sys, types

def _module(name, source):
    mod = types.ModuleType(name)
    exec(compile(source, "<" + name + ">", "exec"), mod.__dict__)
    return mod

def _describe(result):
    if isinstance(result, dict):
        return "dict", sorted(str(k) for k in result)
    if isinstance(result, (list, tuple)):
        return "sequence", None
    return "tensor", None

def _contract(golden, result, pred, spec, contract):
    problems = []
    kind, keys = _describe(result)
    if kind != contract["kind"] and not (kind == "sequence" and contract["kind"] == "tensor"):
        problems.append("the artifact returns a " + kind + ", the manifest says " +
                        contract["kind"])
    if contract["kind"] == "dict" and keys is not None and contract["key"] not in keys:
        problems.append("the artifact's dict has keys " + str(keys) + ", not " +
                        repr(contract["key"]))
    shape = list(getattr(pred, "shape", []))
    want = [1, contract["channels"], spec["shape"][2], spec["shape"][3]]
    if shape != want:
        problems.append("output shape " + str(shape) + " != " + str(want) +
                        " ([1, channels, H, W] per the manifest)")
    return kind, keys, problems

def _run(request):
    confinement = None
    if request.get("confine"):  # first, before any runtime is imported or the artifact opened
        confinement = _module("zoo_confine", request["confine_source"]).confine(
            request["work"], request["memory"])
    golden = _module("zoo_golden", request["golden_source"])
    runtime = _module("zoo_format_runtime", request["runtime_source"])
    answer = {"modules": {}, "cases": [], "confinement": confinement}
    if request["action"] == "embedded":
        reader = getattr(runtime, "read_embedded", None)
        answer["embedded"] = reader(request["artifact"]) if reader else None
    else:
        import torch
        torch.manual_seed(0)
        torch.set_num_threads(int(request["options"].get("threads", 1) or 1))
        fn = runtime.load(request["artifact"], request["options"])
        for case in request["cases"]:
            spec = case["input"]
            x = golden.golden_input(spec)
            with torch.no_grad():
                result = fn(x)
            entry = {"name": case["name"]}
            try:
                pred = golden.select_output(result, request["contract"]["key"])
            except KeyError as exc:
                pred = None
                entry["problems"] = [str(exc)]
            kind, keys, problems = _contract(golden, result, pred, spec, request["contract"])
            entry["result_type"], entry["result_keys"] = kind, keys
            entry["contract_problems"] = problems
            if pred is not None and not problems:
                actual = golden.summarize(pred, spec["seed"])
                entry["verdict"] = golden.compare(case["output"], actual, request["limits"])
                entry["actual"] = {k: v for k, v in actual.items() if k != "samples"}
            answer["cases"].append(entry)
    answer["modules"] = {m: m in sys.modules for m in ("zoo", "torchvision")}
    with open(request["result"], "w", encoding="utf-8") as fh:
        json.dump(answer, fh)

_run(json.loads(sys.stdin.read()))
'''


def golden_source() -> str:
    """The source text of :mod:`zoo.export.golden` (sent to the child)."""
    return (resources.files("zoo.export") / "golden.py").read_text(encoding="utf-8")


def child_env() -> dict[str, str]:
    """The child's environment: the caller's, minus everything that steers Python (and the
    marker only zoo sets for a child it started under sandbox-exec)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON") and k != "ZOO_SANDBOX"}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class ChildFailed(Exception):
    """The child did not produce an answer (crash, time limit, runtime error)."""


def private_copy(artifact: Path, folder: Path, expected: str | None) -> Path:
    """A copy of ``artifact`` in ``folder`` that the child opens instead of the original;
    with ``expected`` (the manifest's sha256, or a folder's tree digest) the copy must hash
    to it, else ChildFailed and nothing runs."""
    copy = copy_artifact(artifact, folder)
    if expected is not None:
        actual = artifact_digest(copy)
        if actual != expected:
            raise ChildFailed(f"the artifact's bytes changed after they were checked "
                              f"(the copy hashes to {actual[:16]}…, the manifest says "
                              f"{expected[:16]}…): not run")
    return copy


def child_launch(work: Path, confine: bool) -> tuple[list[str], dict[str, str]]:
    """(command prefix, environment) of a child whose private folder is ``work``: on macOS,
    confined, the prefix is ``sandbox-exec -p PROFILE``."""
    env = {**child_env(), "TMPDIR": str(work), "HOME": str(work)}
    prefix = macos_prefix(work) if confine else []
    if prefix:
        env["ZOO_SANDBOX"] = "macos"
    return prefix, env


def run_child(runtime_module: str, artifact: Path, request: dict[str, Any],
              time_limit: float = DEFAULT_TIME_LIMIT, *, expected: str | None = None,
              memory_limit: int = DEFAULT_MEMORY_LIMIT, confine: bool = True
              ) -> dict[str, Any]:
    """Run ``request`` (action ``run`` or ``embedded``) in an isolated child; its answer.

    The child gets a private copy of ``artifact``; with ``expected`` (the manifest's sha256
    of the artifact, or its folder's tree digest) the copy must hash to it, else nothing runs.
    ``confine`` False runs the child unconfined (``zoo verify --no-confine``: for benchmarks
    and debugging; the verdict says so).
    """
    with tempfile.TemporaryDirectory(prefix="zoo-verify-") as work:
        folder = Path(work)
        result = folder / RESULT_FILE
        copy = private_copy(artifact, folder, expected)
        payload = {**request, "artifact": str(copy), "result": str(result),
                   "golden_source": golden_source(),
                   "runtime_source": runtime_source(runtime_module),
                   "confine": confine, "confine_source": CONFINE_SOURCE, "work": str(folder),
                   "memory": memory_limit}
        prefix, env = child_launch(folder, confine)
        try:
            proc = subprocess.run(
                [*prefix, sys.executable, "-I", "-c", _CHILD], input=json.dumps(payload),
                capture_output=True, text=True, env=env, cwd=work,
                timeout=time_limit, check=False,
            )
        except subprocess.TimeoutExpired:
            raise ChildFailed(f"the runtime did not finish within {time_limit:g} s "
                              "(raise it with --time-limit)") from None
        if proc.returncode != 0 or not result.is_file():
            raise ChildFailed(failure_reason(proc.returncode, proc.stderr or "",
                                             memory_limit if confine else None))
        try:
            return json.loads(result.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ChildFailed(f"the runtime's answer is unreadable: {exc}") from None


_OUT_OF_MEMORY = ("MemoryError", "can't allocate memory", "not enough memory", "std::bad_alloc",
                  "Cannot allocate memory", "out of memory", "out_of_memory")


def failure_reason(returncode: int, stderr: str, memory_limit: int | None) -> str:
    """Why a child ended without an answer, in one line (naming the memory ceiling when the
    runtime ran out of memory under it)."""
    if memory_limit and (any(sign in stderr for sign in _OUT_OF_MEMORY)
                         or returncode == -signal.SIGKILL):
        from zoo._core.settings import format_size

        return (f"the runtime exceeded the memory limit of {format_size(memory_limit)} "
                "(raise it with --memory-limit)")
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the runtime crashed ({name}) loading or running the artifact"
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    tail = lines[-1] if lines else f"exit status {returncode}"
    return f"the runtime could not run the artifact: {tail[:300]}"
