"""Run an artifact in an isolated child process, the way a device runtime would.

The child is ``python -I`` (no ``PYTHONPATH``, no user site, no current folder on
``sys.path``) started in a fresh private working folder, with a time limit. It receives, on
stdin, the source of :mod:`zoo.export.golden`, the source of the format's runtime module and
a request; it imports neither zoo nor torchvision. It writes its answer as JSON into a file in
its working folder, so nothing the runtime or the artifact prints can forge it. A runtime
that aborts on a corrupt file (ExecuTorch does) takes only the child down.
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
    golden = _module("zoo_golden", request["golden_source"])
    runtime = _module("zoo_format_runtime", request["runtime_source"])
    answer = {"modules": {}, "cases": []}
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
    """The child's environment: the caller's, minus everything that steers Python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class ChildFailed(Exception):
    """The child did not produce an answer (crash, time limit, runtime error)."""


def run_child(runtime_module: str, artifact: Path, request: dict[str, Any],
              time_limit: float = DEFAULT_TIME_LIMIT) -> dict[str, Any]:
    """Run ``request`` (action ``run`` or ``embedded``) in an isolated child; its answer."""
    with tempfile.TemporaryDirectory(prefix="zoo-verify-") as work:
        result = Path(work) / RESULT_FILE
        payload = {**request, "artifact": str(artifact.resolve()), "result": str(result),
                   "golden_source": golden_source(),
                   "runtime_source": runtime_source(runtime_module)}
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", _CHILD], input=json.dumps(payload),
                capture_output=True, text=True, env=child_env(), cwd=work,
                timeout=time_limit, check=False,
            )
        except subprocess.TimeoutExpired:
            raise ChildFailed(f"the runtime did not finish within {time_limit:g} s "
                              "(raise it with --time-limit)") from None
        if proc.returncode != 0 or not result.is_file():
            raise ChildFailed(_why(proc))
        try:
            return json.loads(result.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ChildFailed(f"the runtime's answer is unreadable: {exc}") from None


def _why(proc: subprocess.CompletedProcess[str]) -> str:
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return f"the runtime crashed ({name}) loading or running the artifact"
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
    tail = lines[-1] if lines else f"exit status {proc.returncode}"
    return f"the runtime could not run the artifact: {tail[:300]}"
