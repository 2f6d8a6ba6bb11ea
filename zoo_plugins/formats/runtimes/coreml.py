"""Core ML runtime: ``coremltools.models.MLModel`` (Core ML itself; Apple systems only).

Inputs arrive as the card-normalised float32 ``[1, 3, H, W]`` tensor. A package with an
``image`` input gets 8-bit pixels instead: the tensor is turned back into pixels with the
preprocessing recorded in the package's own embedded manifest (``x * std + mean``, times
the scale divisor, rounded) and handed over as an RGB image, the way an app passes a camera
frame.
"""

from __future__ import annotations

import json
from typing import Any

REQUIRES = ("coremltools", "numpy", "torch")
METADATA_KEY = "zoo_manifest"


def load(path: str, options: dict[str, Any]) -> Any:
    import coremltools as ct
    import numpy as np
    import torch

    model = ct.models.MLModel(path, compute_units=ct.ComputeUnit.ALL)
    spec = model.get_spec()
    feature = spec.description.input[0]
    name = feature.name
    if feature.type.WhichOneof("Type") != "imageType":
        def run(x: Any) -> Any:
            out = model.predict({name: x.detach().numpy().astype(np.float32)})
            return torch.from_numpy(np.asarray(out["out"], dtype=np.float32))
        return run

    from PIL import Image

    manifest = json.loads(dict(spec.description.metadata.userDefined)[METADATA_KEY])
    pre = manifest["model"]["preprocessing"]
    mean = np.asarray(pre["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(pre["std"], dtype=np.float32)[:, None, None]
    bgr = pre.get("color_order") == "BGR"

    def run_image(x: Any) -> Any:
        pixels = (x.detach().numpy()[0] * std + mean) * float(pre["scale_divisor"])
        pixels = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
        if bgr:  # the model's channel order; the image is RGB
            pixels = pixels[::-1]
        image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), "RGB")
        out = model.predict({name: image})
        return torch.from_numpy(np.asarray(out["out"], dtype=np.float32))

    return run_image


def read_embedded(path: str) -> str | None:
    import coremltools as ct

    spec = ct.utils.load_spec(path)
    return dict(spec.description.metadata.userDefined).get(METADATA_KEY)
