"""Benchmark what confinement costs `zoo verify` (issue 19).

For each format, `zoo verify ARTIFACT` runs in interleaved pairs, confined then
`--no-confine` (A B A B ...), each a fresh process, so drift on a shared machine hits both
sides alike. Printed: the median wall time of each side, the median added seconds, and the
median and min-max of the per-pair ratios confined / unconfined.
Targets: ratio <= 1.15 and <= 0.5 s added.

    python benchmarks/verify.py [--model lraspp_mobilenet_v3_large] [--formats torchscript pte]
                                [--pairs 5] [--out DIR]

The artifacts are random-init exports (`--weights none`: no download needed; timing does not
depend on the weights' values), made once into --out (default: a temp folder).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUFFIX = {"torchscript": ".pt", "lite": ".ptl", "pte": ".pte", "onnx": ".onnx",
          "tflite": ".tflite"}


def zoo(args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of ``zoo ARGS`` in a fresh process; exits on failure."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "zoo", *args], env=env, capture_output=True,
                          text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"zoo {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return elapsed


def export(model: str, fmt: str, out: Path, env: dict[str, str]) -> Path:
    artifact = out / f"{model}{SUFFIX[fmt]}"
    if not artifact.exists():
        zoo(["fetch", model, "--weights", "none", "--format", fmt, "-o", str(out), "--quiet"],
            env)
    return artifact


def pairs(artifact: Path, count: int, env: dict[str, str]) -> list[tuple[float, float]]:
    """(confined, unconfined) seconds of `zoo verify`, interleaved, after one warm-up each."""
    confined = ["verify", str(artifact), "--json"]
    loose = [*confined, "--no-confine"]
    zoo(confined, env)
    zoo(loose, env)
    return [(zoo(confined, env), zoo(loose, env)) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--formats", nargs="+", default=["torchscript", "pte"],
                        choices=sorted(SUFFIX))
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="zoo-bench-verify-"))
    env = {**os.environ, "ZOO_HOME": str(out / "home")}
    rows = []
    for fmt in args.formats:
        artifact = export(args.model, fmt, out, env)
        timed = pairs(artifact, args.pairs, env)
        ratios = [a / b for a, b in timed]
        rows.append((fmt, statistics.median(a for a, _ in timed),
                     statistics.median(b for _, b in timed),
                     statistics.median(a - b for a, b in timed),
                     statistics.median(ratios), min(ratios), max(ratios)))
    print(f"zoo verify {args.model}, {args.pairs} interleaved pairs (confined, --no-confine)")
    print(f"{'format':<12} {'confined s':>10} {'unconfined s':>12} {'added s':>8} "
          f"{'ratio':>6} {'min-max':>12}")
    for fmt, conf, loose, added, ratio, low, high in rows:
        print(f"{fmt:<12} {conf:>10.2f} {loose:>12.2f} {added:>+8.2f} {ratio:>6.3f} "
              f"{low:>5.3f}-{high:<5.3f}")
    print("targets: ratio <= 1.15, added <= 0.5 s")


if __name__ == "__main__":
    main()
