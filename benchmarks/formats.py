"""Size, CPU latency and fidelity of every format x precision, against eager fp32.

For each model: export with ``zoo fetch --format F --precision P`` (fresh cache), load each
artifact through its format's runtime module (what ``zoo run --artifact`` uses) with the same
thread count as eager, and time it *interleaved* with the eager model: eager, artifact,
eager, artifact, ... The table gives both medians and the median (min-max) of the pair-by-pair
ratios: single runs on a shared two-core machine swing by +-40 %, pairs taken back to back
share the machine's state. Fidelity is SQNR (dB) and argmax agreement of the logits against
eager fp32 on the natural-image golden input (the procedural scene of zoo.export.golden);
int8 rows also show the SQNR the manifest recorded on the calibration set. Formats without a
runtime here (Core ML on Linux) get their size only.

Targets: lraspp_mobilenet_v3_large pte fp32 <= 0.6x eager; deeplabv3_resnet50 onnx int8
<= 45 MB at SQNR >= 25 dB; deeplabv3_resnet50 coreml fp16 <= 85 MB; lraspp tflite fp32 within
1e-4 of eager (max |delta| column).

    python benchmarks/formats.py [--models lraspp_mobilenet_v3_large deeplabv3_resnet50]
        [--formats pte:fp32 onnx:int8 ...] [--size 520] [--runs 7] [--threads 2]

Weights are generated (seeded init, class layers scaled to a trained model's logit range, as
the tests do): sizes and latency are real; SQNR on trained weights may differ.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.export_helpers

FORMATS = [("torchscript", "fp32"), ("torchscript", "int8"), ("lite", "fp32"),
           ("lite", "int8"), ("pte", "fp32"), ("pte", "int8"), ("onnx", "fp32"),
           ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8"), ("coreml", "fp16"),
           ("coreml", "fp32"), ("coreml", "int8")]


def export(name: str, fmt: str, precision: str, weights: Path, out: Path, home: Path,
           size: int) -> tuple[Path, float]:
    """``zoo fetch`` in a subprocess; the artifact path and the wall time it took."""
    cmd = [sys.executable, "-m", "zoo", "fetch", name, "--format", fmt, "--precision",
           precision, "--weights", str(weights), "-o", str(out), "--quiet", "--input-size",
           f"{size}x{size}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "ZOO_HOME": str(home)})
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"export failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1]), took


def artifact_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fidelity(ref: Any, got: Any) -> tuple[float, float, float]:
    """(SQNR dB, argmax agreement, max |delta|)."""
    noise = float(((ref - got) ** 2).sum())
    sqnr = math.inf if noise == 0 else 10 * math.log10(float((ref**2).sum()) / noise)
    agree = float((ref.argmax(1) == got.argmax(1)).float().mean())
    return sqnr, agree, float((ref - got).abs().max())


def interleaved(eager: Any, candidate: Any, x: Any, runs: int) -> tuple[float, float, list]:
    """Median seconds of eager and candidate, timed A B A B ..., and the pair ratios."""
    import torch

    times: dict[str, list[float]] = {"eager": [], "candidate": []}
    with torch.no_grad():
        eager(x), candidate(x)  # warm-up
        for _ in range(runs):
            for key, fn in (("eager", eager), ("candidate", candidate)):
                start = time.perf_counter()
                fn(x)
                times[key].append(time.perf_counter() - start)
    ratios = [c / e for c, e in zip(times["candidate"], times["eager"], strict=True)]
    return statistics.median(times["eager"]), statistics.median(times["candidate"]), ratios


def bench_model(name: str, formats: list[tuple[str, str]], tmp: Path, size: int,
                runs: int, threads: int) -> list[dict[str, Any]]:
    import torch

    import zoo
    from zoo.export import get_exporter
    from zoo.export.build import build_model
    from zoo.export.golden import golden_input, select_output
    from zoo.export.runtime import load_in_process
    from zoo.weights.resolve import resolve_weights

    card = zoo.get(name)
    from tests.export_helpers import make_weights  # the tests' seeded, trained-scale weights

    weights = make_weights(name, tmp)
    model = build_model(card, resolve_weights(card, str(weights)))
    pre = card.preprocessing
    spec = {"kind": "scene", "seed": 1, "shape": [1, 3, size, size], "scale": pre.scale_divisor,
            "mean": list(pre.mean), "std": list(pre.std)}
    x = golden_input(spec)

    def eager(inp: Any) -> Any:
        return select_output(model(inp), card.output.key)

    with torch.no_grad():
        ref = eager(x)
    rows = []
    for fmt, precision in formats:
        exporter = get_exporter(fmt)
        if exporter.missing_extra():
            rows.append({"model": name, "format": fmt, "precision": precision,
                         "note": f"skipped: {exporter.missing_extra()}"})
            continue
        artifact, took = export(name, fmt, precision, weights, tmp / "out", tmp / "home", size)
        manifest = json.loads(Path(f"{artifact}.manifest.json").read_text())
        row: dict[str, Any] = {"model": name, "format": fmt, "precision": precision,
                               "size": artifact_size(artifact), "export_s": took}
        quant = manifest.get("quantization") or {}
        row["calib_sqnr"] = quant.get("sqnr_db")
        reason = exporter.runtime_unavailable()
        if reason is not None:
            row["note"] = f"size only: {reason}"
            rows.append(row)
            continue
        fn = load_in_process(exporter.runtime, artifact,
                             {**manifest["export"]["options"], "threads": threads})
        torch.set_num_threads(threads)

        def run(inp: Any, fn: Any = fn) -> Any:
            return select_output(fn(inp), card.output.key)

        with torch.no_grad():
            got = run(x).float()
        row["sqnr"], row["agree"], row["max_abs"] = fidelity(ref, got)
        base, lat, ratios = interleaved(eager, run, x, runs)
        row.update(eager_s=base, latency_s=lat, ratio=statistics.median(ratios),
                   ratio_min=min(ratios), ratio_max=max(ratios))
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("model", "format", "prec", "size", "export", "eager", "latency",
              "ratio (min-max)", "SQNR dB", "calib dB", "argmax", "max |d|")
    fmt = "{:<28} {:<11} {:<5} {:>9} {:>7} {:>8} {:>8} {:>18} {:>8} {:>8} {:>7} {:>9}"
    print(fmt.format(*header))
    for r in rows:
        if "size" not in r:
            print(f"{r['model']:<28} {r['format']:<11} {r['precision']:<5} {r['note']}")
            continue
        size = f"{r['size'] / 1e6:.1f} MB"
        calib = "-" if r.get("calib_sqnr") is None else f"{r['calib_sqnr']:.1f}"
        if "latency_s" not in r:
            print(fmt.format(r["model"], r["format"], r["precision"], size,
                             f"{r['export_s']:.0f}s", "-", "-", "-", "-", calib, "-", "-")
                  + f"  ({r['note']})")
            continue
        sqnr = "exact" if math.isinf(r["sqnr"]) else f"{r['sqnr']:.1f}"
        ratio = f"{r['ratio']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})"
        print(fmt.format(r["model"], r["format"], r["precision"], size, f"{r['export_s']:.0f}s",
                         f"{r['eager_s'] * 1000:.0f}ms", f"{r['latency_s'] * 1000:.0f}ms",
                         ratio, sqnr, calib, f"{r['agree']:.1%}", f"{r['max_abs']:.1e}"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+",
                        default=["lraspp_mobilenet_v3_large", "deeplabv3_resnet50"])
    parser.add_argument("--formats", nargs="+", metavar="FORMAT:PRECISION",
                        help="subset of " + " ".join(f"{f}:{p}" for f, p in FORMATS))
    parser.add_argument("--size", type=int, default=520)
    parser.add_argument("--runs", type=int, default=7, help="interleaved pairs per format")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    formats = FORMATS
    if args.formats:
        formats = [tuple(item.split(":", 1)) for item in args.formats]  # type: ignore[misc]
        unknown = [f"{f}:{p}" for f, p in formats if (f, p) not in FORMATS]
        if unknown:
            parser.error(f"unknown format:precision {', '.join(unknown)}")

    import torch

    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            folder = Path(tmp) / name
            folder.mkdir()
            rows += bench_model(name, formats, folder, args.size, args.runs, args.threads)
    print(f"input 1x3x{args.size}x{args.size} (natural-image golden scene), {args.threads} "
          f"threads for eager and every runtime, {args.runs} interleaved pairs; ratio = "
          f"artifact / eager latency, median (min-max) of the pairs")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
