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
    from zoo.download import download_file

    download_file(url, work / "z.bin", expected_sha256=sha, progress="never")
    (work / "z.bin").unlink()


def timed(fn: Callable[[str, Path, str], None], url: str, work: Path, sha: str) -> float:
    start = time.perf_counter()
    fn(url, work, sha)
    return time.perf_counter() - start


def cache_hit_times(url: str, sha: str, size: int, work: Path, n: int) -> list[float]:
    """Resolve the card's weights once (download), then ``n`` times from the cache."""
    os.environ["ZOO_HOME"] = str(work / "home")
    from zoo.registry import default_registry
    from zoo.schema import WeightsSource
    from zoo.weights import resolve_weights

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
    args = parser.parse_args(argv)
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
