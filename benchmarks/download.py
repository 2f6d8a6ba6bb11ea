"""Downloader throughput vs plain requests, and the cost of a cache-hit resolution.

    python benchmarks/download.py                       # 512 MB, 3 rounds, zero-copy server
    python benchmarks/download.py --size-mb 128 --rounds 5
    python benchmarks/download.py --rate-mb 1250        # a server paced like 10 GbE

One local server (``tests/httpserver.py`` in its own process; zero-copy ``sendfile`` unless
``--chunked``) serves a file of random bytes. Each round runs, in alternating order:
plain ``requests`` streaming it to /dev/null with 1 MiB ``iter_content`` chunks (the
baseline), the same with 8 KiB chunks (the common idiom), ``requests`` doing zoo's work by hand
(sha256 + writing a file), and zoo's downloader (streaming sha256 on a second thread, ``.part``
file, verify, rename). The headline is the ratio of medians, zoo / baseline (target >= 0.9).
Then ``resolve_weights`` on cached weights, in-process, many times (target <= 50 ms).

    python benchmarks/download.py --faults              # the fault-bounds table (~2 min)
    python benchmarks/download.py --faults --fault-timeout 5

``--faults`` runs ``zoo fetch`` (a real process) against the fault modes of
``tests/httpserver.py`` and a real tmpfs (where this machine allows mounting one) and prints,
per fault class, the bound measured (wall time, bytes left on disk, requests) and the line
the user sees.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHUNK = 1 << 20
BASE = "requests 1 MiB -> /dev/null"
LIKE = "requests + sha256 + file"
ZOO = "zoo download (verified)"


def make_file(path: Path, size: int) -> str:
    """Random bytes (a 16 MiB random block, repeated); returns the sha256."""
    block = os.urandom(16 << 20)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            part = block[: min(left, len(block))]
            fh.write(part)
            digest.update(part)
            left -= len(part)
    return digest.hexdigest()


def start_server(path: Path, chunked: int, rate_mb: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.httpserver", str(path), "--route",
                             "/big.bin", "--chunked", str(chunked), "--rate-mb", str(rate_mb)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def plain_requests(url: str, _work: Path, _sha: str, chunk_size: int = CHUNK) -> None:
    with requests.get(url, stream=True, timeout=30) as resp, open(os.devnull, "wb") as sink:
        resp.raise_for_status()
        for chunk in resp.iter_content(chunk_size):
            sink.write(chunk)


def plain_requests_8k(url: str, work: Path, sha: str) -> None:
    plain_requests(url, work, sha, 8192)


def requests_hash_file(url: str, work: Path, sha: str) -> None:
    digest = hashlib.sha256()
    with requests.get(url, stream=True, timeout=30) as resp, open(work / "r.bin", "wb") as fh:
        resp.raise_for_status()
        for chunk in resp.iter_content(CHUNK):
            fh.write(chunk)
            digest.update(chunk)
    assert digest.hexdigest() == sha
    (work / "r.bin").unlink()


def zoo_download(url: str, work: Path, sha: str) -> None:
    from zoo.weights.download import download_file

    download_file(url, work / "z.bin", expected_sha256=sha, progress="never")
    (work / "z.bin").unlink()


def timed(fn: Callable[[str, Path, str], None], url: str, work: Path, sha: str) -> float:
    start = time.perf_counter()
    fn(url, work, sha)
    return time.perf_counter() - start


def cache_hit_times(url: str, sha: str, size: int, work: Path, n: int) -> list[float]:
    """Resolve the card's weights once (download), then ``n`` times from the cache."""
    os.environ["ZOO_HOME"] = str(work / "home")
    from zoo.catalog.registry import default_registry
    from zoo.catalog.schema import WeightsSource
    from zoo.weights.resolve import resolve_weights

    base = default_registry().get("deeplabv3_resnet50")
    source = WeightsSource(name="bench", urls=[url], sha256=sha, size=size, trained_on="bench")
    card = base.model_copy(update={"weights": [source], "default_weights": "bench"})
    first = resolve_weights(card, progress="never")
    times = []
    for _ in range(n):
        start = time.perf_counter()
        hit = resolve_weights(card, progress="never")
        times.append(time.perf_counter() - start)
        assert hit == first
    return times


def _fetch(env: dict[str, str], *args: str) -> tuple[float, int, str]:
    """Run ``zoo fetch ARGS``: (seconds, exit code, last stderr line)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "zoo", "fetch", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=600, check=False)
    took = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    return took, proc.returncode, lines[-1] if lines else "(nothing on stderr)"


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def fault_table(timeout: float) -> int:
    """Measure every fault class through the CLI and print the table."""
    from tests.httpserver import HTTPTestServer, card_with_weights, tmpfs, write_registry

    data = os.urandom(200_000)
    server = HTTPTestServer().start()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="zoo-faults-") as tmp:
        work = Path(tmp)
        cards = []
        for name, faults in {
            "stall": {"stall_after": 0}, "trickle": {"trickle": 1},
            "slowhead": {"slow_headers": 20}, "e503": {"status": 503, "retry_after": 2},
            "paced": {"rate": 20_000}, "ok": {},
        }.items():
            url = server.serve(f"/{name}.pth", data, **faults)
            cards.append(card_with_weights("single_conv", name, url, data))
        endless = server.serve("/endless.pth", data, endless=True)
        server.redirect("/loop-b", "/loop-a")
        loop = server.redirect("/loop-a", "/loop-b")
        to_file = server.redirect("/to-file", "file:///etc/passwd")
        env = {"ZOO_REGISTRY": str(write_registry(work / "registry.yaml", *cards))}

        def home(name: str) -> dict[str, str]:
            return {**env, "ZOO_HOME": str(work / name)}

        t = f"--timeout={timeout:g}"

        def row(fault: str, took: float, code: int, line: str, extra: str = "") -> None:
            rows.append((fault, f"{took:.1f} s, exit {code}{extra}", line))
            print(f"  measured: {fault}", file=sys.stderr)

        for name, fault in (("stall", "headers, then nothing"),
                            ("trickle", "body at 1 byte/s"),
                            ("slowhead", "headers at 20 bytes/s")):
            row(f"{fault} ({t})", *_fetch(home(name), name, t, "--quiet"))
        row("HTTP 503 forever, Retry-After 2", *_fetch(home("e503"), "e503", "--quiet"))
        row("healthy but slow transfer, --deadline 3",
            *_fetch(home("paced"), "paced", "--deadline=3", "--quiet"))
        took, code, line = _fetch(home("endless"), "single_conv", f"--weights={endless}",
                                  "--max-size=64MiB", "--quiet")
        row("endless body, --max-size 64MiB", took, code, line,
            f", {_disk_bytes(work / 'endless')} B left on disk")
        try:
            with tmpfs(work / "disk", "16m") as disk:
                took, code, line = _fetch({**env, "ZOO_HOME": str(disk)}, "single_conv",
                                          f"--weights={endless}", "--quiet")
                row("endless body onto a full 16 MiB tmpfs (ENOSPC)", took, code, line,
                    f", {_disk_bytes(disk)} B left on disk")
                big = server.serve("/big.pth", os.urandom(24 << 20))
                took, code, line = _fetch({**env, "ZOO_HOME": str(disk)}, "single_conv",
                                          f"--weights={big}", "--quiet")
                row("24 MiB file, 16 MiB tmpfs (free-space check)", took, code, line,
                    f", {server.stats('/big.pth').requests} request(s)")
        except BaseException as exc:  # pytest.skip: mounting refused here
            if type(exc).__name__ != "Skipped":
                raise
            rows.append(("full disk (tmpfs)", "not measured", str(exc)))
        row("redirect loop", *_fetch(home("loop"), "single_conv", f"--weights={loop}",
                                     "--quiet"),
            f", {server.stats('/loop-a').requests + server.stats('/loop-b').requests} requests")
        row("redirect to file:///etc/passwd",
            *_fetch(home("tofile"), "single_conv", f"--weights={to_file}", "--quiet"))
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys,time\nfrom zoo.weights.cache import WeightsCache\n"
             f"with WeightsCache().lock({hashlib.sha256(data).hexdigest()!r}, what='ok'):\n"
             " print('held', flush=True)\n time.sleep(600)"],
            cwd=ROOT, env={**os.environ, **home("lock")}, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        row("lock held by a stuck process, --deadline 5",
            *_fetch(home("lock"), "ok", "--deadline=5", "--quiet"))
        holder.kill()
        holder.wait()
        row("lock of a process killed with kill -9", *_fetch(home("lock"), "ok", "--quiet"))
        sidecars = list((work / "lock" / "weights" / "sha256").glob("*.json"))
        for sidecar in sidecars:
            sidecar.write_bytes(b"{damaged")
        row("damaged sidecar JSON", *_fetch(home("lock"), "ok", "--offline"))
        env_bad = {**home("lock"), "ZOO_OFFLINE": "2"}
        row("ZOO_OFFLINE=2", *_fetch(env_bad, "ok"))
    server.close()
    print(f"fault bounds, measured through `zoo fetch` (a real process; {os.cpu_count()} CPUs; "
          f"defaults unless shown)")
    print(f"{'fault':<48} | {'bound measured':<34} | what the user sees")
    for fault, bound, line in rows:
        print(f"{fault:<48} | {bound:<34} | {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=512, help="file size in MB (10^6 bytes)")
    parser.add_argument("--rounds", type=int, default=3, help="downloads per contender")
    parser.add_argument("--hits", type=int, default=200, help="cache-hit resolutions to time")
    parser.add_argument("--rate-mb", type=float, default=0, metavar="MB_PER_S",
                        help="pace the server like a network link (e.g. 1250 for 10 GbE)")
    parser.add_argument("--chunked", type=int, default=0, metavar="BYTES",
                        help="server writes from Python in BYTES chunks (like http.server's "
                        "64 KiB) instead of zero-copy sendfile")
    parser.add_argument("--faults", action="store_true",
                        help="measure the fault bounds instead (table of fault classes)")
    parser.add_argument("--fault-timeout", type=float, default=5.0, metavar="S",
                        help="--timeout for the stall/trickle rows of --faults (default 5)")
    args = parser.parse_args(argv)
    if args.faults:
        return fault_table(args.fault_timeout)
    size = args.size_mb * 1_000_000
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        work = Path(tmp)
        sha = make_file(work / "big.bin", size)
        server, url = start_server(work / "big.bin", args.chunked, args.rate_mb)
        try:
            contenders = {
                BASE: plain_requests,
                "requests 8 KiB -> /dev/null": plain_requests_8k,
                LIKE: requests_hash_file,
                ZOO: zoo_download,
            }
            plain_requests(url, work, sha)  # warm the page cache and the server
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for r in range(args.rounds):
                order = list(contenders.items())
                for name, fn in order if r % 2 == 0 else reversed(order):
                    times[name].append(timed(fn, url, work, sha))
            hits = cache_hit_times(url, sha, size, work, args.hits)
        finally:
            server.terminate()
            server.wait()
    base = statistics.median(times[BASE])
    zoo = statistics.median(times[ZOO])
    served = (f"{args.chunked}-byte writes" if args.chunked else
              "1 MiB writes" if args.rate_mb else "zero-copy sendfile")
    paced = f", paced at {args.rate_mb:g} MB/s" if args.rate_mb else ""
    print(f"file: {args.size_mb} MB from {url} (server process: {served}{paced}); "
          f"{args.rounds} rounds, median; {os.cpu_count()} CPUs")
    print(f"{'contender':<30} {'median s':>9} {'MB/s':>8} {'vs requests':>12}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<30} {med:>9.3f} {size / med / 1e6:>8.0f} {base / med:>11.2f}x")
    ratio = base / zoo
    like = statistics.median(times[LIKE]) / zoo
    hit_ms = [t * 1000 for t in hits]
    print(f"\nthroughput ratio zoo / plain requests: {ratio:.2f} (target >= 0.90) "
          f"{'OK' if ratio >= 0.9 else 'BELOW TARGET'}")
    print(f"throughput ratio zoo / requests doing the same work (sha256 + file): {like:.2f}")
    print(f"cache-hit resolve_weights, {len(hit_ms)} calls: median "
          f"{statistics.median(hit_ms):.2f} ms, max {max(hit_ms):.2f} ms (target <= 50 ms) "
          f"{'OK' if max(hit_ms) <= 50 else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
