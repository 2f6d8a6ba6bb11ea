"""``zoo site --demo NAME``: the model's ONNX export is taken from this machine's export cache
(what ``zoo fetch NAME --format onnx`` left there), never exported or downloaded by the site;
without it the build stops with one line naming that command (exit 2). No browser needed:
onnxruntime-web's files are stand-ins given with --ort-wasm."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_zoo
from tests.support.httpserver import (
    HTTPTestServer,
    card_with_weights,
    state_dict_bytes,
    write_registry,
)

MODEL = "served_conv"


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A card whose weights the tests' HTTP server serves, fetched and exported to ONNX with
    `zoo fetch MODEL --format onnx` (default options) into a ZOO_HOME; the server is closed
    before any site is built."""
    base = tmp_path_factory.mktemp("democache")
    server = HTTPTestServer().start()
    try:
        data = state_dict_bytes("single_conv", seed=5)
        card = card_with_weights("single_conv", MODEL, server.serve("/w.pth", data), data)
        registry = write_registry(base / "reg.yaml", card)
        proc = run_zoo(["fetch", MODEL, "--format", "onnx", "-o", str(base / "models"),
                        "--quiet"], env={"ZOO_HOME": str(base / "home"),
                                         "ZOO_REGISTRY": str(registry)})
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        server.close()
    ort = base / "ort"
    ort.mkdir()
    (ort / "ort.wasm.bundle.min.mjs").write_text("export const stand_in = 1;\n")
    (ort / "ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm\x01\0\0\0")
    return {"home": base / "home", "registry": registry, "ort": ort,
            "artifact": Path(proc.stdout.strip())}


def site(fetched: dict[str, Path], out: Path, *demo: str, home: Path | None = None,
         cwd: Path | None = None) -> tuple[int, str, str]:
    proc = run_zoo(["site", "-o", str(out), "--no-overlays", "--ort-wasm", str(fetched["ort"]),
                    "--demo", *demo],
                   env={"ZOO_HOME": str(home or fetched["home"]),
                        "ZOO_REGISTRY": str(fetched["registry"]), "ZOO_OFFLINE": "1"},
                   cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def test_demo_by_name_embeds_the_cached_onnx_artifact(fetched: dict[str, Path],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "site"
    code, said, err = site(fetched, out, MODEL, cwd=tmp_path)
    assert code == 0, err[-3000:]
    assert f"demos: {MODEL}" in said
    assert (out / "demo" / f"{MODEL}.html").is_file()
    script = (out / "demo" / f"{MODEL}.model.js").read_text()
    embedded = re.search(r'window\.ZOO_DEMO\.model = "([A-Za-z0-9+/=]+)";', script)
    assert embedded is not None
    assert base64.b64decode(embedded.group(1)) == fetched["artifact"].read_bytes()
    # the same page as for the file itself: the name and the path give one site
    by_path = tmp_path / "by-path"
    code, _said, err = site(fetched, by_path, str(fetched["artifact"]))
    assert code == 0, err[-3000:]
    assert (by_path / "demo" / f"{MODEL}.model.js").read_text() == script


def test_demo_by_name_without_a_cached_export_names_the_fetch_command(
        fetched: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "fresh-home"
    weights = fetched["home"] / "weights"  # weights cached, no export: still nothing to show
    shutil.copytree(weights, empty / "weights")
    out = tmp_path / "site"
    code, said, err = site(fetched, out, MODEL, home=empty, cwd=tmp_path)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"`zoo fetch {MODEL} --format onnx`" in lines[0], err
    assert "export cache holds no ONNX artifact" in lines[0]
    assert not out.exists() and said == ""
    assert not (empty / "artifacts").exists() or not any(
        (empty / "artifacts").glob("*/*.onnx"))  # nothing was exported


def test_demo_of_an_unknown_name_or_a_missing_file_is_one_line_exit_2(
        fetched: dict[str, Path], tmp_path: Path) -> None:
    for item, said in (("no_such_model", "no model 'no_such_model' in this catalogue"),
                       ("missing/x.onnx", "no such ONNX artifact")):
        code, _out, err = site(fetched, tmp_path / "site", item, cwd=tmp_path)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and said in lines[0], err
