"""Size, CPU latency and fidelity of every format x precision, against eager fp32 (issue 6).

For each model: export with `zoo fetch --format F [--quantize int8]` (fresh cache), load each
artifact with its own runtime, run the same input with the same thread count (median of
runs), and compare the logits with the eager fp32 model: SQNR (dB) and argmax agreement.

Targets: deeplabv3_resnet50 int8 <= 42 MB with SQNR >= 25 dB; lraspp_mobilenet_v3_large pte
fp32 latency <= 0.6x eager.

    python benchmarks/formats.py [--models lraspp_mobilenet_v3_large deeplabv3_resnet50]
                                 [--weights-dir DIR] [--size 520] [--runs 5] [--threads 2]

Without --weights-dir (files named MODEL.pth) random weights are used: sizes and latency are
real, but SQNR on random weights understates what trained weights give (no learned ranges).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _timing import median_seconds

FORMATS = [("torchscript", "fp32"), ("torchscript", "int8"), ("lite", "fp32"),
           ("lite", "int8"), ("pte", "fp32"), ("pte", "int8"), ("onnx", "fp32")]


def export(name: str, fmt: str, precision: str, weights: Path, out: Path, home: Path,
           size: int) -> Path:
    cmd = [sys.executable, "-m", "zoo", "fetch", name, "--format", fmt, "--weights",
           str(weights), "-o", str(out), "--quiet", "--input-size", f"{size}x{size}"]
    if precision == "int8":
        cmd += ["--quantize", "int8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "ZOO_HOME": str(home)})
    if proc.returncode != 0:
        raise SystemExit(f"export failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def fidelity(ref, got) -> tuple[float, float]:
    noise = float(((ref - got) ** 2).sum())
    sqnr = math.inf if noise == 0 else 10 * math.log10(float((ref**2).sum()) / noise)
    agree = float((ref.argmax(1) == got.argmax(1)).float().mean())
    return sqnr, agree


def bench_model(name: str, weights: Path, tmp: Path, size: int, runs: int) -> list[tuple]:
    import torch

    import zoo
    from zoo.build import build_model
    from zoo.export._runner import load_runnable, select_output
    from zoo.weights import resolve_weights

    card = zoo.get(name)
    eager = build_model(card, resolve_weights(card, str(weights)))
    gen = torch.Generator().manual_seed(99)
    coarse = torch.rand(1, 3, size // 16, size // 16, generator=gen)
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    mean = torch.tensor(card.preprocessing.mean)[None, :, None, None]
    std = torch.tensor(card.preprocessing.std)[None, :, None, None]
    x = (x - mean) / std
    with torch.no_grad():
        ref = select_output(eager(x), card.output.key)
    base = median_seconds(eager, x, runs)
    rows = [(name, "eager", "fp32", "-", base, 1.0, math.inf, 1.0)]
    for fmt, precision in FORMATS:
        artifact = export(name, fmt, precision, weights, tmp / "out", tmp / "home", size)
        manifest = json.loads(Path(f"{artifact}.manifest.json").read_text())
        quant = manifest.get("quantization") or {}
        engine = (quant.get("details") or {}).get("engine")
        if engine:
            torch.backends.quantized.engine = engine
        run = load_runnable(fmt, str(artifact))
        with torch.no_grad():
            got = select_output(run(x), card.output.key)
        sqnr, agree = fidelity(ref, got)
        latency = median_seconds(run, x, runs)
        rows.append((name, fmt, precision, f"{artifact.stat().st_size / 1e6:.1f} MB", latency,
                     latency / base, sqnr, agree))
    return rows


def make_weights(name: str, folder: Path) -> Path:
    import torch
    from torchvision.models import segmentation

    kwargs = {} if name.startswith("lraspp") else {"aux_loss": True}
    torch.manual_seed(0)
    model = getattr(segmentation, name)(weights=None, weights_backbone=None, **kwargs)
    path = folder / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+",
                        default=["lraspp_mobilenet_v3_large", "deeplabv3_resnet50"])
    parser.add_argument("--weights-dir", type=Path, help="folder with MODEL.pth files")
    parser.add_argument("--size", type=int, default=520)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            weights = (args.weights_dir / f"{name}.pth") if args.weights_dir else \
                make_weights(name, Path(tmp))
            rows += bench_model(name, weights, Path(tmp) / name, args.size, args.runs)
    print(f"input 1x3x{args.size}x{args.size}, {args.threads} threads, median of {args.runs} "
          f"runs, weights: {'given' if args.weights_dir else 'random'}")
    header = ("model", "format", "prec", "size", "latency", "vs eager", "SQNR dB", "argmax")
    print("{:<28} {:<12} {:<5} {:>9} {:>9} {:>8} {:>8} {:>7}".format(*header))
    for name, fmt, prec, size, lat, ratio, sqnr, agree in rows:
        sq = "exact" if math.isinf(sqnr) else f"{sqnr:.1f}"
        print(f"{name:<28} {fmt:<12} {prec:<5} {size:>9} {lat * 1000:>7.0f}ms {ratio:>7.2f}x "
              f"{sq:>8} {agree:>7.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
