"""How long `zoo list` takes in a cold process, next to listing torchvision's segmentation models.

`zoo list` reads plain-data cards and never imports torch; the torchvision line is what a
catalogue built on `torchvision.models.list_models` would pay on every call. Each command runs
in a fresh process (`--runs` times, after `--warmup` untimed runs that warm the OS file
cache), output discarded; the table shows wall-clock seconds.

    python benchmarks/cli_latency.py [--runs 10] [--check]

Targets: `zoo list` median <= 0.35 s, and at least 10x faster than the torchvision line.
`--check` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_MEDIAN_S = 0.35
TARGET_SPEEDUP = 10.0
TORCHVISION_CODE = "import torchvision.models as m; m.list_models(module=m.segmentation)"


def zoo_command() -> list[str]:
    """The installed `zoo` script beside this interpreter, else `python -m zoo`."""
    script = Path(sys.executable).with_name("zoo.exe" if os.name == "nt" else "zoo")
    return [str(script), "list"] if script.exists() else [sys.executable, "-m", "zoo", "list"]


def wall_times(cmd: list[str], runs: int, warmup: int) -> list[float]:
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr.decode()}")
        if i >= warmup:
            times.append(elapsed)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()

    commands = {
        "zoo list": zoo_command(),
        "python -m zoo list": [sys.executable, "-m", "zoo", "list"],
        "torchvision list_models(segmentation)": [sys.executable, "-c", TORCHVISION_CODE],
    }
    rows = {label: wall_times(cmd, args.runs, args.warmup) for label, cmd in commands.items()}

    width = max(map(len, rows))
    header = ("runs", 4), ("median s", 8), ("min s", 6), ("max s", 6), ("vs zoo list", 11)
    print(f"{'command':<{width}}" + "".join(f"  {h:>{w}}" for h, w in header))
    zoo_median = statistics.median(rows["zoo list"])
    for label, times in rows.items():
        median = statistics.median(times)
        ratio = f"{median / zoo_median:.1f}x"
        print(
            f"{label:<{width}}  {len(times):>4}  {median:>8.3f}  {min(times):>6.3f}  "
            f"{max(times):>6.3f}  {ratio:>11}"
        )

    speedup = statistics.median(rows["torchvision list_models(segmentation)"]) / zoo_median
    fast = zoo_median <= TARGET_MEDIAN_S
    faster = speedup >= TARGET_SPEEDUP
    print()
    print(
        f"zoo list median {zoo_median:.3f} s (target <= {TARGET_MEDIAN_S} s): "
        f"{'met' if fast else 'MISSED'}"
    )
    print(
        f"torchvision / zoo list = {speedup:.1f}x (target >= {TARGET_SPEEDUP:g}x): "
        f"{'met' if faster else 'MISSED'}"
    )
    zoo_cmd = " ".join(commands["zoo list"])
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, zoo: {zoo_cmd}")
    return 1 if args.check and not (fast and faster) else 0


if __name__ == "__main__":
    sys.exit(main())
