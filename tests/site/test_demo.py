"""``zoo site --demo``: the ONNX artifact runs in headless Chromium with onnxruntime-web, from
the site's folder (file://, nothing fetched), and its labels for the golden scene agree with
``zoo run --artifact`` on the same artifact. Overlays: a card whose weights are in the weights
cache (downloaded from the tests' HTTP server) gets the golden scene and ``--images`` drawn
through the eager model.

One export is shared by the module (single_conv-sized, so the default run stays quick)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_zoo
from tests.inference.test_js_client import scene
from tests.site.browser import need_browser, open_page
from tests.site.test_site import shot, tree
from tests.support.httpserver import (
    HTTPTestServer,
    card_with_weights,
    state_dict_bytes,
    write_registry,
)
from zoo.site.demo import default_ort_dir

MODEL = "served_conv"


def _need_ort() -> None:
    from tests.site.browser import REQUIRED

    if not (default_ort_dir() / "ort.wasm.bundle.min.mjs").is_file():
        problem = ("clients/web has no node_modules: run `npm install --ignore-scripts "
                   "--no-package-lock` in clients/web (as .ci/run does)")
        if REQUIRED:
            pytest.fail(f"ZOO_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A card whose weights the tests' HTTP server serves; `zoo fetch` downloads them into the
    cache and exports ONNX; `zoo site --demo --images` builds the site with that ZOO_HOME."""
    need_browser()
    _need_ort()
    base = tmp_path_factory.mktemp("demo")
    server = HTTPTestServer().start()
    try:
        data = state_dict_bytes("single_conv", seed=3)
        url = server.serve("/served_conv.pth", data)
        card = card_with_weights("single_conv", MODEL, url, data)
        # preprocessing the page must really do: BGR order, mean/std, an upscale to 400x600
        pre = card.preprocessing.model_copy(update={
            "color_order": "BGR", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)})
        registry = write_registry(base / "reg.yaml",
                                  card.model_copy(update={"preprocessing": pre}))
        env = {"ZOO_HOME": str(base / "home"), "ZOO_REGISTRY": str(registry)}
        proc = run_zoo(["fetch", MODEL, "--format", "onnx", "-o", str(base / "models"),
                        "--quiet"], env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        server.close()  # from here on nothing may need the network
    artifact = Path(proc.stdout.strip())
    photo = base / "photo.png"
    scene(300, 450, seed=11).save(photo)  # smaller than the model's input: resized
    manifest = json.loads(Path(f"{artifact}.manifest.json").read_text())
    case = next(c for c in manifest["golden"]["cases"] if c["name"] == "scene")
    _, _, height, width = manifest["export"]["input_shape"]
    from zoo.export.golden import scene_pixels

    golden = base / "golden.png"
    pixels = scene_pixels(case["input"]["seed"], height, width).permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(golden)
    proc = run_zoo(["run", MODEL, str(golden), str(photo), "--artifact", str(artifact), "-o",
                    str(base / "py"), "--json"], env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    labels = {p.stem: np.array(Image.open(base / "py" / f"{p.stem}.labels.png"))
              for p in (golden, photo)}
    site = base / "site"
    proc = run_zoo(["site", "-o", str(site), "--demo", str(artifact), "--images", str(photo)],
                   env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "demos: served_conv" in proc.stdout and f"overlays: {MODEL}" in proc.stdout
    return {"base": base, "env": env, "artifact": artifact, "site": site, "photo": photo,
            "manifest": manifest, "zoo_run": labels}


def _page_labels(page: Any) -> np.ndarray:
    # selectors, not wait_for_function: the page's CSP forbids the eval() that one needs
    page.wait_for_selector("body[data-demo-state=done], body[data-demo-state=failed]",
                           state="attached", timeout=120_000)
    assert page.evaluate("document.body.dataset.demoState") == "done", \
        page.text_content("#status")
    width, height, labels = page.evaluate(
        "() => { const r = window.zooDemoResult; return [r.width, r.height, "
        "Array.from(r.labels)]; }")
    return np.array(labels, dtype=np.int64).reshape(height, width)


def test_the_demo_agrees_with_zoo_run_on_the_golden_scene(
        browser: Any, built: dict[str, Any], tmp_path: Path) -> None:
    manifest = built["manifest"]
    _, _, height, width = manifest["export"]["input_shape"]
    ours = built["zoo_run"]["golden"]  # `zoo run --artifact` on the same ONNX file

    page, watch = open_page(browser, built["site"], f"demo/{MODEL}.html")
    page.wait_for_selector("body[data-demo-state=ready]", state="attached", timeout=120_000)
    page.click("#run-scene")
    theirs = _page_labels(page)
    assert ours.shape == theirs.shape == (height, width)
    agreement = float((ours == theirs).mean())
    assert agreement >= 0.999, agreement
    assert len(np.unique(ours)) >= 3  # the check means something: not one flat class
    shown = page.eval_on_selector_all("#classes li .swatch", "e => e.map(x => x.textContent)")
    labels = manifest["model"]["labels"]
    assert set(shown) == {labels[i] for i in np.unique(theirs)}
    shot(page, "demo.png", tmp_path)

    # an image the reader gives (the file input; a drop hands the page the same File)
    page.evaluate("() => { delete document.body.dataset.demoState; }")
    page.set_input_files("#file", str(built["photo"]))
    theirs = _page_labels(page)
    ours = built["zoo_run"]["photo"]
    assert ours.shape == theirs.shape == (300, 450)
    assert float((ours == theirs).mean()) >= 0.999 and len(np.unique(ours)) >= 3
    watch.clean()
    assert any(u.endswith("/ort/ort-wasm.js") for u in watch.requests)  # the site's own copy
    page.context.close()


def test_overlays_of_cached_weights_and_user_images(browser: Any, built: dict[str, Any]
                                                    ) -> None:
    site = built["site"]
    page, watch = open_page(browser, site, f"models/{MODEL}.html")
    figures = page.query_selector_all("#overlays figure")
    assert len(figures) == 2  # the golden scene and --images
    sources = [img.get_attribute("src") for img in page.query_selector_all("#overlays img")]
    for src in sources:
        assert src and (site / "models" / src).resolve().is_file()
    caption = figures[1].text_content() or ""
    assert caption.startswith("photo.png")
    assert page.evaluate("Array.from(document.querySelectorAll('#overlays img'))"
                         ".every(i => i.complete && i.naturalWidth > 0)")
    assert page.is_visible(f"a[href='../demo/{MODEL}.html']")
    watch.clean()
    page.context.close()
    # other models: weights not cached, so no overlay, and the page says why
    text = (site / "models" / "lraspp_mobilenet_v3_large.html").read_text()
    assert "No overlay: its weights are not in this machine&#x27;s weights cache" in text


def test_the_demo_site_rebuilds_byte_identical_and_needs_the_runtime_files(
        built: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "no-ort"
    empty.mkdir()
    proc = run_zoo(["site", "-o", str(tmp_path / "s"), "--demo", str(built["artifact"]),
                    "--ort-wasm", str(empty)], env=built["env"])
    assert proc.returncode == 2 and "ort.wasm.bundle.min.mjs" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()
    # the same files from a folder the user names: the same site, byte for byte
    (tmp_path / "dist").mkdir()
    for name in ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm"):
        shutil.copyfile(default_ort_dir() / name, tmp_path / "dist" / name)
    shutil.copyfile(default_ort_dir().parent / "package.json", tmp_path / "package.json")
    again = tmp_path / "again"
    proc = run_zoo(["site", "-o", str(again), "--demo", str(built["artifact"]), "--images",
                    str(built["photo"]), "--ort-wasm", str(tmp_path / "dist")],
                   env=built["env"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert tree(again) == tree(built["site"])
