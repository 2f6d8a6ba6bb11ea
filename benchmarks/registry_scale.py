"""Registry scale: `zoo list`, `zoo info NAME` and `zoo.get(NAME)` with 7 to 10,000 cards.

Extra cards are copies of the deeplabv3_resnet50 card (about 3 KB of YAML each) in one file
named by ZOO_REGISTRY, as a team catalogue would be. Every command runs in a fresh process:

- cold: the compiled registry (ZOO_HOME/registry) emptied first, so every source is parsed and
  validated again (at least as much work as the first run after one source changed);
- warm: the next run, reading the compiled registry;
- base (with --baseline REV): the same command on zoo at git revision REV (its `zoo/` folder
  exported to a temporary folder and put first on PYTHONPATH), with its own ZOO_HOME warmed
  once: warm where that revision has a compiled registry, parsing every time where not.

Runs are interleaved (cold, warm, base, cold, warm, base, ...), so machine load hits all
alike; the table shows medians, min-max, peak memory (the child's max RSS) and, against the
baseline, the median and min-max of the run-by-run ratios. Two reference lines run in the same
session: the interpreter alone (and with pydantic, which `zoo.get` needs to return a card), and
torchvision's `list_models` for its segmentation models.

    python benchmarks/registry_scale.py [--sizes 7,100,1000,10000] [--runs 5]
        [--baseline 6b045ad --baseline-max 1000] [--check]

Targets (warm): `zoo list` <= 0.10 s with the built-in catalogue and <= 0.30 s at 10,000
cards; `zoo.get` <= 0.15 s at 10,000 cards; peak memory <= 120 MB at 10,000 cards; cold
`zoo list` at 1,000 cards <= 1.5 s. They were set on a faster machine than a loaded 2-core CI
box: read them next to the interpreter line. `--check` exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_CARD = "deeplabv3_resnet50"
TORCHVISION = "import torchvision.models as m; m.list_models(module=m.segmentation)"
TARGETS = {  # (size, command, mode): (seconds or None, MB or None)
    (7, "zoo list", "warm"): (0.10, None),
    (10000, "zoo list", "warm"): (0.30, 120.0),
    (10000, "zoo.get", "warm"): (0.15, 120.0),
    (10000, "zoo info", "warm"): (None, 120.0),
    (1000, "zoo list", "cold"): (1.5, None),
}


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one fresh process; exits on failure. It runs in a
    neutral folder: `python -m`/`-c` put the current folder first on sys.path."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=env["ZOO_HOME"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    return elapsed, usage.ru_maxrss / 1024  # Linux: KiB


_WRITE = """
import copy, sys, yaml
models = yaml.safe_load(open(sys.argv[1]).read())["models"]
base = next(c for c in models if c["name"] == sys.argv[2])
cards = [{**copy.deepcopy(base), "name": f"team_{i:05d}"} for i in range(int(sys.argv[4]))]
open(sys.argv[3], "w").write(yaml.safe_dump({"version": 1, "models": cards}, sort_keys=False))
"""


def write_catalogue(path: Path, extra: int) -> str:
    """``extra`` copies of the base card in ``path``; returns a name to look up. Written by a
    child process: a child's peak RSS counts what it inherited from this one at fork time,
    so this process stays small."""
    catalogue = ROOT / "zoo" / "catalog" / "registry.yaml"
    subprocess.run([sys.executable, "-c", _WRITE, str(catalogue), BASE_CARD, str(path),
                    str(extra)], check=True)
    return f"team_{extra - 1:05d}"


def export_revision(rev: str, into: Path) -> Path:
    """``zoo/`` at git revision ``rev``, extracted under ``into``; returns the folder to put
    on PYTHONPATH."""
    listed = subprocess.run(["git", "ls-tree", "--name-only", rev], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    old_layout = "registry.yaml" in listed  # before the catalogue moved into zoo/catalog/
    paths = ["zoo", "registry.yaml"] if old_layout else ["zoo"]
    data = subprocess.run(["git", "archive", "--format=tar", rev, *paths],
                          cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    link = into / "zoo" / "registry.yaml"
    if old_layout and not link.exists():  # the symlink to ../registry.yaml
        with contextlib.suppress(OSError):
            link.unlink()
        shutil.copy(into / "registry.yaml", link)
    return into


def commands(name: str) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "zoo list": [py, "-m", "zoo", "list"],
        "zoo info": [py, "-m", "zoo", "info", name],
        "zoo.get": [py, "-c", f"import zoo; zoo.get({name!r})"],
    }


def fmt_range(values: list[float], unit: str = "") -> str:
    return f"{min(values):.2f}-{max(values):.2f}{unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="7,100,1000,10000",
                        help="total card counts (7 = the built-in catalogue alone)")
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds per size")
    parser.add_argument("--baseline", metavar="REV", help="git revision to compare against")
    parser.add_argument("--baseline-max", type=int, default=1000,
                        help="largest size to run the baseline at (it parses every time)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    work = Path(tempfile.mkdtemp(prefix="zoo-registry-scale-"))
    try:
        base_path = export_revision(args.baseline, work / "base") if args.baseline else None
        env0 = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
        env0["ZOO_HOME"] = str(work / "home")
        (work / "home").mkdir()

        ref_rows = []
        for label, cmd in (("python -c pass", [sys.executable, "-c", "pass"]),
                           ("python -c 'from pydantic import BaseModel'",
                            [sys.executable, "-c", "from pydantic import BaseModel"]),
                           ("torchvision list_models(segmentation)",
                            [sys.executable, "-c", TORCHVISION])):
            samples = [run(cmd, env0) for _ in range(args.runs)]
            ref_rows.append((label, samples))

        results: dict[tuple[int, str, str], list[tuple[float, float]]] = {}
        for size in sizes:
            env = dict(env0)
            name = BASE_CARD
            if size > 7:
                catalogue = work / f"team-{size}.yaml"
                name = write_catalogue(catalogue, size - 7)
                env["ZOO_REGISTRY"] = str(catalogue)
            base_env = None
            if base_path and size <= args.baseline_max:
                # its own ZOO_HOME, warmed once: a revision with a compiled registry is
                # measured warm (entries of another format would make every run cold)
                base_env = dict(env, PYTHONPATH=str(base_path), ZOO_HOME=str(work / "home-base"))
                (work / "home-base").mkdir(exist_ok=True)
                for cmd in commands(name).values():
                    run(cmd, base_env)
            for _ in range(args.runs):
                for label, cmd in commands(name).items():
                    shutil.rmtree(work / "home" / "registry", ignore_errors=True)
                    results.setdefault((size, label, "cold"), []).append(run(cmd, env))
                    results.setdefault((size, label, "warm"), []).append(run(cmd, env))
                    if base_env:
                        results.setdefault((size, label, "base"), []).append(run(cmd, base_env))
            print(f"... {size} cards done", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; {args.runs} interleaved rounds")
    print("| reference | median s | min-max s | peak MB |")
    print("| --- | --- | --- | --- |")
    for label, samples in ref_rows:
        times = [t for t, _ in samples]
        print(f"| {label} | {statistics.median(times):.3f} | {fmt_range(times)} | "
              f"{statistics.median(m for _, m in samples):.0f} |")
    print()
    print("| cards | command | run | median s | min-max s | peak MB | speed-up vs base (base s / "
          "this s, run by run): median (min-max) | target |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    missed = []
    for (size, label, mode), samples in results.items():
        times = [t for t, _ in samples]
        peak = statistics.median(m for _, m in samples)
        median = statistics.median(times)
        versus = "-"
        base = results.get((size, label, "base"))
        if base and mode != "base":
            ratios = [b[0] / t for (t, _), b in zip(samples, base, strict=False)]
            versus = f"{statistics.median(ratios):.2f}x ({fmt_range(ratios, 'x')})"
        target = "-"
        limits = TARGETS.get((size, label, mode))
        if limits:
            seconds, megabytes = limits
            ok = (seconds is None or median <= seconds) and (megabytes is None or
                                                             peak <= megabytes)
            parts = [f"<= {seconds} s" if seconds else "", f"<= {megabytes:.0f} MB"
                     if megabytes else ""]
            target = " ".join(p for p in parts if p) + (" met" if ok else " MISSED")
            if not ok:
                missed.append((size, label, mode))
        print(f"| {size:,} | {label} | {mode} | {median:.3f} | {fmt_range(times)} | "
              f"{peak:.0f} | {versus} | {target} |")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
