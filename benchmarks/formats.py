"""Size, CPU latency and fidelity of every format x precision, against eager fp32.

A thin caller of ``zoo bench`` (:mod:`zoo.bench`: export, interleaved pairs against eager
fp32, SQNR and argmax agreement on the natural-image golden scene) for several models at once,
with *generated* weights (the tests' seeded init, class layers scaled to a trained model's
logit range) and, by default, a fresh export cache so export times are real. Each model's
record is written as ``OUT/NAME.bench.json`` and shown as ``zoo bench``'s table.

Targets (issue 23): lraspp_mobilenet_v3_large at 520x520, 2 threads: every fp32 runtime
<= 0.5x eager, every int8 runtime <= 0.35x.

    python benchmarks/formats.py [--models lraspp_mobilenet_v3_large deeplabv3_resnet50]
        [--formats pte:fp32 onnx:int8 ...] [--size 520] [--runs 7] [--threads 2]
        [-o bench-results] [--keep-cache]

Sizes and latency are real; SQNR on trained weights may differ.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+",
                        default=["lraspp_mobilenet_v3_large", "deeplabv3_resnet50"])
    parser.add_argument("--formats", nargs="+", metavar="FORMAT[:PRECISION]",
                        help="default: every format x precision")
    parser.add_argument("--size", type=int, default=520)
    parser.add_argument("--runs", type=int, default=7, help="interleaved pairs per format")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path, default=Path("bench-results"),
                        help="folder for the records and artifacts (default: bench-results)")
    parser.add_argument("--keep-cache", action="store_true",
                        help="use ZOO_HOME's export cache (default: a fresh one, so export "
                        "times are real)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.keep_cache:
            os.environ["ZOO_HOME"] = str(Path(tmp) / "home")
        from tests.support.export_helpers import make_weights  # seeded, trained-scale
        from zoo.bench import BenchOptions, run_bench, write_record
        from zoo.bench.runner import parse_targets
        from zoo.catalog.registry import default_registry
        from zoo.cli.bench import print_table
        from zoo.errors import ZooError
        from zoo.weights.resolve import resolve_weights

        registry = default_registry()
        for name in args.models:
            try:
                card = registry.get(name)
                targets = parse_targets(args.formats, card, registry)
                weights = resolve_weights(card, str(make_weights(name, Path(tmp))))
                options = BenchOptions(size=(args.size, args.size), runs=args.runs,
                                       threads=args.threads, weights_label="generated",
                                       progress=_progress)
                record = run_bench(card, weights, targets, options, args.output,
                                   registry=registry)
            except ZooError as exc:
                print(f"formats.py: {name}: {exc}", file=sys.stderr)
                return exc.exit_code
            path = write_record(record, args.output)
            print_table(record)
            if (name, args.size, args.threads) == ("lraspp_mobilenet_v3_large", 520, 2):
                print(_against_targets(record))
            print(f"record: {path}\n")
    return 0


#: issue 23's targets: artifact / eager latency per precision (lraspp at 520x520, 2 threads)
TARGETS = {"fp32": 0.5, "int8": 0.35}


def _against_targets(record: dict) -> str:
    """One line per measured row: its median ratio against issue 23's target."""
    lines = ["against issue 23's targets, lraspp at 520x520 on 2 threads (median ratio):"]
    for row in record["rows"]:
        target = TARGETS.get(row["precision"])
        if row["status"] != "ok" or target is None or row.get("ratio") is None:
            continue
        ratio = row["ratio"]["median"]
        verdict = "met" if ratio <= target else "missed"
        lines.append(f"  {row['format']:8s} {row['precision']:5s} {ratio:.2f}x "
                     f"(target <= {target}x): {verdict}")
    return "\n".join(lines)


def _progress(done: int, total: int, label: str, stage: str) -> None:
    print(f"  [{done}/{total}] {label} {stage}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
