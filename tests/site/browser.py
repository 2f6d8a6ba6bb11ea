"""Headless Chromium for the site tests: Debian's /usr/bin/chromium driven by Playwright
(``executable_path``; ``playwright install`` is never run), and a page watcher that records
console errors, page errors and every request, and refuses any request that is not a file of
the site (or a ``blob:``/``data:`` URL the page made itself).

``ZOO_REQUIRE_BROWSER=1`` (set by .ci/run) turns a missing chromium or playwright into a
failure instead of a skip."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

CHROMIUM = os.environ.get("ZOO_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-default-apps", "--disable-extensions"]
REQUIRED = os.environ.get("ZOO_REQUIRE_BROWSER", "") == "1"


def browser_problem() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} is missing: `apt-get install chromium` (as .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    return None


def need_browser() -> None:
    """Skip (or fail under ZOO_REQUIRE_BROWSER=1) when chromium or playwright is missing."""
    problem = browser_problem()
    if problem is not None:
        if REQUIRED:
            pytest.fail(f"ZOO_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)


@dataclass
class Watch:
    """What one page did: console errors, page errors, requests, and refused requests."""

    root: Path
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    def inside(self, url: str) -> bool:
        """A file of the site, or something the page made itself (blob:, data:)."""
        parsed = urlparse(url)
        if parsed.scheme in ("blob", "data"):
            return True
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            return False
        path = Path(unquote(parsed.path)).resolve()
        return path == self.root or self.root in path.parents

    def clean(self) -> None:
        assert not self.errors, self.errors
        assert not self.outside, self.outside


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module."""
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: Any, root: Path, relative: str,
              viewport: tuple[int, int] = (1280, 900)) -> tuple[Any, Watch]:
    """Open ``root/relative`` in a fresh context whose every request is checked: anything
    outside the site is aborted and recorded. Returns (page, watch) once loaded."""
    root = root.resolve()
    watch = Watch(root)
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                  service_workers="block")

    def route(r: Any) -> None:
        url = r.request.url
        if watch.inside(url):
            r.continue_()
        else:
            watch.outside.append(url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: watch.errors.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: watch.errors.append(f"page error: {e}"))
    page.on("request", lambda r: watch.requests.append(r.url))
    page.on("request", lambda r: None if watch.inside(r.url) else watch.outside.append(r.url))
    page.on("requestfailed", lambda r: watch.errors.append(f"request failed: {r.url}"))
    page.goto((root / relative).as_uri(), wait_until="load")
    return page, watch
