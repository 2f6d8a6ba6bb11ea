"""``zoo.preprocess`` / ``zoo.postprocess`` / ``zoo.colorize`` and ``zoo.load``: the helpers an
app shares with ``zoo run``. Checked against torchvision's own preset transforms, Pillow's
resampler and real weight files; sizes are non-square throughout so height and width cannot
swap unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from tests.conftest import ROOT
from tests.export_helpers import make_weights, sha256_file
from tests.httpserver import HTTPTestServer
from zoo.postprocessing import class_shares, label_image, overlay, png_bytes, resize_labels
from zoo.preprocessing import input_size_for, load_image
from zoo.runner import UntrainedWarning
from zoo.schema import OutputContract, Preprocessing

H, W = 200, 320  # the test image: 320 wide, 200 high


def make_image(seed: int = 0, height: int = H, width: int = W) -> np.ndarray:
    """Gradients, a checkerboard and noise: every pixel differs from its neighbours."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     ((x // 40 + y // 40) % 2) * 255], -1)
    noise = np.random.default_rng(seed).integers(-30, 30, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


# -- preprocessing ---------------------------------------------------------------------------


def test_input_size_follows_each_resize_policy_and_torchvision() -> None:
    from torchvision.transforms.functional import _compute_resized_output_size

    deeplab = zoo.get("deeplabv3_resnet50")  # shorter_side 520
    assert input_size_for(200, 320, deeplab) == (520, 832)  # landscape stays landscape
    assert input_size_for(320, 200, deeplab) == (832, 520)
    for h, w in [(1, 1000), (521, 520), (333, 777), (519, 1037), (4000, 3000)]:
        assert list(input_size_for(h, w, deeplab)) == _compute_resized_output_size((h, w), [520])
    assert input_size_for(200, 320, zoo.get("single_conv")) == (400, 600)  # exact [H, W]
    keep = Preprocessing(mean=(0, 0, 0), std=(1, 1, 1), input_size=(8, 8), resize="none")
    assert input_size_for(200, 320, keep) == (200, 320)


def test_preprocess_is_torchvisions_preset_for_deeplab() -> None:
    from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights

    pixels = make_image()
    mine = zoo.preprocess(Image.fromarray(pixels), zoo.get("deeplabv3_resnet50"))
    preset = DeepLabV3_ResNet50_Weights.DEFAULT.transforms()
    theirs = preset(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())[None]
    assert mine.dtype == torch.float32 and mine.is_contiguous()
    assert mine.shape == theirs.shape == (1, 3, 520, 832)
    assert torch.equal(mine, theirs)
    # torchvision's PIL path resamples with Pillow: at most one 8-bit level apart
    by_pil = preset(Image.fromarray(pixels))[None]
    assert (mine - by_pil).abs().max().item() <= 1.01 / 255 / min(preset.std)


def test_preprocess_bgr_unscaled_normalisation_keeps_h_and_w() -> None:
    pre = Preprocessing(color_order="BGR", scale_divisor=1.0, mean=(103.53, 116.28, 123.675),
                        std=(57.375, 57.12, 58.395), resize="none", input_size=(96, 128))
    pixels = make_image(height=3, width=5)
    x = zoo.preprocess(pixels, pre)
    assert x.shape == (1, 3, 3, 5)
    for c in range(3):  # channel 0 is blue, normalised with mean[0]
        want = (pixels[:, :, 2 - c].astype(np.float32) - pre.mean[c]) / pre.std[c]
        np.testing.assert_allclose(x[0, c].numpy(), want, rtol=0, atol=1e-5)


def test_preprocess_same_for_path_pil_and_array_and_handles_modes(tmp_path: Path) -> None:
    card = zoo.get("single_conv")
    pixels = make_image()
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    from_array = zoo.preprocess(pixels, card)
    assert torch.equal(zoo.preprocess(path, card), from_array)
    assert torch.equal(zoo.preprocess(str(path), card), from_array)
    assert torch.equal(zoo.preprocess(Image.open(path), card), from_array)
    rgba = np.dstack([pixels, np.full((H, W), 7, np.uint8)])
    assert torch.equal(zoo.preprocess(Image.fromarray(rgba), card), from_array)
    assert torch.equal(zoo.preprocess(rgba, card), from_array)
    grey = zoo.preprocess(pixels[:, :, 0], card)
    assert torch.equal(grey[0, 0], grey[0, 2])
    with pytest.raises(ValueError, match="height, width, 3"):
        zoo.preprocess(np.zeros((4, 5, 2), np.uint8), card)


def test_load_image_applies_exif_orientation_and_names_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees: portrait
    Image.fromarray(make_image()).save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.size == (H, W) and image.mode == "RGB"  # Pillow: (width, height)
    assert zoo.preprocess(path, zoo.get("deeplabv3_resnet50")).shape == (1, 3, 832, 520)

    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(zoo.UsageError, match=r"notes\.png: not an image"):
        load_image(bad)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(png_bytes(make_image())[:500])
    with pytest.raises(zoo.UsageError, match=r"cut\.png: cannot read the image"):
        load_image(truncated)


# -- postprocessing --------------------------------------------------------------------------


def test_postprocess_reads_dict_or_tensor_by_the_contract() -> None:
    logits = torch.randn(1, 21, 13, 17, generator=torch.Generator().manual_seed(0))
    want = logits[0].argmax(0).numpy()
    deeplab = zoo.get("deeplabv3_resnet50")  # dict read at 'out'
    labels = zoo.postprocess({"out": logits, "aux": -logits}, deeplab)
    assert labels.dtype == np.uint8 and labels.shape == (13, 17)
    np.testing.assert_array_equal(labels, want)
    tensor_contract = OutputContract(kind="tensor", channels=21)
    np.testing.assert_array_equal(zoo.postprocess(logits[0], tensor_contract), want)

    with pytest.raises(zoo.UsageError, match=r"keys \['aux'\], not 'out'"):
        zoo.postprocess({"aux": logits}, deeplab)
    with pytest.raises(zoo.UsageError, match="contract is a dict read at 'out'"):
        zoo.postprocess(logits, deeplab)
    with pytest.raises(zoo.UsageError, match="contract is a bare tensor"):
        zoo.postprocess({"out": logits}, tensor_contract)
    with pytest.raises(zoo.UsageError, match="23 channels but the contract says 21"):
        zoo.postprocess(torch.zeros(1, 23, 4, 4), tensor_contract)
    with pytest.raises(zoo.UsageError, match="one image at a time"):
        zoo.postprocess(torch.zeros(2, 21, 4, 4), tensor_contract)


def test_postprocess_maps_back_to_the_image_size_like_pillow_nearest() -> None:
    contract = OutputContract(kind="tensor", channels=21)
    logits = torch.randn(1, 21, 520, 832, generator=torch.Generator().manual_seed(1))
    small = zoo.postprocess(logits, contract)
    for size in [(H, W), Image.fromarray(make_image()), make_image()]:
        labels = zoo.postprocess(logits, contract, size=size)
        assert labels.shape == (H, W)
        by_pillow = np.asarray(Image.fromarray(small).resize((W, H), Image.Resampling.NEAREST))
        np.testing.assert_array_equal(labels, by_pillow)
    up = resize_labels(torch.tensor([[0, 1, 2], [3, 4, 5]]), (4, 6))
    assert up.tolist() == [[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2


def test_colorize_overlay_shares_and_label_pngs() -> None:
    card = zoo.get("deeplabv3_resnet50")
    labels = np.zeros((H, W), np.uint8)
    labels[50:150, 100:200] = 15  # person
    labels[:10, :] = 12  # dog
    seed = zoo.colorize(labels, card.palette_named("seed_app"))
    assert seed.shape == (H, W, 3) and seed.dtype == np.uint8
    assert tuple(seed[100, 150]) == (255, 0, 0) and tuple(seed[0, 0]) == (0, 255, 0)
    assert tuple(zoo.colorize(torch.from_numpy(labels), card.palette)[100, 150]) == (192, 128, 128)
    with pytest.raises(zoo.UsageError, match="label 15 has no colour: the palette has 3"):
        zoo.colorize(labels, [(0, 0, 0)] * 3)

    pixels = make_image()
    blend = overlay(pixels, seed, 0.25)
    np.testing.assert_array_equal(
        blend, np.rint(0.75 * pixels + 0.25 * seed.astype(np.float64)).astype(np.uint8))
    with pytest.raises(zoo.UsageError, match=r"200x320 .* colour map is 10x10"):
        overlay(pixels, seed[:10, :10], 0.5)

    shares = class_shares(labels, card.labels)
    assert [(s.index, s.label) for s in shares] == [(0, "__background__"), (15, "person"),
                                                    (12, "dog")]
    assert sum(s.pixels for s in shares) == H * W and shares[1].pixels == 100 * 100
    assert abs(sum(s.share for s in shares) - 1.0) < 1e-12

    import io

    assert label_image(labels).mode == "L"
    wide = np.arange(W, dtype=np.uint16)[None].repeat(H, 0) * 200  # > 256 classes
    back = Image.open(io.BytesIO(png_bytes(label_image(wide))))
    assert back.mode == "I;16" and back.size == (W, H)
    np.testing.assert_array_equal(np.asarray(back), wide)


# -- zoo.load and the lazy public API ---------------------------------------------------------


def test_zoo_load_uses_the_fetch_weights_path(
    tmp_path: Path, http_server: HTTPTestServer
) -> None:
    weights = make_weights("single_conv", tmp_path)
    state = torch.load(weights, weights_only=True)
    model = zoo.load("single_conv", weights=weights)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    url = http_server.serve("/w.pth", weights) + f"#sha256={sha256_file(weights)}"
    served = zoo.load("single_conv", weights=url, progress="never")
    assert torch.equal(served.state_dict()["conv_layer1.0.weight"], state["conv_layer1.0.weight"])
    assert http_server.stats("/w.pth").full_downloads == 1

    with pytest.warns(UntrainedWarning, match="UNTRAINED: single_conv"):
        zoo.load("single_conv", weights="none")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(zoo.UsageError, match="has no published weights"):
            zoo.load("single_conv")
    # the whole app path, by hand: preprocess, run, postprocess at the image's own size
    pixels = make_image()
    with torch.no_grad():
        labels = zoo.postprocess(model(zoo.preprocess(pixels, zoo.get("single_conv"))),
                                 zoo.get("single_conv"), size=pixels)
    assert labels.shape == (H, W) and len(np.unique(labels)) > 1


def test_import_zoo_stays_light_until_a_helper_is_used() -> None:
    code = """
import json, sys
import zoo
heavy = lambda: sorted({m.split(".")[0] for m in sys.modules} & {"torch", "PIL", "numpy"})
before = heavy()
names = sorted(n for n in dir(zoo) if n in ("load", "preprocess", "postprocess", "colorize"))
f = zoo.preprocess
import zoo.preprocessing
print(json.dumps({"before": before, "after": heavy(), "dir": names,
                  "same": f is zoo.preprocessing.preprocess and zoo.load.__module__}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["before"] == []
    assert out["after"] == ["PIL", "numpy", "torch"]
    assert out["dir"] == ["colorize", "load", "postprocess", "preprocess"]
    assert out["same"] == "zoo.runner"
