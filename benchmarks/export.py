"""Benchmark `zoo fetch deeplabv3_resnet50 --format lite` against the seed tutorial's bare steps.

Baseline (issues 5 and 22): the tutorial's steps in a fresh process: build the torchvision
model, load the weights, `torch.jit.script`, save for the lite interpreter. Measured in the
same run, as interleaved pairs (bare, zoo, bare, zoo, ...; each zoo run with an empty
ZOO_HOME), reported as the median of the pair ratios with their min-max:

- wall time of `zoo fetch NAME --format lite --weights FILE` (cold process, empty cache)
  / bare steps                                                    target <= 1.2 (issue 22)
- the cache-hit repeat / the first fetch                          target <= 0.1
- artifact sizes (zoo's frozen lite file vs the bare one)
- lite-interpreter inference / eager inference (same input, same threads, median)
                                                                  target <= 1.05

    python benchmarks/export.py [--model deeplabv3_resnet50] [--weights FILE] [--pairs 5]
        [--runs 5]

Without --weights a random state dict in torchvision's layout (with the aux head) is made.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import median_seconds

BARE_STEPS = r"""
import sys, warnings
warnings.filterwarnings("ignore")
import torch
from torchvision.models import segmentation
name, weights, out = sys.argv[1:4]
model = getattr(segmentation, name)(weights=None, weights_backbone=None, aux_loss=True)
model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
model.eval()
scripted = torch.jit.script(model)
scripted._save_for_lite_interpreter(out)
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return elapsed


def make_weights(name: str, folder: Path) -> Path:
    import torch
    from torchvision.models import segmentation

    kwargs = {"aux_loss": True} if not name.startswith("lraspp") else {}
    model = getattr(segmentation, name)(weights=None, weights_backbone=None, **kwargs)
    path = folder / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return path


def inference_times(name: str, weights: Path, artifact: Path, size: int, runs: int,
                    threads: int) -> tuple[float, float]:
    """Median seconds per forward pass: eager (zoo.export.build) and the lite artifact."""
    import torch
    from torch.jit.mobile import _load_for_lite_interpreter

    import zoo
    from zoo.export.build import build_model
    from zoo.weights.resolve import resolve_weights

    torch.set_num_threads(threads)
    card = zoo.get(name)
    eager = build_model(card, resolve_weights(card, str(weights)))
    lite = _load_for_lite_interpreter(str(artifact))
    x = torch.rand(1, 3, size, size)

    return median_seconds(eager, x, runs), median_seconds(lite, x, runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deeplabv3_resnet50")
    parser.add_argument("--weights", type=Path, help="state dict file (default: random)")
    parser.add_argument("--runs", type=int, default=5, help="inference runs per side")
    parser.add_argument("--pairs", type=int, default=5,
                        help="interleaved (bare, cold zoo fetch) pairs")
    parser.add_argument("--size", type=int, default=520, help="inference input size")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        weights = args.weights or make_weights(args.model, tmpdir)
        env = {**os.environ, "ZOO_HOME": str(tmpdir / "home")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed zoo loads .pyc files
        bare_out = tmpdir / "bare.ptl"
        fetch = [sys.executable, "-m", "zoo", "fetch", args.model, "--format", "lite",
                 "--weights", str(weights), "-o", str(tmpdir / "out"), "--quiet"]
        timed(fetch, env)  # warm-up: page cache, .pyc files
        bares: list[float] = []
        colds: list[float] = []
        for pair in range(args.pairs):
            shutil.rmtree(tmpdir / "home", ignore_errors=True)
            bares.append(timed([sys.executable, "-c", BARE_STEPS, args.model, str(weights),
                                str(bare_out)], env))
            colds.append(timed(fetch, env))
            print(f"  pair {pair + 1}: bare {bares[-1]:.2f} s, zoo cold {colds[-1]:.2f} s, "
                  f"{colds[-1] / bares[-1]:.2f}x", file=sys.stderr)
        repeat = timed(fetch, env)
        ratios = [c / b for b, c in zip(bares, colds, strict=True)]
        bare, first = statistics.median(bares), statistics.median(colds)
        artifact = tmpdir / "out" / f"{args.model}.ptl"
        eager_s, lite_s = inference_times(args.model, weights, artifact, args.size, args.runs,
                                          args.threads)
        rows = [
            ("bare steps (build, load, script, save)", f"{bare:.2f} s", "baseline", ""),
            ("zoo fetch --format lite (cold)", f"{first:.2f} s",
             f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})",
             "<= 1.2"),
            ("zoo fetch repeat (cache hit)", f"{repeat:.2f} s", f"{repeat / first:.3f}x first",
             "<= 0.1"),
            ("bare artifact size", f"{bare_out.stat().st_size / 1e6:.1f} MB", "", ""),
            ("zoo artifact size (frozen, aux dropped)",
             f"{artifact.stat().st_size / 1e6:.1f} MB",
             f"{artifact.stat().st_size / bare_out.stat().st_size:.2f}x bare", ""),
            (f"eager inference {args.size}x{args.size}", f"{eager_s * 1000:.0f} ms", "baseline",
             ""),
            (f"lite inference {args.size}x{args.size}", f"{lite_s * 1000:.0f} ms",
             f"{lite_s / eager_s:.2f}x", "<= 1.05"),
        ]
    print(f"{args.model}, {args.pairs} interleaved pairs (medians; ratio: median of the pair "
          f"ratios, min-max), {args.threads} threads and median of {args.runs} inference runs")
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  {'ratio':>20}  target")
    for label, value, ratio, target in rows:
        print(f"{label:<{width}}  {value:>10}  {ratio:>20}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
