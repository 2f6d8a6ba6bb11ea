"""Sets at team scale (issue 22): `zoo sync` in its execution modes (`zoo store list` on
10,000 records: benchmarks/store.py --list 10000). Every figure comes from real
`python -m zoo` processes, interleaved (A B, then B A), as medians with the min..max of the
per-round ratios.

    python benchmarks/sync.py noop                        # no-op `zoo sync --locked` (<= 1 s)
    python benchmarks/sync.py dry-run --entries 1000      # `--dry-run` of a big plan (<= 2 s)
    python benchmarks/sync.py modes --rounds 2            # sequential vs --jobs 2 vs --ray
    python benchmarks/sync.py second-machine              # empty cache + the team store
    python benchmarks/sync.py second-machine --models lraspp_mobilenet_v3_large --formats lite
        [--file-store]                                    # a single store hit (<= 0.1x)

``modes`` syncs the 12-artifact plan (lraspp, deeplabv3_mobilenet_v3_large, single_conv x
torchscript, lite, pte, onnx; untrained weights, so no download is timed) from an empty
ZOO_HOME each time; ``--models single_conv`` (or a smaller ``--formats``) makes it quick.
``--ray`` needs zoo[ray]: the script starts a local head node (127.0.0.1, 2 CPUs, no
dashboard) and stops it. Each round's exports go to a fresh cache, so nothing is a cache hit
(on the Ray side the workers' ZOO_HOME is made fresh per round too).

moto's S3 server runs in its own process (``python -m tests.support.s3server``), so client
and server do not share a GIL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _moto import CREDS, start_moto  # noqa: E402

MODELS = ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "single_conv"]
FORMATS = ["torchscript", "lite", "pte", "onnx"]


# -- helpers ---------------------------------------------------------------------------------

def zoo(args: list[str], home: Path, env: dict[str, str] | None = None,
        check: bool = True) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``python -m zoo ARGS``; (seconds, the process)."""
    full = {**os.environ, **CREDS, "ZOO_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0",
            **(env or {})}
    full.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed zoo loads .pyc files
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "zoo", *args], env=full, text=True,
                          capture_output=True, check=False)
    took = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit(f"zoo {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return took, proc


def interleaved(named: dict[str, Callable[[int], float]], rounds: int
                ) -> dict[str, list[float]]:
    """Each round runs every function once, the order rotating between rounds."""
    names = list(named)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(named[name](r))
            print(f"  round {r + 1} {name}: {times[name][-1]:.2f} s", file=sys.stderr)
    return times


def table(times: dict[str, list[float]], base: str | None = None) -> None:
    print(f"{'what':<34} {'median':>9} {'min..max':>17}" + ("   ratio (min..max)" if base
                                                            else ""))
    for name, values in times.items():
        line = f"{name:<34} {statistics.median(values):8.2f}s " \
               f"{min(values):7.2f}..{max(values):7.2f}"
        if base and name != base:
            ratios = [m / b for m, b in zip(values, times[base], strict=True)]
            line += f"   {statistics.median(ratios):.2f}x ({min(ratios):.2f}..{max(ratios):.2f})"
        print(line)


def s3_options(endpoint: str) -> dict[str, str]:
    return {"endpoint_url": endpoint, "key": CREDS["AWS_ACCESS_KEY_ID"],
            "secret": CREDS["AWS_SECRET_ACCESS_KEY"]}


def store_args(url: str, endpoint: str) -> list[str]:
    return ["--store", url, *(f"--store-option={k}={v}" for k, v in
                              s3_options(endpoint).items())]


def plan_text(models: list[str], formats: list[str], size: str | None) -> str:
    sizes = f'input_sizes = ["{size}"]\n' if size else ""
    return ('[output]\nfolder = "models"\nlayout = "{model}/{format}"\n\n[[artifacts]]\n'
            f"models = {models!r}\nformats = {formats!r}\n{sizes}weights = \"none\"\n"
            ).replace("'", '"')


# -- execution modes ------------------------------------------------------------------------

class RayHead:
    """A local Ray head node (127.0.0.1, 2 CPUs, no dashboard) in its own session, with its
    workers' ZOO_HOME; stopped by :meth:`stop` (its whole session, by pid)."""

    def __init__(self, work: Path) -> None:
        ports = []
        for _ in range(5):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                ports.append(sock.getsockname()[1])
        self.home = work / "ray-home"
        self.log = work / "ray.log"
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "ZOO_HOME": str(self.home)}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
                 "--node-ip-address", "127.0.0.1", "--port", str(ports[0]), "--num-cpus", "2",
                 "--include-dashboard=false", "--dashboard-agent-listen-port", str(ports[1]),
                 "--dashboard-agent-grpc-port", str(ports[2]), "--runtime-env-agent-port",
                 str(ports[3]), "--metrics-export-port", str(ports[4]),
                 "--disable-usage-stats", "--temp-dir", str(work / "ray")],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.address = f"127.0.0.1:{ports[0]}"
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"ray start failed:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(20)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) == self.proc.pid:
                        os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    continue
        self.proc.wait(10)


def new_app(work: Path, name: str, plan: str) -> Path:
    folder = work / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "zoo.toml").write_text(plan)
    return folder


def bench_modes(args: argparse.Namespace) -> None:
    plan = plan_text(args.models, args.formats, args.size)
    count = len(args.models) * len(args.formats)
    with tempfile.TemporaryDirectory(prefix="zoo-bench-sync-") as tmp:
        work = Path(tmp)
        locks: dict[str, str] = {}

        def mode(name: str, extra: Callable[[int], list[str]]) -> Callable[[int], float]:
            def run(r: int) -> float:
                folder = new_app(work, f"{name}-{r}", plan)
                took, _ = zoo(["sync", "--plan", str(folder / "zoo.toml"), *extra(r)],
                              work / f"home-{name}-{r}")
                lock = (folder / "zoo.lock").read_text()
                if locks.setdefault("lock", lock) != lock:
                    raise SystemExit(f"{name} wrote another lock than the first run")
                return took
            return run

        heads: dict[int, RayHead] = {}

        def ray_args(r: int) -> list[str]:
            for old in list(heads):  # a fresh cluster (and workers' cache) each round
                heads.pop(old).stop()
            heads[r] = RayHead(work / f"ray-{r}")
            return ["--ray", heads[r].address]

        named = {"sequential": mode("sequential", lambda r: []),
                 "--jobs 2": mode("jobs2", lambda r: ["--jobs", "2"])}
        if args.ray:
            named["--ray (local head, 2 CPUs)"] = mode("ray", ray_args)
        try:
            times = interleaved(named, args.rounds)
        finally:
            for head in heads.values():
                head.stop()
        print(f"\n`zoo sync` of {count} artifacts ({', '.join(args.models)} x "
              f"{', '.join(args.formats)}; input {args.size or 'each card'}), empty caches, "
              "same lock in every mode (target <= 0.75x sequential)")
        table(times, base="sequential")

        folder = work / "sequential-0"
        noop = [zoo(["sync", "--locked", "--plan", str(folder / "zoo.toml")],
                    work / "home-sequential-0")[0] for _ in range(args.noop_runs)]
        print(f"\nno-op `zoo sync --locked` of those {count} artifacts (target <= 1 s)")
        table({"zoo sync --locked (no-op)": noop})


def bench_dry_run(args: argparse.Namespace) -> None:
    widths = [str(8 + i) for i in range(args.entries // 4)]
    plan = ('[output]\nfolder = "models"\nlayout = "{format}/{size}"\n\n[[artifacts]]\n'
            'models = ["single_conv"]\nformats = ["torchscript", "lite", "pte", "onnx"]\n'
            f"input_sizes = {[f'32x{w}' for w in widths]!r}\nweights = \"none\"\n"
            ).replace("'", '"')
    with tempfile.TemporaryDirectory(prefix="zoo-bench-dry-") as tmp:
        folder = new_app(Path(tmp), "app", plan)
        runs = []
        for _ in range(args.rounds):
            took, proc = zoo(["sync", "--dry-run", "--json", "--plan",
                              str(folder / "zoo.toml")], Path(tmp) / "home")
            runs.append(took)
        shown = len(proc.stdout.splitlines())
        print(f"\n`zoo sync --dry-run --json` of a {shown}-entry plan (target <= 2 s)")
        table({"dry run": runs})


def bench_second_machine(args: argparse.Namespace) -> None:
    plan = plan_text(args.models, args.formats, args.size)
    count = len(args.models) * len(args.formats)
    moto, endpoint = start_moto() if not args.file_store else (None, "")
    try:
        with tempfile.TemporaryDirectory(prefix="zoo-bench-second-") as tmp:
            work = Path(tmp)

            def store(r: int) -> list[str]:
                if args.file_store:
                    return ["--store", (work / f"store-{r}").as_uri()]
                return store_args(f"s3://{buckets[r]}/team", endpoint)

            def cold(r: int) -> float:
                if args.file_store:
                    (work / f"store-{r}").mkdir()
                    buckets[r] = ""
                else:
                    import s3fs

                    buckets[r] = f"second-{r}-{secrets.token_hex(3)}"
                    s3fs.S3FileSystem(**s3_options(endpoint)).mkdir(buckets[r])
                folder = new_app(work, f"ci-{r}", plan)
                took, _ = zoo(["sync", "--publish", "--plan", str(folder / "zoo.toml"),
                               *store(r)], work / f"ci-home-{r}")
                return took

            def second(r: int) -> float:
                folder = new_app(work, f"dev-{r}", plan)
                shutil.copy(work / f"ci-{r}" / "zoo.lock", folder / "zoo.lock")
                took, proc = zoo(["sync", "--locked", "--json", "--plan",
                                  str(folder / "zoo.toml"), *store(r)],
                                 work / f"dev-home-{r}")
                if '"export"' in proc.stdout:
                    raise SystemExit("the second machine exported something")
                return took

            buckets: dict[int, str] = {}
            times: dict[str, list[float]] = {"cold sync + publish (CI)": [],
                                             "empty cache + store (--locked)": []}
            for r in range(args.rounds):  # the second run needs the first's store: in order
                times["cold sync + publish (CI)"].append(cold(r))
                times["empty cache + store (--locked)"].append(second(r))
                print(f"  round {r + 1}: cold {times['cold sync + publish (CI)'][-1]:.2f} s, "
                      f"second machine {times['empty cache + store (--locked)'][-1]:.2f} s",
                      file=sys.stderr)
            print(f"\n{count} artifacts: a second machine with an empty cache and the team "
                  "store vs the cold sync (target <= 0.2x)")
            table(times, base="cold sync + publish (CI)")
    finally:
        if moto is not None:
            moto.terminate()  # moto ignored SIGINT: wait(10) timed out and left it running
            moto.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name, fn in (("modes", bench_modes), ("second-machine", bench_second_machine)):
        p = sub.add_parser(name)
        p.add_argument("--models", nargs="+", default=MODELS)
        p.add_argument("--formats", nargs="+", default=FORMATS)
        p.add_argument("--size", default=None, help="HxW for every artifact (default: each "
                       "card's); e.g. 128x128 keeps a run short")
        p.add_argument("--rounds", type=int, default=2)
        p.set_defaults(fn=fn)
        if name == "second-machine":
            p.add_argument("--file-store", action="store_true",
                           help="a file:// store instead of moto's S3 server")
        if name == "modes":
            p.add_argument("--no-ray", dest="ray", action="store_false")
            p.add_argument("--noop-runs", type=int, default=5)
    p = sub.add_parser("dry-run")
    p.add_argument("--entries", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.set_defaults(fn=bench_dry_run)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
