"""Team store throughput vs plain s3fs, and a store-hit fetch vs a cold local export.

    python benchmarks/store.py                       # 128 MiB artifact, 5 rounds
    python benchmarks/store.py --size-mb 256 --rounds 7
    python benchmarks/store.py --fetch               # + deeplabv3_resnet50 hit vs cold export
    python benchmarks/store.py --fetch-only --format lite --fetch-rounds 3
    python benchmarks/store.py --list 10000 --list-rounds 3   # `zoo store list`, big store

moto's S3 server runs in its own process (``python -m tests.s3server``) on 127.0.0.1, so the
client and the server do not share a GIL. The artifact is a real export
(``zoo fetch single_conv --weights none --format torchscript``) whose artifact file is replaced
by random bytes of the chosen size (manifest and SHA256SUMS updated), so `zoo publish` sees a
normal export folder.

Each round runs, in alternating order (A B, then B A): plain ``s3fs`` ``put`` of the folder's
files to a fresh prefix (the baseline) and ``Store.publish`` to a fresh store (hash check of
the export, existence checks, resumable multipart upload, record); then plain ``s3fs`` ``get``
of those files and ``Store.pull`` (listing, record check, ranged download with streaming
sha256, manifest and SHA256SUMS checks, atomic install). The table shows medians, MB/s, and
the ratio zoo / s3fs of throughput with the min..max of the per-round ratios (target >= 0.9).

``--fetch`` times ``zoo fetch deeplabv3_resnet50 --weights none --format F`` as a real process:
a cold local export (fresh ZOO_HOME, ``--no-store``) against a store hit (fresh ZOO_HOME,
``--store`` holding the artifact a first run published), interleaved, and prints the ratio.

``--list N`` fills a store with N signed records (as big as real ones: a real export's objects,
uploaded in bulk as an older zoo would have published them, so records/ has no journal), runs
``zoo store index --sign`` once (timed), then times ``zoo store list --trusted-key`` as real
processes, interleaved: through the index with an empty ZOO_HOME, through the index with a
warm one, the table instead of --json (warm), and ``--full`` (records/ listed key by key, the
index's copies as the bytes; warm). ``--list-first`` adds one ``--full`` reader with an empty
ZOO_HOME (every record read one by one: slow).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _moto import CREDS, start_moto  # noqa: E402


def zoo_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    return {**env, **CREDS, "ZOO_HOME": str(home)}


def make_export(work: Path, size: int) -> Path:
    """A real single_conv export with a ``size``-byte random artifact."""
    out = work / "export"
    subprocess.run([sys.executable, "-m", "zoo", "fetch", "single_conv", "--weights", "none",
                    "--format", "torchscript", "-o", str(out), "-q"], cwd=ROOT, check=True,
                   env=zoo_env(work / "home"), capture_output=True)
    artifact = out / "single_conv.pt"
    digest = hashlib.sha256()
    block = os.urandom(16 << 20)
    with open(artifact, "wb") as fh:
        left = size
        while left:
            part = block[: min(left, len(block))]
            fh.write(part)
            digest.update(part)
            left -= len(part)
    manifest = out / "single_conv.pt.manifest.json"
    data = json.loads(manifest.read_text())
    data["artifact"].update(sha256=digest.hexdigest(), size=size)
    manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
             for p in sorted(out.iterdir()) if p.is_file() and p.name != "SHA256SUMS"]
    (out / "SHA256SUMS").write_text("".join(lines))
    return out


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ratio_line(name: str, base: list[float], mine: list[float], size: int) -> str:
    ratios = [b / m for b, m in zip(base, mine, strict=True)]  # throughput zoo / s3fs
    mb = size / 1e6
    return (f"{name:<9} s3fs {statistics.median(base):6.2f} s ({mb / statistics.median(base):6.1f}"
            f" MB/s)   zoo {statistics.median(mine):6.2f} s ({mb / statistics.median(mine):6.1f} "
            f"MB/s)   zoo/s3fs {statistics.median(ratios):.2f}x "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


def throughput(endpoint: str, size_mb: int, rounds: int, work: Path) -> None:
    import s3fs

    from zoo.store import open_store

    export = make_export(work, size_mb << 20)
    files = sorted(p for p in export.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    times: dict[str, list[float]] = {"s3fs put": [], "zoo publish": [], "s3fs get": [],
                                     "zoo pull": []}
    print(f"{len(files)} files, {total / 1e6:.1f} MB; {rounds} rounds, alternating order; "
          f"moto at {endpoint}")
    for r in range(rounds):
        prefix = f"{bucket}/plain-{r}"
        store = open_store(f"s3://{bucket}/store-{r}", options, record_cache=False)
        identity: list[str] = []

        def put(prefix: str = prefix) -> None:
            fs.put([str(p) for p in files], prefix + "/")

        def publish(store: Any = store, identity: list[str] = identity) -> None:
            identity.append(store.publish(export).identity)

        def get(prefix: str = prefix, r: int = r) -> None:
            dest = work / f"get-{r}"
            dest.mkdir()
            fs.get([f"{prefix}/{p.name}" for p in files], str(dest) + "/")

        def pull(store: Any = store, r: int = r, identity: list[str] = identity) -> None:
            assert store.pull(identity[0], work / f"pull-{r}") is not None

        ups = [("s3fs put", put), ("zoo publish", publish)]
        downs = [("s3fs get", get), ("zoo pull", pull)]
        for pairs in (ups, downs):
            for name, fn in (pairs if r % 2 == 0 else pairs[::-1]):
                times[name].append(timed(fn))
        for p in files:
            got = work / f"pull-{r}" / p.name
            assert got.read_bytes() == p.read_bytes() if p.name != "SHA256SUMS" else got.exists()
        shutil.rmtree(work / f"get-{r}")
        shutil.rmtree(work / f"pull-{r}")
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    print(ratio_line("upload", times["s3fs put"], times["zoo publish"], total))
    print(ratio_line("download", times["s3fs get"], times["zoo pull"], total))


def fetch_comparison(endpoint: str, fmt: str, rounds: int, work: Path) -> None:
    model = "deeplabv3_resnet50"
    bucket = f"fetch-{uuid.uuid4().hex[:8]}"
    import s3fs

    s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing").mkdir(bucket)
    store = [f"--store=s3://{bucket}/team", f"--store-option=endpoint_url={endpoint}"]
    base = [sys.executable, "-m", "zoo", "fetch", model, "--weights", "none", "--format", fmt]

    def run(args: list[str], home: Path) -> str:
        proc = subprocess.run([*base, *args], cwd=ROOT, env=zoo_env(home), text=True,
                              capture_output=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"zoo fetch failed: {proc.stderr.strip()[-500:]}")
        return proc.stderr

    print(f"\n{model} --format {fmt} --weights none: publishing once ...", flush=True)
    run(["-o", str(work / "seed"), *store, "--publish"], work / "seed-home")
    cold: list[float] = []
    hit: list[float] = []
    for r in range(rounds):
        def do_cold(r: int = r) -> None:
            run(["-o", str(work / f"cold-{r}"), "--no-store"], work / f"cold-home-{r}")

        def do_hit(r: int = r) -> None:
            err = run(["-o", str(work / f"hit-{r}"), *store], work / f"hit-home-{r}")
            if "pulled from the team store" not in err:
                notes = [line for line in err.splitlines() if "store" in line
                         or "warning" in line] or err.strip().splitlines()[-3:]
                raise SystemExit("expected a store hit (did the plugins' code change since "
                                 "the publish? it is part of the identity): "
                                 + " | ".join(notes))

        order = [("cold", do_cold, cold), ("hit", do_hit, hit)]
        for _name, fn, out in (order if r % 2 == 0 else order[::-1]):
            out.append(timed(fn))
        print(f"  round {r + 1}: cold export {cold[-1]:.2f} s, store hit {hit[-1]:.2f} s",
              flush=True)
        for name in (f"cold-{r}", f"hit-{r}"):
            shutil.rmtree(work / name, ignore_errors=True)
        for name in (f"cold-home-{r}", f"hit-home-{r}"):
            shutil.rmtree(work / name, ignore_errors=True)
    ratios = [h / c for c, h in zip(cold, hit, strict=True)]
    print(f"fetch     cold export {statistics.median(cold):6.2f} s   store hit "
          f"{statistics.median(hit):6.2f} s   hit/cold {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


def fill_records(url: str, options: dict[str, str], count: int, work: Path) -> Path:
    """``count`` signed records under distinct identities, uploaded in bulk; the public key."""
    import secrets

    import s3fs

    from zoo.store import open_store
    from zoo.store.keys import load_signing_key
    from zoo.store.record import make_record

    key = work / "key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)],
                   check=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(work / "key.pub")],
                   check=True)
    sign_key = load_signing_key(key)
    first = open_store(url, options, record_cache=False).publish(
        make_export(work, 1 << 10), sign_key=sign_key).record
    fs = s3fs.S3FileSystem(**options)
    batch: dict[str, bytes] = {}
    for i in range(count - 1):
        identity = secrets.token_hex(32)
        fields = {**{f: getattr(first.statement, f) for f in (
            "identity_source", "model", "format", "precision", "untrained", "artifact",
            "manifest", "manifest_sha256", "size")}, "identity": identity}
        record = make_record(fields, list(first.statement.objects), sign_key, "bench")
        batch[f"{url.removeprefix('s3://')}/records/{identity}/{record.digest}.json"] = \
            record.to_bytes()
        if len(batch) == 500 or i == count - 2:
            fs.pipe(batch)
            batch = {}
    return work / "key.pub"


def listing(endpoint: str, count: int, rounds: int, first: bool, work: Path) -> None:
    """`zoo store list` on a store of ``count`` signed records (see the module docstring)."""
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    import s3fs

    bucket = f"list-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(**options).mkdir(bucket)
    url = f"s3://{bucket}/team"
    start = time.perf_counter()
    pub = fill_records(url, options, count, work)
    print(f"{count} signed records in {url} ({time.perf_counter() - start:.1f} s to fill)",
          flush=True)
    store = ["--store", url, f"--store-option=endpoint_url={endpoint}"]
    args = [sys.executable, "-m", "zoo", "store"]

    def run(cmd: list[str], home: Path) -> float:
        began = time.perf_counter()
        proc = subprocess.run([*args, *cmd, *store], cwd=ROOT, env=zoo_env(home), text=True,
                              capture_output=True, check=False)
        took = time.perf_counter() - began
        if proc.returncode != 0:
            raise SystemExit(f"zoo store {cmd[0]} failed: {proc.stderr.strip()[-500:]}")
        if "--json" in cmd and cmd[0] == "list":
            shown = len(json.loads(proc.stdout)["records"])
            if shown != count:
                raise SystemExit(f"zoo store list showed {shown} records, not {count}")
        return took

    trusted = ["--trusted-key", str(pub)]
    if first:
        took = run(["list", "--json", "--full", *trusted], work / "home-first")
        print(f"  --full, empty ZOO_HOME (every record read one by one): {took:.2f} s")
    took = run(["index", "--sign", str(work / "key.pem")], work / "home-writer")
    print(f"  zoo store index --sign (once, by a writer): {took:.2f} s", flush=True)
    warm = work / "home-warm"
    run(["list", "--json", "--full", *trusted], warm)  # warms the record and part caches
    modes: dict[str, Callable[[int], float]] = {
        "index, empty ZOO_HOME (--json)": lambda r: run(["list", "--json", *trusted],
                                                        work / f"home-empty-{r}"),
        "index, warm ZOO_HOME (--json)": lambda r: run(["list", "--json", *trusted], warm),
        "index, warm ZOO_HOME (table)": lambda r: run(["list", *trusted], warm),
        "--full, warm ZOO_HOME (--json)": lambda r: run(["list", "--json", "--full",
                                                          *trusted], warm),
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    names = list(modes)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(modes[name](r))
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    print(f"\n`zoo store list` on {count} signed records over moto's S3 (target <= 5 s); "
          f"medians of {rounds} interleaved rounds")
    for name, values in times.items():
        print(f"{name:<32} {statistics.median(values):6.2f} s   (min {min(values):.2f}, "
              f"max {max(values):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=128, help="artifact size (default 128)")
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds (default 5)")
    parser.add_argument("--fetch", action="store_true",
                        help="also compare a store-hit fetch with a cold local export")
    parser.add_argument("--fetch-only", action="store_true", help="only the fetch comparison")
    parser.add_argument("--format", default="torchscript", help="format for --fetch")
    parser.add_argument("--fetch-rounds", type=int, default=3, help="fetch rounds (default 3)")
    parser.add_argument("--list", type=int, default=0, metavar="N",
                        help="only `zoo store list` on a store of N signed records")
    parser.add_argument("--list-rounds", type=int, default=3, help="list rounds (default 3)")
    parser.add_argument("--list-first", action="store_true",
                        help="with --list: also one --full reader with an empty ZOO_HOME")
    args = parser.parse_args()
    os.environ.update(CREDS)
    proc, endpoint = start_moto()
    work = Path(tempfile.mkdtemp(prefix="zoo-store-bench-"))
    try:
        if args.list:
            listing(endpoint, args.list, args.list_rounds, args.list_first, work)
            return
        if not args.fetch_only:
            throughput(endpoint, args.size_mb, args.rounds, work)
        if args.fetch or args.fetch_only:
            fetch_comparison(endpoint, args.format, args.fetch_rounds, work)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
