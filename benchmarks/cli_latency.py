"""How long `zoo list` takes in a cold process, next to listing torchvision's segmentation models.

`zoo list` reads plain-data cards and never imports torch; the torchvision line is what a
catalogue built on `torchvision.models.list_models` would pay on every call. Each command runs
in a fresh process (`--runs` times, after `--warmup` untimed runs that warm the OS file
cache), output discarded; the table shows wall-clock seconds.

    python benchmarks/cli_latency.py [--runs 10] [--check]
    python benchmarks/cli_latency.py --against REV [--runs 20]

``--against REV`` compares `python -m zoo list` of this checkout with git revision REV's
``zoo/`` (the import-cost rule of a refactor: it must not grow), as interleaved pairs (REV,
this, REV, this, ...), each from its own folder on PYTHONPATH with its own ZOO_HOME and with
bytecode written and used, as an installed zoo runs: medians and the pair-by-pair ratio.

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


def against(rev: str, runs: int) -> int:
    """Interleaved `python -m zoo list`: revision ``rev`` against this checkout."""
    import io
    import tarfile
    import tempfile

    root = Path(__file__).resolve().parent.parent
    work = Path(tempfile.mkdtemp(prefix="zoo-latency-"))
    listed = subprocess.run(["git", "ls-tree", "--name-only", rev], cwd=root,
                            capture_output=True, text=True, check=True).stdout.split()
    paths = ["zoo", "zoo_plugins" if "zoo_plugins" in listed else "plugins"]
    paths += ["registry.yaml"] if "registry.yaml" in listed else []
    data = subprocess.run(["git", "archive", "--format=tar", rev, *paths], cwd=root,
                          capture_output=True, check=True).stdout
    old = work / "old"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(old, filter="data")
    if (old / "registry.yaml").exists() and not (old / "zoo" / "registry.yaml").is_file():
        (old / "zoo" / "registry.yaml").unlink(missing_ok=True)
        (old / "registry.yaml").replace(old / "zoo" / "registry.yaml")
    sides = {rev: old, "this checkout": root}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def once(label: str) -> float:
        side_env = {**env, "PYTHONPATH": str(sides[label]),
                    "ZOO_HOME": str(work / ("home-old" if label == rev else "home-new"))}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "zoo", "list"], env=side_env, cwd=work,
                       stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - start

    for label in sides:  # warm: compile bytecode, compiled registry, file cache
        once(label), once(label)
    pairs = [(once(rev), once("this checkout")) for _ in range(runs)]
    old_t, new_t = [a for a, _ in pairs], [b for _, b in pairs]
    ratios = [b / a for a, b in pairs]
    for label, times in ((rev, old_t), ("this checkout", new_t)):
        print(f"{label:>14}: median {statistics.median(times):.3f} s "
              f"(min {min(times):.3f}, max {max(times):.3f})")
    print(f"this / {rev}, pair by pair: median {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f} - max {max(ratios):.2f}), n={runs}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--against", metavar="REV",
                        help="compare `python -m zoo list` with git revision REV, interleaved")
    args = parser.parse_args()
    if args.against:
        return against(args.against, args.runs)

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
