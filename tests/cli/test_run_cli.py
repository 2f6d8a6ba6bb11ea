"""``zoo run``: real images, real weight files (local and served over HTTP), real exported
artifacts. A 320x200 image must come back as 320x200 PNGs whose colours are all palette
colours, and the eager model and its artifact must give the same label PNG."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from tests.conftest import run_zoo
from tests.inference.test_imaging import H, W, make_image
from tests.support.export_helpers import fetch, make_weights, sha256_file
from tests.support.httpserver import HTTPTestServer
from zoo.cli.main import main


def zoo_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``zoo ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = zoo_cli(capsys, "run", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def calibrate(model: torch.nn.Module, num_classes: int, seed: int = 1) -> torch.nn.Module:
    """Make ``model``'s predictions vary across an image, as a trained model's do.

    A raw init has no batch-norm statistics and its argmax is one class almost everywhere
    (``make_weights`` models too); here the statistics are measured on noise images and the
    classifier is scaled to logits of order 10, so ties are as rare as in a trained model.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain average over the calibration batches
            module.reset_running_stats()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(2, 3, 96, 128, generator=gen))
        model.eval()
        out = model(torch.randn(1, 3, 96, 128, generator=gen))
        scale = 10.0 / (out["out"] if isinstance(out, dict) else out).abs().max().item()
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.out_channels == num_classes:
                module.weight.mul_(scale)
                if module.bias is not None:
                    module.bias.mul_(scale)
    return model


def calibrated_weights(name: str, folder: Path, seed: int = 1) -> Path:
    """A weights file for built-in model ``name`` made by :func:`calibrate`."""
    from zoo.catalog.registry import default_registry

    card = zoo.get(name)
    torch.manual_seed(seed)
    model = calibrate(default_registry().builder(card)(card, aux=False), card.num_classes, seed)
    path = folder / f"{name}-calibrated-{seed}.pth"
    torch.save(model.state_dict(), path)
    return path


def read_outputs(result: dict[str, Any]) -> dict[str, Image.Image]:
    return {kind: Image.open(path) for kind, path in result["outputs"].items()}


def check_pictures(result: dict[str, Any], source: np.ndarray, palette: list, alpha: float,
                   num_classes: int) -> np.ndarray:
    """Sizes, modes, palette-only colours, colour = palette[label], overlay = the blend."""
    height, width = source.shape[:2]
    pics = read_outputs(result)
    assert (result["height"], result["width"]) == (height, width)
    for pic in pics.values():
        assert pic.size == (width, height)  # Pillow: (width, height)
    assert (pics["labels"].mode, pics["color"].mode, pics["overlay"].mode) == ("L", "RGB", "RGB")
    labels = np.asarray(pics["labels"])
    color = np.asarray(pics["color"])
    assert labels.max() < num_classes
    table = np.asarray(palette, np.uint8)
    np.testing.assert_array_equal(color, table[labels])
    colours = {tuple(c) for c in color.reshape(-1, 3).tolist()}
    assert colours <= {tuple(c) for c in palette}
    blend = np.rint((1 - alpha) * source + alpha * color.astype(np.float64))
    assert np.abs(np.asarray(pics["overlay"]).astype(int) - blend).max() <= 1
    counts = {c["class"]: c["pixels"] for c in result["classes"]}
    assert counts == {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True),
                                                     strict=True)}
    assert abs(sum(c["share"] for c in result["classes"]) - 1.0) < 1e-9
    return labels


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "street.png"
    Image.fromarray(make_image()).save(path)
    return path


@pytest.fixture(scope="module")
def single_conv_lite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(weights file, lite artifact exported from it by `zoo fetch` in its own process)."""
    folder = tmp_path_factory.mktemp("single_conv")
    weights = make_weights("single_conv", folder)
    proc = fetch(["single_conv", "--format", "lite", "--weights", str(weights),
                  "-o", str(folder / "out"), "--quiet"], folder / "home")
    assert proc.returncode == 0, proc.stderr
    return weights, folder / "out" / "single_conv.ptl"


def test_single_conv_eager_and_lite_artifact_agree_at_the_image_size(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, image_file: Path,
    single_conv_lite: tuple[Path, Path],
) -> None:
    weights, artifact = single_conv_lite
    card = zoo.get("single_conv")
    eager = run_json(capsys, "single_conv", str(image_file), "--weights", str(weights),
                     "-o", str(tmp_path / "eager"), "--overlay", "0.3")
    lite = run_json(capsys, "single_conv", str(image_file), "--artifact", str(artifact),
                    "-o", str(tmp_path / "lite"), "--overlay", "0.3")
    assert (eager["runtime"], lite["runtime"]) == ("eager", "lite")
    assert eager["untrained"] is lite["untrained"] is False
    (e,), (a,) = eager["images"], lite["images"]
    assert e["input_shape"] == a["input_shape"] == [1, 3, 400, 600]  # 'exact': [H, W]
    assert e["outputs"]["labels"] == str(tmp_path / "eager" / "street.labels.png")
    labels_e = check_pictures(e, make_image(), card.palette, 0.3, 23)
    labels_a = check_pictures(a, make_image(), card.palette, 0.3, 23)
    np.testing.assert_array_equal(labels_e, labels_a)
    assert len(e["classes"]) >= 3  # a real picture of classes, not one colour
    assert e["classes"] == a["classes"]
    assert sorted(p.name for p in (tmp_path / "eager").iterdir()) == [
        "street.color.png", "street.labels.png", "street.overlay.png"]  # no temp files left

    # the same through the Python API: the artifact's predictor, and the helpers by hand
    from zoo.inference.predictor import load_artifact

    np.testing.assert_array_equal(load_artifact(artifact).predict(image_file), labels_a)
    model = zoo.load("single_conv", weights=weights)
    pixels = make_image()
    with torch.no_grad():
        out = model(zoo.preprocess(pixels, card))
    np.testing.assert_array_equal(zoo.postprocess(out, card, size=pixels), labels_e)


@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:FutureWarning")
def test_lraspp_served_weights_torchscript_artifact_and_seed_palette(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, image_file: Path,
    http_server: HTTPTestServer,
) -> None:
    name = "lraspp_mobilenet_v3_large"
    weights = calibrated_weights(name, tmp_path)
    url = http_server.serve(f"/m/{weights.name}", weights) + f"#sha256={sha256_file(weights)}"
    out = tmp_path / "ts"
    code, _, err = zoo_cli(capsys, "fetch", name, "--format", "torchscript", "--weights", url,
                           "--input-size", "64x96", "-o", str(out), "--quiet")
    assert code == 0, err
    artifact = out / f"{name}.pt"
    seed = zoo.get(name).palette_named("seed_app")
    eager = run_json(capsys, name, str(image_file), "--weights", url, "--palette", "seed_app",
                     "-o", str(tmp_path / "eager"), "-q")
    script = run_json(capsys, name, str(image_file), "--artifact", str(artifact),
                      "--palette", "seed_app", "-o", str(tmp_path / "script"))
    (e,), (a,) = eager["images"], script["images"]
    assert e["input_shape"] == a["input_shape"] == [1, 3, 520, 832]  # shorter side to 520
    labels_e = check_pictures(e, make_image(), seed, 0.5, 21)
    labels_a = check_pictures(a, make_image(), seed, 0.5, 21)
    assert len(np.unique(labels_e)) >= 3
    mismatched = int((labels_e != labels_a).sum())
    assert mismatched == 0, f"{mismatched} pixels differ between eager and TorchScript"
    assert Path(e["outputs"]["labels"]).read_bytes() == Path(a["outputs"]["labels"]).read_bytes()
    colours = {tuple(c) for c in np.asarray(Image.open(a["outputs"]["color"])).reshape(-1, 3)
               .tolist()}
    assert colours <= {(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)}


def test_many_images_of_any_shape_with_a_table_and_a_progress_bar(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, single_conv_lite: tuple[Path, Path],
) -> None:
    weights, _ = single_conv_lite
    shapes = {"wide": (200, 320), "tall": (321, 199), "tiny": (7, 5)}
    paths = []
    for i, (stem, (h, w)) in enumerate(shapes.items()):
        paths.append(tmp_path / f"{stem}.{'jpg' if i == 1 else 'png'}")
        Image.fromarray(make_image(seed=i, height=h, width=w)).save(paths[-1])
    code, out, err = zoo_cli(capsys, "run", "single_conv", *map(str, paths), "--weights",
                             str(weights), "-o", str(tmp_path / "out"), "--progress")
    assert code == 0, err
    assert "3/3" in err  # the bar's last state
    for stem, (h, w) in shapes.items():
        assert f"{stem}." in out and f"{h}x{w} (HxW)" in out
        for kind in ("labels", "color", "overlay"):
            assert Image.open(tmp_path / "out" / f"{stem}.{kind}.png").size == (w, h)
    assert "class  label" in out and "share" in out
    assert out.count("%") >= 3
    code, _, err = zoo_cli(capsys, "run", "single_conv", *map(str, paths), "--weights",
                           str(weights), "-o", str(tmp_path / "quiet"))
    assert code == 0 and "3/3" not in err  # no bar when stderr is not a terminal


def test_untrained_is_loud_through_the_real_command(tmp_path: Path, image_file: Path) -> None:
    proc = run_zoo(["run", "single_conv", str(image_file), "--weights", "none", "-o",
                    str(tmp_path), "--json"])
    assert proc.returncode == 0, proc.stderr
    assert "zoo: UNTRAINED: single_conv has random weights" in proc.stderr
    report = json.loads(proc.stdout)
    assert report["untrained"] is True and report["source"] == "none (untrained)"
    assert Image.open(tmp_path / "street.color.png").size == (W, H)


def test_errors_are_one_line_with_the_right_exit_code(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, image_file: Path,
    single_conv_lite: tuple[Path, Path],
) -> None:
    weights, artifact = single_conv_lite

    def fails(code: int, message: str, *args: str) -> None:
        got, out, err = zoo_cli(capsys, "run", *args, "-o", str(tmp_path / "o"))
        assert got == code, err
        assert err.count("\n") == 1 and message in err, err
        assert "Traceback" not in err and out == ""

    bad = tmp_path / "holiday.jpg"
    bad.write_text("this is not a JPEG")
    fails(2, f"zoo: error: {bad}: not an image zoo reads (PNG, JPEG,",
          "single_conv", str(image_file), str(bad), "--weights", str(weights))
    fails(2, f"{tmp_path / 'nope.png'}: no such file", "single_conv", str(tmp_path / "nope.png"))
    cut = tmp_path / "cut.png"
    cut.write_bytes(image_file.read_bytes()[:3000])
    fails(2, f"{cut}: cannot read the image", "single_conv", str(cut), "--weights", str(weights))
    other = tmp_path / "other" / image_file.name
    other.parent.mkdir()
    shutil.copy(image_file, other)
    fails(2, "would both write street.*.png", "single_conv", str(image_file), str(other))
    fails(2, "no palette 'seed_app'; choose from default",
          "single_conv", str(image_file), "--palette", "seed_app", "--weights", str(weights))
    fails(2, "has no published weights", "single_conv", str(image_file))
    fails(2, "unknown model 'singleconv'; did you mean single_conv", "singleconv",
          str(image_file))
    fails(2, f"{artifact} is an export of 'single_conv', not 'deeplabv3_resnet50'",
          "deeplabv3_resnet50", str(image_file), "--artifact", str(artifact))
    fails(2, "--weights applies to the eager model", "single_conv", str(image_file),
          "--artifact", str(artifact), "--weights", str(weights))

    lone = tmp_path / "lone" / artifact.name
    lone.parent.mkdir()
    shutil.copy(artifact, lone)
    fails(2, "single_conv.ptl.manifest.json is missing", "single_conv", str(image_file),
          "--artifact", str(lone))
    sidecar = artifact.with_name(artifact.name + ".manifest.json")
    manifest = json.loads(sidecar.read_text())
    manifest["export"]["format"] = "nosuchformat"
    shutil.copy(sidecar, lone.with_name(sidecar.name))
    lone.with_name(sidecar.name).write_text(json.dumps(manifest))
    fails(2, "names format 'nosuchformat', which no installed plugin", "single_conv",
          str(image_file),
          "--artifact", str(lone))
    shutil.copy(sidecar, lone.with_name(sidecar.name))
    data = bytearray(lone.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lone.write_bytes(bytes(data))
    fails(1, "does not match its manifest", "single_conv", str(image_file),
          "--artifact", str(lone))
    with pytest.raises(SystemExit) as exited:  # argparse's own exit
        main(["run", "single_conv", str(image_file), "--overlay", "1.5"])
    assert exited.value.code == 2 and "'1.5' must be within 0..1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing was written by any failure


# -- hostile images and outputs that cannot be written --------------------------------------------


def test_hostile_images_fail_before_any_model_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, image_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over-limit images are exit 2 with one line naming the limit and the variable that
    raises it; checked from the headers before the model (single_conv has no weights: a
    later check would say so instead). Raising the limit is honoured."""
    from tests.inference.test_imaging import png_with_header, tall_png

    tall, forged = tmp_path / "tall.png", tmp_path / "forged.png"
    tall.write_bytes(tall_png())
    forged.write_bytes(png_with_header(65535, 65535))
    out = tmp_path / "out"
    for path, message in [
        (tall, f"zoo: error: {tall}: 100000x1 pixels (HxW) has an aspect ratio of 100,000:1, "
               "more than the limit of 20:1; if you mean it, raise it with "
               "ZOO_MAX_IMAGE_ASPECT=N"),
        (forged, f"zoo: error: {forged}: 4,294,836,225 pixels, more than the limit of "
                 "89,478,485; if you trust the image, raise it with ZOO_MAX_IMAGE_PIXELS=N"),
    ]:
        code, stdout, err = zoo_cli(capsys, "run", "single_conv", str(image_file), str(path),
                                    "-o", str(out))
        assert (code, stdout, err.count("\n")) == (2, "", 1), err
        assert err.startswith(message), err
    monkeypatch.setenv("ZOO_MAX_IMAGE_PIXELS", "a lot")
    code, _, err = zoo_cli(capsys, "run", "single_conv", str(image_file), "-o", str(out))
    assert code == 2 and "ZOO_MAX_IMAGE_PIXELS='a lot' is not a whole number" in err
    assert not out.exists()

    monkeypatch.delenv("ZOO_MAX_IMAGE_PIXELS")
    monkeypatch.setenv("ZOO_MAX_IMAGE_ASPECT", "100000")
    report = run_json(capsys, "single_conv", str(tall), "--weights", "none", "-o", str(out))
    (result,) = report["images"]
    assert (result["height"], result["width"]) == (100_000, 1)
    assert result["input_shape"] == [1, 3, 400, 600]  # 'exact': the card's size, not 52M wide
    assert Image.open(result["outputs"]["labels"]).size == (1, 100_000)


def test_output_folder_problems_are_found_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, image_file: Path
) -> None:
    from tests.support.httpserver import readonly

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, message in [(a_file, "exists and is not a folder"),
                         (a_file / "sub", f"{a_file} is not a folder")]:
        code, _, err = zoo_cli(capsys, "run", "single_conv", str(image_file), "-o", str(out))
        assert code == 2 and f"zoo: error: -o {out}: {message}; name a folder" in err, err
    source = tmp_path / "src"
    source.mkdir()
    with readonly(source, tmp_path / "ro") as ro:
        code, _, err = zoo_cli(capsys, "run", "single_conv", str(image_file),
                               "-o", str(ro / "new"))
        assert code == 2, err
        assert f"-o {ro / 'new'}: cannot write into {ro} (read-only or no permission)" in err


def test_a_full_disk_leaves_no_half_set_of_pictures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, image_file: Path
) -> None:
    """A real 64 KiB tmpfs with 4 KiB free: the three PNGs (~50 KiB) cannot all fit. Exit 1
    (a runtime failure), one line, and neither a PNG nor a temp file is left there."""
    from tests.support.httpserver import tmpfs

    with tmpfs(tmp_path / "disk", "64k") as disk:
        (disk / "filler").write_bytes(b"\0" * 60_000)
        out = disk / "out"
        code, stdout, err = zoo_cli(capsys, "run", "single_conv", str(image_file),
                                    "--weights", "none", "-o", str(out))
        lines = [ln for ln in err.splitlines() if "UNTRAINED" not in ln]
        assert (code, stdout) == (1, ""), err
        assert len(lines) == 1, err
        assert lines[0].startswith(f"zoo: error: cannot write {out}/street."), err
        assert "No space left on device; nothing was written for this image" in lines[0]
        assert sorted(p.name for p in out.iterdir()) == []
