"""Golden-input parity: shared by the exporter (in-process) and ``zoo verify`` (fresh process).

This file must stay self-contained: ``zoo verify`` runs its *source* with ``python -c`` in a
process that imports neither zoo nor torchvision, the way a device runtime sees the artifact.
Only torch (and the format's own runtime) may be imported.

Script use: ``python -c "<this source>" '<json request>'`` prints one JSON line with the
artifact's output summary and which modules were loaded.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

SAMPLE_COUNT = 64


def golden_input(spec: dict[str, Any]) -> Any:
    """Rebuild the seeded input: uniform [0, 1) pixels, then (x - mean) / std."""
    import torch

    gen = torch.Generator().manual_seed(int(spec["seed"]))
    x = torch.rand(spec["shape"], generator=gen, dtype=torch.float32)
    mean = torch.tensor(spec["mean"], dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(spec["std"], dtype=torch.float32)[None, :, None, None]
    return (x - mean) / std


def select_output(result: Any, key: str | None) -> Any:
    """The prediction tensor of a model's result: ``result[key]`` for dicts, else the tensor."""
    if isinstance(result, dict):
        if key is None or key not in result:
            raise KeyError(f"output has keys {sorted(result)}, expected {key!r}")
        return result[key]
    if isinstance(result, list | tuple):
        return result[0]
    return result


def sample_indices(shape: list[int], seed: int) -> list[list[int]]:
    """Deterministic output positions to record, as [n, c, h, w] lists."""
    import torch

    gen = torch.Generator().manual_seed(int(seed) + 1)
    numel = 1
    for s in shape:
        numel *= s
    flat = torch.randint(0, numel, (SAMPLE_COUNT,), generator=gen).tolist()
    out = []
    for f in flat:
        idx = []
        for s in reversed(shape):
            idx.append(f % s)
            f //= s
        out.append(list(reversed(idx)))
    return out


def summarize(output: Any, seed: int) -> dict[str, Any]:
    """Shape, sampled values, per-channel means, argmax histogram and a digest of ``output``."""
    import torch

    out = output.detach().to(torch.float32).contiguous()
    shape = list(out.shape)
    samples = [{"index": i, "value": float(out[tuple(i)])} for i in sample_indices(shape, seed)]
    channels = shape[1] if out.dim() >= 2 else 1
    channel_means = out.transpose(0, 1).reshape(channels, -1).mean(dim=1).tolist()
    hist = torch.bincount(out.argmax(dim=1).flatten(), minlength=channels).tolist()
    digest = hashlib.sha256(out.numpy().tobytes()).hexdigest()
    return {
        "shape": shape,
        "abs_max": float(out.abs().max()),
        "samples": samples,
        "channel_means": channel_means,
        "argmax_histogram": hist,
        "sha256": digest,
    }


def compare(expected: dict[str, Any], actual: dict[str, Any], atol: float, rtol: float) -> dict:
    """Parity verdict between two summaries: every sample and channel mean must be within
    ``atol + rtol * abs_max`` of the reference, where ``abs_max`` is the largest magnitude in
    the reference output (float32 rounding grows with the output's scale)."""
    problems: list[str] = []
    if expected["shape"] != actual["shape"]:
        problems.append(f"output shape {actual['shape']} != expected {expected['shape']}")
        return {"ok": False, "max_abs_diff": None, "problems": problems}
    worst = 0.0
    limit = atol + rtol * float(expected.get("abs_max", 0.0))
    samples = zip(expected["samples"], actual["samples"], strict=True)
    pairs = [(e["value"], a["value"]) for e, a in samples]
    pairs += list(zip(expected["channel_means"], actual["channel_means"], strict=True))
    for ref, got in pairs:
        diff = abs(ref - got)
        worst = max(worst, diff)
        if diff > limit:
            problems.append(f"value {got:.6g} differs from {ref:.6g} by {diff:.3g}")
    return {
        "ok": not problems,
        "max_abs_diff": worst,
        "limit": limit,
        "bit_exact": expected["sha256"] == actual["sha256"],
        "argmax_agreement": _hist_overlap(expected["argmax_histogram"], actual["argmax_histogram"]),
        "problems": problems[:5],
    }


def _hist_overlap(a: list[int], b: list[int]) -> float:
    total = sum(a) or 1
    return sum(min(x, y) for x, y in zip(a, b, strict=False)) / total


def load_runnable(fmt: str, path: str) -> Any:
    """A callable ``x -> result`` for an artifact, through the format's own runtime only."""
    if fmt == "torchscript":
        import torch

        return torch.jit.load(path, map_location="cpu")
    if fmt == "lite":
        from torch.jit.mobile import _load_for_lite_interpreter

        return _load_for_lite_interpreter(path)
    if fmt == "pte":
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(path).load_method("forward")
        return lambda x: method.execute([x])[0]
    if fmt == "onnx":
        import onnxruntime
        import torch

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    raise SystemExit(f"no loader for format {fmt!r} in the generic runner")


def run_request(request: dict[str, Any]) -> dict[str, Any]:
    """Load the artifact, run the golden input, summarise and compare."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(int(request.get("threads", 1)))
    if request.get("engine"):  # int8 TorchScript/lite: the engine it was quantized for
        torch.backends.quantized.engine = request["engine"]
    module = load_runnable(request["format"], request["artifact"])
    golden = request["golden"]
    x = golden_input(golden["input"])
    with torch.no_grad():
        result = module(x)
    actual = summarize(select_output(result, request.get("output_key")), golden["input"]["seed"])
    verdict = compare(golden["output"], actual, golden["atol"], golden["rtol"])
    verdict["actual"] = actual
    verdict["result_type"] = "dict" if isinstance(result, dict) else "tensor"
    verdict["result_keys"] = sorted(result) if isinstance(result, dict) else None
    verdict["modules"] = {m: m in sys.modules for m in ("zoo", "torchvision")}
    return verdict


if __name__ == "__main__":
    print(json.dumps(run_request(json.loads(sys.argv[1]))))
