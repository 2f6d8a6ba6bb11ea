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
from tests.support.export_helpers import make_weights, sha256_file
from tests.support.httpserver import HTTPTestServer
from zoo.catalog.schema import OutputContract, Preprocessing
from zoo.inference.postprocessing import (
    class_shares,
    label_image,
    overlay,
    png_bytes,
    resize_labels,
)
from zoo.inference.predictor import UntrainedWarning
from zoo.inference.preprocessing import input_size_for, load_image

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
import zoo.inference.preprocessing
print(json.dumps({"before": before, "after": heavy(), "dir": names,
                  "same": f is zoo.inference.preprocessing.preprocess and zoo.load.__module__}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["before"] == []
    assert out["after"] == ["PIL", "numpy", "torch"]
    assert out["dir"] == ["colorize", "load", "postprocess", "preprocess"]
    assert out["same"] == "zoo.inference.predictor"


# -- hostile images: bounded before decoding ---------------------------------------------------


def png_with_header(height: int, width: int, data: bytes = b"", mode: int = 0) -> bytes:
    """A PNG whose IHDR says ``height`` x ``width`` (8-bit, grey by default) and whose IDAT
    holds ``data`` deflated: the header can lie about what follows."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(data, 9)) + chunk(b"IEND", b""))


def tall_png() -> bytes:
    """The issue's file: a valid 100000x1 (HxW) grey PNG of a few hundred bytes."""
    return png_with_header(100_000, 1, b"\x00\x80" * 100_000)


def test_hostile_headers_are_refused_before_decoding(tmp_path: Path) -> None:
    from zoo.inference.preprocessing import ImageLimitError, image_size

    deeplab = zoo.get("deeplabv3_resnet50")  # shorter side to 520: 1x100000 would be 52M wide
    tall = tmp_path / "tall.png"
    tall.write_bytes(tall_png())
    assert len(tall.read_bytes()) < 400
    forged = tmp_path / "forged.png"
    forged.write_bytes(png_with_header(65535, 65535))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape
        for source in (tall, str(tall), Image.open(tall)):
            with pytest.raises(ImageLimitError, match=r"100000x1 pixels \(HxW\) has an aspect "
                               r"ratio of 100,000:1, more than the limit of 20:1; .*"
                               r"ZOO_MAX_IMAGE_ASPECT=N \(or max_aspect=N in Python\)"):
                zoo.preprocess(source, deeplab)
        with pytest.raises(ImageLimitError, match=r"forged\.png: .*4,294,836,225 pixels.*limit "
                           r"of 89,478,485; .*ZOO_MAX_IMAGE_PIXELS=N \(or max_pixels=N"):
            zoo.preprocess(forged, deeplab)
        with pytest.raises(ImageLimitError, match=r"forged\.png"):
            load_image(forged)
        assert image_size(tall, max_aspect=100_000) == (100_000, 1)
        # arrays are bounded before any copy (broadcast views cost no memory)
        huge = np.broadcast_to(np.zeros(3, np.uint8), (20_000, 20_000, 3))
        with pytest.raises(ImageLimitError, match=r"the image array: 20000x20000 pixels"):
            zoo.preprocess(huge, deeplab, max_pixels=100_000_000 - 1)
        with pytest.raises(ImageLimitError, match="aspect ratio of 100,000:1"):
            zoo.preprocess(np.zeros((1, 100_000, 3), np.uint8), deeplab)
        # the model input is bounded too: a 10x2000 strip at the shorter side 520
        strip = np.zeros((10, 2000, 3), np.uint8)
        with pytest.raises(ImageLimitError, match=r"model input .* 520x104000 pixels"):
            zoo.preprocess(strip, deeplab, max_aspect=200, max_pixels=1_000_000)
        assert zoo.preprocess(strip, zoo.get("single_conv"), max_aspect=200).shape == \
            (1, 3, 400, 600)
        # postprocess never allocates a label map of an absurd size
        with pytest.raises(ImageLimitError, match="the requested size"):
            zoo.postprocess({"out": torch.zeros(1, 21, 4, 4)}, deeplab, size=(100_000, 100_000))


def test_limits_come_from_arguments_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zoo.inference.preprocessing import ImageLimitError

    card = zoo.get("single_conv")
    pixels = make_image(height=20, width=30)  # 600 pixels, aspect 1.5
    monkeypatch.setenv("ZOO_MAX_IMAGE_PIXELS", "599")
    with pytest.raises(ImageLimitError, match="600 pixels, more than the limit of 599"):
        zoo.preprocess(pixels, card)
    assert zoo.preprocess(pixels, card, max_pixels=600).shape == (1, 3, 400, 600)
    monkeypatch.setenv("ZOO_MAX_IMAGE_PIXELS", "1_000")
    monkeypatch.setenv("ZOO_MAX_IMAGE_ASPECT", "1.4")
    with pytest.raises(ImageLimitError, match=r"aspect ratio of 1\.5:1, more than the limit of "
                       r"1\.4"):
        zoo.preprocess(pixels, card)
    for name, value in [("ZOO_MAX_IMAGE_ASPECT", "0.5"), ("ZOO_MAX_IMAGE_ASPECT", "nan"),
                        ("ZOO_MAX_IMAGE_PIXELS", "lots"), ("ZOO_MAX_IMAGE_PIXELS", "-1")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(zoo.UsageError, match=f"{name}='{value}' is not .*; fix or unset it"):
            zoo.preprocess(pixels, card)
        monkeypatch.delenv(name)
    with pytest.raises(zoo.UsageError, match="max_pixels must be a positive whole number"):
        zoo.preprocess(pixels, card, max_pixels=0)


@pytest.mark.filterwarnings("error")
def test_raising_the_limit_past_pillows_own_is_honoured(tmp_path: Path) -> None:
    """Above Pillow's hard limit (2 x MAX_IMAGE_PIXELS) zoo's own limit decides: the forged
    header is then accepted and the missing pixel data is what fails, as a usage error."""
    from zoo.inference.preprocessing import ImageLimitError, image_size

    forged = tmp_path / "big.png"
    forged.write_bytes(png_with_header(20_000, 20_000))  # 400M pixels: Pillow alone refuses
    assert image_size(forged, max_pixels=400_000_000) == (20_000, 20_000)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # put back
    with pytest.raises(ImageLimitError, match="400,000,000 pixels, more than the limit"):
        image_size(forged, max_pixels=399_999_999)


_MEMORY_PROBE = """
import json, os, resource, sys, warnings
warnings.simplefilter("error")
import zoo
from zoo.inference.preprocessing import preprocess
card = zoo.get("deeplabv3_resnet50")
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
preprocess(sys.argv[1], card)  # a small real image: warm up every code path
base = peak()
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
out = {}
for path in sys.argv[2:]:
    try:
        preprocess(path, card)
        out[os.path.basename(path)] = "accepted"
    except zoo.UsageError as exc:
        out[os.path.basename(path)] = str(exc)
    except BaseException as exc:
        out[os.path.basename(path)] = f"ESCAPED {type(exc).__name__}: {exc}"
print(json.dumps({"grew": peak() - base, "results": out}))
"""


def test_memory_stays_bounded_for_hostile_files(tmp_path: Path) -> None:
    """Each hostile file is refused with a clear error, and the process's peak memory hardly
    moves: nothing was decoded. Limits are lowered to 1 megapixel (12 MB files) so the files
    stay small; the same code guards the defaults."""
    import os

    good = tmp_path / "good.png"
    Image.fromarray(make_image()).save(good)
    files = {
        "tall.png": tall_png(),
        "forged.png": png_with_header(65535, 65535),
        # a deflate bomb: 4000x4000 grey zeros (16 MB of pixels) in ~16 KB
        "bomb.png": png_with_header(4000, 4000, bytes(4001 * 4000)),
        # a header promising 900x900 RGB with a fraction of the data
        "truncated.png": png_with_header(900, 900, os.urandom(50_000), mode=2),
        # a JPEG that is nothing but comment segments, 13 MB of them (Pillow keeps them all)
        "markers.jpg": b"\xff\xd8" + (b"\xff\xfe\xff\xff" + b"z" * 65533) * 200,
        "notes.eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    env = {**os.environ, "ZOO_MAX_IMAGE_PIXELS": "1000000"}
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(good), *(str(tmp_path / n) for n in files),
         str(fifo), "/dev/zero", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    results = report["results"]
    assert "ESCAPED" not in json.dumps(results), results
    assert "aspect ratio of 100,000:1" in results["tall.png"]
    assert "4,294,836,225 pixels" in results["forged.png"]
    assert "4000x4000 pixels (HxW) is 16,000,000 pixels, more than the limit of 1,000,000" \
        in results["bomb.png"]
    assert "truncated.png: cannot read the image" in results["truncated.png"]
    assert "more than an image within the pixel limit needs (12,000,000 for" \
        in results["markers.jpg"]
    assert "not an image zoo reads" in results["notes.eps"]
    assert "fifo.png: is not a regular file" in results["fifo.png"]
    assert "/dev/zero: is not a regular file" in results["zero"]
    assert "is a folder, not an image" in results[tmp_path.name]
    assert report["grew"] < 40 << 20, f"peak memory grew by {report['grew'] >> 20} MiB"
