"""``--demo``: a page per ONNX artifact that runs it in the browser with onnxruntime-web.

The page works from a folder (``file://``), where browsers refuse ``fetch()`` and module
scripts: onnxruntime-web's WebAssembly bundle (``ort.wasm.bundle.min.mjs``) and its ``.wasm``
binary are copied into the site as classic scripts holding their bytes (``ort/``), the page
imports the bundle from a ``blob:`` URL it makes itself and hands ONNX Runtime the binary, so
nothing is fetched, from a CDN or anywhere else. The artifact and its manifest (preprocessing,
output contract, labels, palette) go into ``demo/NAME.model.js`` the same way; the golden scene
the artifact was exported with is built in, and the reader can drop any image.

The files come from ``clients/web/node_modules/onnxruntime-web/dist`` (``npm install
--ignore-scripts --no-package-lock`` in clients/web, version pinned in its package.json) or
from ``--ort-wasm DIR``.

``--demo NAME`` (a model, not a file) takes the ONNX artifact ``zoo fetch NAME --format onnx``
left in this machine's export cache (default options and precision, the card's default
weights): found by its export identity, never exported or downloaded here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo._core.names import MODEL_NAME_RE
from zoo.errors import UsageError
from zoo.site.html import esc, js_data, page, tag
from zoo.site.palette import hex_colour, text_colour

if TYPE_CHECKING:
    from zoo.catalog.registry import Registry
    from zoo.catalog.schema import ModelCard
    from zoo.weights.resolve import ResolvedWeights

BUNDLE = "ort.wasm.bundle.min.mjs"
WASM = "ort-wasm-simd-threaded.wasm"
MAX_BUNDLE_BYTES = 16 << 20
MAX_WASM_BYTES = 128 << 20
#: an artifact larger than this is refused: the page holds it in memory, base64 and decoded
MAX_ARTIFACT_BYTES = 256 << 20


def default_ort_dir() -> Path:
    """Where ``npm install`` in clients/web puts onnxruntime-web's files."""
    return Path(__file__).resolve().parents[2] / "clients" / "web" / "node_modules" / \
        "onnxruntime-web" / "dist"


@dataclass(frozen=True)
class OrtFiles:
    """onnxruntime-web's bundle and binary, checked."""

    bundle: Path
    wasm: Path
    version: str


def find_ort(folder: Path | None) -> OrtFiles:
    """The runtime files in ``folder`` (``--ort-wasm``) or the npm install; UsageError naming
    what is missing and how to get it."""
    where = folder if folder is not None else default_ort_dir()
    how = ("pass --ort-wasm DIR (a folder holding onnxruntime-web's dist files)" if folder
           else "run `npm install --ignore-scripts --no-package-lock` in clients/web, or pass "
           "--ort-wasm DIR (onnxruntime-web's dist folder)")
    files = []
    for name, limit in ((BUNDLE, MAX_BUNDLE_BYTES), (WASM, MAX_WASM_BYTES)):
        path = where / name
        try:
            st = path.stat()
        except OSError:
            raise UsageError(f"--demo needs onnxruntime-web's {name} in {where}; {how}") \
                from None
        if not path.is_file() or st.st_size > limit:
            raise UsageError(f"{path}: not a regular file of at most {limit >> 20} MiB; {how}")
        files.append(path)
    with open(files[1], "rb") as fh:
        if fh.read(4) != b"\0asm":
            raise UsageError(f"{files[1]}: not a WebAssembly binary; {how}")
    return OrtFiles(files[0], files[1], _version(where))


def _version(dist: Path) -> str:
    try:
        meta = json.loads((dist.parent / "package.json").read_text(encoding="utf-8"))
        value = meta.get("version") if isinstance(meta, dict) else None
        return value if isinstance(value, str) and len(value) < 40 else "unknown"
    except (OSError, ValueError):
        return "unknown"


def write_runtime(ort: OrtFiles, out_dir: Path) -> None:
    """``out_dir/ort-runtime.js`` (the bundle's source as a string) and ``ort-wasm.js`` (the
    binary as base64), plus a note of the version."""
    source = ort.bundle.read_text(encoding="utf-8")
    # the source map comment would point at a file the site does not ship
    source = "\n".join(line for line in source.splitlines()
                       if not line.startswith("//# sourceMappingURL="))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ort-runtime.js").write_text(
        f"window.ZOO_ORT_VERSION = {js_data(ort.version)};\n"
        f"window.ZOO_ORT_MODULE = {js_data(source)};\n", encoding="utf-8")
    wasm = base64.b64encode(ort.wasm.read_bytes()).decode("ascii")
    (out_dir / "ort-wasm.js").write_text(f'window.ZOO_ORT_WASM = "{wasm}";\n', encoding="utf-8")
    (out_dir / "README.txt").write_text(
        f"onnxruntime-web {ort.version} (MIT licence, https://onnxruntime.ai), "
        f"{BUNDLE} and {WASM}, wrapped as classic scripts so the demo pages run from a "
        "folder.\n", encoding="utf-8")


@dataclass(frozen=True)
class DemoArtifact:
    """An ONNX artifact checked against its manifest."""

    path: Path
    manifest: Any  # zoo.export.manifest.Manifest
    data: bytes = b""  # the bytes that were checked (the page embeds exactly these)

    @property
    def model(self) -> str:
        return str(self.manifest.model.name)


def check_artifact(path: Path) -> DemoArtifact:
    """``path`` (an .onnx artifact or its manifest) as a demo artifact: its sidecar manifest
    valid, its format onnx, its bytes those the manifest names (size and sha256), its
    container accepted (no external data). UsageError naming the file otherwise."""
    from zoo.export import get_exporter
    from zoo.export.manifest import sidecar_paths
    from zoo.export.manifest_files import read_manifest_file

    artifact, sidecar = sidecar_paths(Path(path))
    if not artifact.is_file():
        raise UsageError(f"--demo {path}: no such ONNX artifact; make one with "
                         "`zoo fetch NAME --format onnx -o DIR`")
    if not sidecar.is_file():
        raise UsageError(f"--demo {artifact}: its manifest {sidecar.name} is missing beside it "
                         "(re-export with `zoo fetch NAME --format onnx`)")
    try:
        manifest = read_manifest_file(sidecar)
    except ValueError as exc:
        raise UsageError(f"--demo {sidecar}: not a valid zoo manifest: {exc}") from None
    if manifest.export.format != "onnx":
        raise UsageError(f"--demo {artifact}: a {manifest.export.format} artifact; the browser "
                         "demo runs ONNX artifacts (`zoo fetch NAME --format onnx`)")
    facts = manifest.artifact
    st = artifact.stat()
    if st.st_size > MAX_ARTIFACT_BYTES:
        raise UsageError(f"--demo {artifact}: {st.st_size} bytes is too large for an in-browser "
                         f"demo (at most {MAX_ARTIFACT_BYTES >> 20} MiB)")
    data = artifact.read_bytes()  # read once: what is hashed is what the page embeds
    if facts is None or facts.size != len(data) or \
            facts.sha256 != hashlib.sha256(data).hexdigest():
        raise UsageError(f"--demo {artifact} does not match its manifest (size/sha256); it "
                         f"changed after export: re-export it, or see `zoo verify {artifact}`")
    refused = get_exporter("onnx").check_container(artifact)
    if refused is not None:
        raise UsageError(f"--demo {artifact}: its container is refused: {refused}")
    return DemoArtifact(artifact, manifest, data)


def demo_artifact(item: Path | str, registry: Registry) -> DemoArtifact:
    """``--demo ITEM``: a Path is an ONNX artifact; a str naming a catalogue model (and no
    existing file) is that model's ONNX export in this machine's export cache
    (:func:`cached_onnx`); any other str is a path. UsageError naming the way out."""
    if isinstance(item, str):
        text = item.strip()
        if not os.path.lexists(text) and MODEL_NAME_RE.match(text):
            if text not in registry.names():
                raise UsageError(f"--demo {text}: no such file, and no model {text!r} in this "
                                 "catalogue (see `zoo list`); pass an ONNX artifact or a model "
                                 "name")
            return check_artifact(cached_onnx(registry.get(text), registry))
        item = Path(text)
    return check_artifact(item)


def _default_weights(card: ModelCard) -> ResolvedWeights | None:
    """The card's default weights as ``zoo fetch NAME`` resolves them, from this machine's
    weights cache or the card's full sha256 pin (nothing is downloaded); None without."""
    from zoo.site.overlays import cached_weights
    from zoo.weights.resolve import ResolvedWeights

    weights, _why = cached_weights(card)
    if weights is not None:
        return weights
    pinned = card.weights_named(card.default_weights) if card.default_weights else None
    sha = getattr(pinned, "sha256", None)
    if not sha:
        return None
    return ResolvedWeights(None, sha, str(card.default_weights), None, False)


def cached_onnx(card: ModelCard, registry: Registry) -> Path:
    """The ONNX artifact ``zoo fetch NAME --format onnx`` put in this machine's export cache
    (its export identity recomputed: the same card, weights, options, code and versions).
    UsageError naming that command when the cache holds none; never exports."""
    from zoo.bench.runner import export_options_for
    from zoo.export import available_formats, get_exporter
    from zoo.export.cache import ArtifactCache
    from zoo.export.pipeline import export_identity

    make = (f"make it with `zoo fetch {card.name} --format onnx`, then build the site again "
            "(or pass an .onnx file)")
    if "onnx" not in available_formats(registry.host):
        raise UsageError(f"--demo {card.name}: the onnx format is not installed here; "
                         "pip install 'zoo[onnx]', or pass an .onnx file")
    if card.default_weights is None:
        raise UsageError(f"--demo {card.name}: the card has no published weights, so "
                         f"`zoo fetch {card.name} --format onnx` makes no artifact; pass the "
                         ".onnx file you exported with --weights")
    weights = _default_weights(card)
    entry = None
    if weights is not None:
        exporter = get_exporter("onnx", registry.host)
        options = export_options_for(exporter, exporter.default_precision(),
                                     tuple(card.preprocessing.input_size))  # type: ignore[arg-type]
        key, _builder, _code = export_identity(card, weights, exporter, options, registry)
        entry = ArtifactCache(budget=None).lookup(key)
    if entry is None or not entry.artifact_file:
        raise UsageError(f"--demo {card.name}: this machine's export cache holds no ONNX "
                         f"artifact of it; {make}")
    return entry.folder / entry.artifact_file


def scene_png(manifest: Any) -> tuple[bytes, int, int]:
    """The golden scene the artifact was checked with, at its exported size, as PNG."""
    from zoo.export.golden import scene_pixels
    from zoo.inference.postprocessing import png_bytes

    case = next((c for c in manifest.golden.cases if c.name == "scene"), None)
    seed = case.input.seed if case is not None else 1
    _, _, height, width = manifest.export.input_shape
    pixels = scene_pixels(seed, height, width).permute(1, 2, 0).contiguous().numpy()
    return png_bytes(pixels), height, width


def write_demo(demo: DemoArtifact, out_dir: Path) -> None:
    """``out_dir/NAME.model.js`` and ``out_dir/NAME.html``."""
    m = demo.manifest
    name = demo.model
    png, height, width = scene_png(m)
    data = {
        "name": name,
        "artifact": demo.path.name,
        "manifest": m.model_dump(mode="json"),
        "text_colours": [hex_colour(text_colour(c)) for c in m.model.palette],
        "scene": {"png": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
                  "height": height, "width": width},
    }
    model_b64 = base64.b64encode(demo.data).decode("ascii")
    (out_dir / f"{name}.model.js").write_text(
        f"window.ZOO_DEMO = {js_data(data)};\nwindow.ZOO_DEMO.model = \"{model_b64}\";\n",
        encoding="utf-8")
    (out_dir / f"{name}.html").write_text(demo_page(demo), encoding="utf-8")


def demo_page(demo: DemoArtifact) -> str:
    """demo/NAME.html."""
    m = demo.manifest
    name = demo.model
    untrained = tag("p", esc("UNTRAINED artifact (exported with --weights none): its labels "
                             "are meaningless."), class_="warning") if m.untrained else ""
    body = (
        f"<h1>{esc(name)} in your browser</h1>\n"
        f'<p class="lead">{esc(m.model.description)}</p>\n{untrained}'
        + tag("p", esc(f"Runs {demo.path.name} ({m.export.precision}, exported at "
                       f"{m.export.input_shape[2]}x{m.export.input_shape[3]}) with "
                       "ONNX Runtime Web (WebAssembly, one thread), on this computer: the "
                       "image never leaves the page. Preprocessing, output and palette come "
                       "from the artifact's manifest."), class_="dim")
        + tag("p", tag("a", esc(f"about {name}"), href=f"../models/{name}.html"))
        + '<div class="demo-controls">\n'
        '<button type="button" id="run-scene">Run on the golden scene</button>\n'
        '<label class="drop" id="drop">Drop an image here, or '
        '<input type="file" id="file" accept="image/*"></label>\n</div>\n'
        '<p id="status" role="status" aria-live="polite">Loading ONNX Runtime\u2026</p>\n'
        '<div class="demo-out"><canvas id="input" aria-label="input image"></canvas>'
        '<canvas id="overlay" aria-label="the model\'s labels over the image"></canvas></div>\n'
        '<h2>Classes present</h2><ul id="classes" class="classes"></ul>\n')
    return page(f"{name} demo \u2013 zoo", body, root="../",
                scripts=["ort/ort-runtime.js", "ort/ort-wasm.js", f"demo/{name}.model.js",
                         "zoo-ops.js", "demo.js"])
