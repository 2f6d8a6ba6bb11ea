"""``zoo site``: the static catalogue site, built through the CLI and opened in headless
Chromium (tests/site/browser.py): every page loads with no console error and no request
leaving the folder, search and filters work, card text is text, rebuilds are byte-identical,
a 10,000-class palette is paged, bench records are plotted per machine, and the team store
section lists what the store holds (or says why it cannot)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUILTIN_MODELS, run_zoo
from tests.site.browser import open_page
from tests.support.httpserver import write_registry

SCRIPT = "<script>alert(1)</script>"
SHOTS = Path("/tmp/site-shots")
BIG = 10_000


def _cards() -> list[Any]:
    """A card whose text is markup, and one with 10,000 classes."""
    from zoo.catalog.registry import Registry

    base = Registry().get("single_conv")
    hostile = base.model_copy(update={
        "name": "hostile_card", "plugin": None, "family": "x\"><img src=x onerror=alert(2)>",
        "description": f"{SCRIPT} & <b>bold</b> \"quoted\" 'single'",
        "license": "MIT<i>", "labels": [f"{SCRIPT}{i}" if i == 3 else label
                                         for i, label in enumerate(base.labels)]})
    labels = [f"class_{i}" for i in range(BIG)]
    palette = [((i * 37) % 256, (i * 91) % 256, (i * 173) % 256) for i in range(BIG)]
    output = base.output.model_copy(update={"channels": BIG})
    big = base.model_copy(update={
        "name": "big_palette", "plugin": None, "num_classes": BIG, "labels": labels,
        "palette": palette, "output": output, "description": "Ten thousand classes."})
    return [hostile, big]


@pytest.fixture(scope="module")
def registry_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_registry(tmp_path_factory.mktemp("reg") / "extra.yaml", *_cards())


def build(out: Path, registry: Path, *extra: str, home: Path | None = None
          ) -> Any:
    env = {"ZOO_HOME": str(home)} if home else None
    proc = run_zoo(["site", "-o", str(out), "--registry", str(registry), *extra], env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, registry_file: Path) -> Path:
    base = tmp_path_factory.mktemp("site")
    build(base / "site", registry_file, home=base / "home")
    return base / "site"


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def shot(page: Any, name: str, tmp_path: Path) -> Path:
    """A full-page screenshot kept under the test's tmp folder and in /tmp/site-shots/."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SHOTS / name)
    return path


def test_every_page_loads_with_no_error_and_no_request_leaving_the_folder(
        browser: Any, site: Path, tmp_path: Path) -> None:
    models = sorted((site / "models").glob("*.html"))
    names = {p.stem for p in models if ".labels-" not in p.name}
    assert names == {*BUILTIN_MODELS, "hostile_card", "big_palette"}
    pages = ["index.html", *[f"models/{n}.html" for n in sorted(names)],
             "models/big_palette.labels-2.html", "models/big_palette.labels-40.html"]
    for relative in pages:
        page, watch = open_page(browser, site, relative)
        watch.clean()
        assert watch.requests and all(watch.inside(u) for u in watch.requests)
        assert page.title()
        if relative == "index.html":
            shot(page, "index.png", tmp_path)
        if relative == "models/lraspp_mobilenet_v3_large.html":
            shot(page, "model-lraspp.png", tmp_path)
        page.context.close()


def _visible(page: Any) -> list[str]:
    return page.eval_on_selector_all("#models tbody tr:not([hidden])",
                                      "rows => rows.map(r => r.dataset.name)")


def test_search_and_filters(browser: Any, site: Path) -> None:
    import zoo
    from zoo.export.support import exports_to

    all_models = sorted([*BUILTIN_MODELS, "hostile_card", "big_palette"])
    page, watch = open_page(browser, site, "index.html")
    assert _visible(page) == all_models
    assert page.text_content("#count") == f"{len(all_models)} of {len(all_models)} models"

    page.fill("#q", "lraspp")
    assert _visible(page) == ["lraspp_mobilenet_v3_large"]
    assert page.text_content("#count") == f"1 of {len(all_models)} models"
    page.fill("#q", "deeplabv3")  # a family
    assert _visible(page) == [n for n in BUILTIN_MODELS if n.startswith("deeplabv3")]
    page.fill("#q", "tvmonitor")  # a label: the 21-class VOC models
    assert _visible(page) == [n for n in BUILTIN_MODELS if n != "single_conv"]
    page.fill("#q", "class_9999")  # the big card's last label
    assert _visible(page) == ["big_palette"]
    page.fill("#q", "no such thing")
    assert _visible(page) == [] and page.is_visible("#none")
    page.fill("#q", "")

    page.fill("#classes-min", "22")
    assert _visible(page) == ["big_palette", "hostile_card", "single_conv"]
    page.fill("#classes-max", "100")
    assert _visible(page) == ["hostile_card", "single_conv"]
    page.fill("#classes-min", "")
    page.fill("#classes-max", "")
    page.fill("#params-max", "12")  # millions
    small = [n for n in all_models if n in ("deeplabv3_mobilenet_v3_large", "hostile_card",
                                             "big_palette", "single_conv",
                                             "lraspp_mobilenet_v3_large")]
    assert _visible(page) == small
    page.fill("#params-max", "")
    page.fill("#weights-max", "50")  # MiB; cards without weights have no size: left out
    assert _visible(page) == ["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]
    page.fill("#weights-max", "")
    page.select_option("#license", "MIT<i>")
    assert _visible(page) == ["hostile_card"]
    page.select_option("#license", "")
    formats = page.eval_on_selector_all("#format option", "o => o.map(x => x.value)")
    assert "onnx" in formats
    page.select_option("#format", "onnx")
    extra = {c.name: c for c in _cards()}
    expected = [n for n in all_models if exports_to(extra.get(n) or zoo.get(n), "onnx")]
    assert "lraspp_mobilenet_v3_large" in expected and _visible(page) == expected
    watch.clean()


def test_card_text_is_shown_as_text_never_run(browser: Any, site: Path) -> None:
    page, watch = open_page(browser, site, "models/hostile_card.html")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.reload(wait_until="load")
    description = page.text_content(".description")
    assert description is not None and SCRIPT in description and "<b>bold</b>" in description
    assert page.eval_on_selector_all("main script, main img[src=x], main b", "e => e.length") == 0
    assert SCRIPT + "3" in (page.text_content("table.labels") or "")
    html = (site / "models" / "hostile_card.html").read_text()
    assert SCRIPT not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    index = (site / "index.html").read_text()
    assert "onerror=alert" not in index.replace("onerror=alert(2)&gt;", "")
    assert '"><img' not in index
    assert dialogs == []
    watch.clean()


def test_a_10000_class_palette_is_paged_and_every_swatch_is_readable(site: Path) -> None:
    page1 = site / "models" / "big_palette.html"
    pages = sorted((site / "models").glob("big_palette.labels-*.html"))
    assert len(pages) == BIG // 256  # 40 pages of 256 (page 1 is the model page)
    assert page1.stat().st_size < 150_000
    assert all(p.stat().st_size < 150_000 for p in pages)
    html = page1.read_text()
    assert html.count('class="swatch"') == 256 and "class_255" in html and "class_256" not in html
    last = (site / "models" / "big_palette.labels-40.html").read_text()
    assert "class_9999" in last and last.count('class="swatch"') == BIG - 39 * 256
    ratios = [float(r) for p in [page1, *pages]
              for r in re.findall(r'data-contrast="([\d.]+)"', p.read_text())]
    assert len(ratios) == BIG and min(ratios) >= 4.5
    assert (site / "search.js").stat().st_size < 400_000


def test_rebuild_is_byte_identical(site: Path, registry_file: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build(again, registry_file, home=tmp_path / "home")
    assert tree(again) == tree(site)
    build(again, registry_file, home=tmp_path / "home")  # replaces its own site
    assert tree(again) == tree(site)


def test_bad_output_folder_and_bad_bench_file_are_one_line_errors(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    proc = run_zoo(["site", "-o", str(foreign)])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert ".zoo-site" in proc.stderr and (foreign / "keep.txt").read_text() == "mine"
    bad = tmp_path / "x.bench.json"
    bad.write_text('{"zoo_bench": 99}')
    proc = run_zoo(["site", "-o", str(tmp_path / "s"), "--bench", str(bad)])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "x.bench.json" in proc.stderr and not (tmp_path / "s").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.tmp")]
    blocker = tmp_path / "a-file"  # a folder cannot be made under a file
    blocker.write_text("x")
    proc = run_zoo(["site", "-o", str(blocker / "site")])
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"cannot write the site to {blocker / 'site'}" in proc.stderr
    assert "choose another -o folder" in proc.stderr and "Traceback" not in proc.stderr


def test_a_failed_build_names_the_file_it_could_not_read_or_the_site_it_could_not_write(
        tmp_path: Path) -> None:
    import errno

    from zoo.site.build import _write_error

    out, stage = tmp_path / "site", tmp_path / ".site.tmp-1-ab"
    source = tmp_path / "ort" / "ort.wasm"
    read = _write_error(out, stage, OSError(errno.EIO, "Input/output error", str(source)))
    assert str(read).startswith(f"cannot read {source} while building the site")
    for written in (stage / "models" / "a.html", stage, out):
        message = str(_write_error(out, stage, OSError(errno.ENOSPC, "No space left on device",
                                                       str(written))))
        assert message.startswith(f"cannot write the site to {out}: no space left on device")
    assert "free some space" in str(_write_error(out, stage, OSError(errno.ENOSPC, "full")))


# -- bench records -------------------------------------------------------------------------

def record(cpu: str, version: str, ratio: float, created: str) -> dict[str, Any]:
    def row(fmt: str, precision: str, r: float, size: int, sqnr: float) -> dict[str, Any]:
        return {"format": fmt, "precision": precision, "status": "ok", "reason": None,
                "size_bytes": size, "export_s": 3.5,
                "latency_ms": {"median": 40 * r, "min": 38 * r, "max": 45 * r},
                "eager_ms": {"median": 40.0, "min": 39.0, "max": 42.0},
                "ratio": {"median": r, "min": r * 0.9, "max": r * 1.1}, "sqnr_db": sqnr,
                "argmax_agreement": 0.9991}
    return {
        "zoo_bench": 1, "model": "lraspp_mobilenet_v3_large", "zoo_version": version,
        "created": created,
        "machine": {"cpu": cpu, "cores": 2, "os": "Linux-6.1-x86_64", "python": "3.11.2",
                    "torch": "2.14.1", "runtimes": {"onnxruntime": "1.23.0"}},
        "settings": {"size": [520, 520], "runs": 20, "threads": 2, "weights": "default"},
        "rows": [row("onnx", "fp32", ratio, 13_000_000, 120.0),
                 row("onnx", "int8", ratio * 0.8, 3_500_000, 31.5),
                 {"format": "coreml", "precision": "fp16", "status": "skipped",
                  "reason": "Core ML runs only on macOS", "size_bytes": None, "export_s": None,
                  "latency_ms": None, "eager_ms": None, "ratio": None, "sqnr_db": None,
                  "argmax_agreement": None}],
    }


def test_bench_records_are_plotted_one_labelled_group_per_machine(
        browser: Any, tmp_path: Path, registry_file: Path) -> None:
    from zoo import __version__

    files = []
    for i, (cpu, version, ratio) in enumerate([("Intel Xeon Gold 6338", __version__, 0.44),
                                               ("AMD EPYC 7B13 <script>", "0.0.9", 0.61)]):
        path = tmp_path / f"r{i}.bench.json"
        path.write_text(json.dumps(record(cpu, version, ratio, f"2026-01-0{i + 1}T10:00:00Z")))
        files.append(str(path))
    out = tmp_path / "site"
    build(out, registry_file, "--bench", *files, home=tmp_path / "home")
    page, watch = open_page(browser, out, "models/lraspp_mobilenet_v3_large.html")
    groups = page.query_selector_all(".bench-group")
    assert len(groups) == 2
    first, second = (g.text_content() or "" for g in groups)
    assert "Intel Xeon Gold 6338" in first and "AMD EPYC" not in first
    assert "AMD EPYC 7B13 <script>" in second and "Intel" not in second
    assert "zoo 0.0.9" in second and "built with zoo" in second and "built with" not in first
    for group, ratio in zip(groups, (0.44, 0.61), strict=True):
        charts = group.query_selector_all("svg.chart")
        assert len(charts) == 3  # ratio, size, SQNR
        label = charts[0].get_attribute("aria-label") or ""
        assert f"onnx fp32: {ratio:.2f}x" in label
        cells = group.eval_on_selector_all("table.bench tbody tr", "rows => rows.map(r => "
                                           "Array.from(r.cells).map(c => c.textContent))")
        assert cells[0][:4] == ["onnx", "fp32", "ok", f"{ratio:.2f}"]
        assert cells[2][2] == "skipped" and cells[2][-1] == "Core ML runs only on macOS"
    sizes = page.text_content("#formats") or ""
    assert "onnx" in sizes and "fp32 12.4 MiB" in sizes
    watch.clean()
    page.context.close()


# -- the team store ------------------------------------------------------------------------

def test_an_unreachable_store_still_builds_and_says_why(tmp_path: Path,
                                                        registry_file: Path) -> None:
    missing = (tmp_path / "no-store").as_uri()
    out = tmp_path / "site"
    proc = build(out, registry_file, "--store", missing, home=tmp_path / "home")
    assert "NOT READ" in proc.stdout
    store = (out / "store.html").read_text()
    assert "could not be read" in store and "no-store" in store
    assert "could not be read" in (out / "models" / "single_conv.html").read_text()
    assert "could not be read" in (out / "index.html").read_text()


def test_the_store_section_lists_signer_size_identity_and_verdict(
        browser: Any, tmp_path: Path, registry_file: Path, export_dir: Path, keys: Any,
        built_here: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    env = {"ZOO_HOME": str(built_here)}
    proc = run_zoo(["publish", str(export_dir), "--store", store.as_uri(), "--sign",
                    str(keys.team), "--json"], env=env)
    assert proc.returncode == 0, proc.stderr
    published = json.loads(proc.stdout)
    out = tmp_path / "site"
    build(out, registry_file, "--store", store.as_uri(), "--trusted-key", str(keys.team_pub),
          home=built_here)
    page, watch = open_page(browser, out, "models/single_conv.html")
    rows = page.eval_on_selector_all("#store table.store tbody tr", "rows => rows.map(r => "
                                     "Array.from(r.cells).map(c => c.textContent))")
    assert len(rows) == 1
    fmt, precision, size, signer, when, identity, verdict = rows[0]
    assert (fmt, precision) == ("torchscript", "fp32")
    assert signer.startswith("ed25519:" + published["signed_by"][:16]) and "trusted" in signer
    assert published["identity"].startswith(identity) and when.startswith(
        published["published_at"][:10])
    assert size.endswith("KiB") and verdict.startswith("verifies")
    watch.clean()
    page.context.close()
    # the same store checked against another key: the signer is not vouched for
    build(out, registry_file, "--store", store.as_uri(), "--trusted-key", str(keys.other_pub),
          home=built_here)
    assert "does NOT verify" in (out / "store.html").read_text()
    # damage an object: the page says it no longer verifies
    objects = sorted((store / "objects" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    victim = objects[-1]
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    build(out, registry_file, "--store", store.as_uri(), "--trusted-key", str(keys.team_pub),
          home=built_here)
    assert "does NOT verify" in (out / "models" / "single_conv.html").read_text()
    assert os.path.exists(out / "store.html")
