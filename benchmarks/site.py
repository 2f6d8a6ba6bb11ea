"""`zoo site` at catalogue scale (issue 23): build the site for a 1,000-card registry (no bench
data), then load its index in headless Chromium and filter it.

Targets: the build <= 10 s; the index loads and answers a filter in < 1 s. Each figure is the
median (and min-max) of ``--runs`` runs, with its own fresh ZOO_HOME for the builds (the
compiled registry is made in the first run, as on a user's first `zoo site`; later runs reuse
it).

    .venv/bin/python benchmarks/site.py [--cards 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def registry(path: Path, cards: int) -> Path:
    """``cards`` copies of the built-in cards, with varied families, classes and licences."""
    from tests.support.httpserver import write_registry
    from zoo.catalog.registry import Registry

    base = Registry().cards()
    made = []
    for i in range(cards):
        card = base[i % len(base)]
        made.append(card.model_copy(update={
            "name": f"{card.name}_{i:04d}", "plugin": None, "family": f"{card.family}_{i % 13}",
            "license": ("MIT", "Apache-2.0", "BSD-3-Clause")[i % 3]}))
    return write_registry(path, *made)


def build(reg: Path, out: Path, home: Path) -> float:
    env = {**os.environ, "ZOO_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "zoo", "site", "-o", str(out), "--registry",
                           str(reg), "--quiet"], env=env, capture_output=True, text=True,
                          check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return took


def browse(site: Path, runs: int) -> tuple[list[float], list[float], int]:
    """Seconds to load index.html, seconds for a search + filter to update the table."""
    from playwright.sync_api import sync_playwright

    from tests.site.browser import ARGS, CHROMIUM, open_page

    loads, filters, shown = [], [], 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for _ in range(runs):
            start = time.perf_counter()
            page, watch = open_page(browser, site, "index.html")
            loads.append(time.perf_counter() - start)
            start = time.perf_counter()
            page.fill("#q", "lraspp")
            page.select_option("#license", "MIT")
            shown = page.eval_on_selector_all("#models tbody tr:not([hidden])", "r => r.length")
            filters.append(time.perf_counter() - start)
            watch.clean()
            page.context.close()
        browser.close()
    return loads, filters, shown


def row(name: str, samples: list[float], target: float) -> str:
    med = statistics.median(samples)
    verdict = "ok" if med <= target else "OVER"
    return (f"{name:<28} {med:8.2f} s  ({min(samples):.2f}-{max(samples):.2f})  "
            f"target <= {target:g} s  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cards", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        reg = registry(base / "reg.yaml", args.cards)
        builds = [build(reg, base / "site", base / f"home{i}") for i in range(args.runs)]
        files = sum(1 for p in (base / "site").rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in (base / "site").rglob("*") if p.is_file())
        index = (base / "site" / "index.html").stat().st_size
        loads, filters, shown = browse(base / "site", args.runs)
    print(f"zoo site, {args.cards} cards + the built-in ones, no bench data: {files} files, "
          f"{size / 2**20:.1f} MiB (index.html {index / 1024:.0f} KiB)")
    print(row("build (zoo site)", builds, 10))
    print(row("index load (Chromium)", loads, 1))
    print(row("search + filter", filters, 1))
    print(f"rows shown after the filter: {shown}")


if __name__ == "__main__":
    main()
