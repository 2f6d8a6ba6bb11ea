"""Core ML (``.mlpackage``) exporter: ``torch.export`` -> coremltools ML Program.

* **Precision.** ``fp16`` (default: what the Neural Engine runs) and ``fp32`` set the compute
  precision; ``int8`` is fp16 compute with int8 weights (``coremltools.optimize.coreml.
  linear_quantize_weights``: symmetric, per output channel, every weight of at least
  ``INT8_WEIGHT_THRESHOLD`` elements). Inputs and outputs stay float32 in every precision.
* **Input.** ``--input-type tensor`` (default): ``input``, the card-normalised float32
  ``[1, 3, H, W]``. ``--input-type image``: ``image``, an RGB (or the card's BGR) 8-bit image
  whose scale, mean and std are folded into the model. Core ML's ``ImageType`` applies one
  scale for all channels plus a per-channel bias, so: when the card's std is equal across
  channels, all of it goes into ``ImageType`` (scale ``1/(divisor*std)``, bias
  ``-mean/std``); otherwise ``ImageType`` only scales by ``1/divisor`` and the model starts
  with a per-channel ``(x - mean) / std`` (one elementwise op, exact).
* **Output.** ``out``: float32 ``[1, C, H, W]`` logits (dict outputs are unwrapped).
* **Manifest.** The JSON is in the model's metadata (``user_defined_metadata['zoo_manifest']``
  in ``model.mlmodel``), read back by parsing the protobuf, never by loading the model.
* **Reproducible bytes.** coremltools writes three things that change from run to run; they
  are normalised: the ``conversion_date`` metadata entry is removed; ``Manifest.json``'s item
  identifiers (random UUIDs) are replaced by UUIDs derived from each item's path and content
  and the file is rewritten with sorted keys; ``executorch_debug_handle_mapping.json`` (a
  debugging aid for ExecuTorch's Core ML delegate) is dropped. ``model.mlmodel`` is
  re-serialised deterministically (protobuf map order) and every file is mode 0644.
* **Runtime.** Core ML runs only on Apple systems. Elsewhere ``zoo verify`` checks integrity
  and structure (:meth:`CoreMLExporter.inspect`) and reports the golden input as not run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ExportError
from zoo.export.base import Exporter, ExportOptions, Finding, Prepared
from zoo.export.containers import ContainerError, FolderLimits, check_folder, name_problem
from zoo.export.manifest import EMBEDDED_NAME

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.catalog.schema import ModelCard
    from zoo.export.manifest import Manifest

METADATA_KEY = "zoo_manifest"
INPUT_TENSOR, INPUT_IMAGE, OUTPUT_NAME = "input", "image", "out"
#: Weights with fewer elements stay fp16 in int8 exports (biases, tiny kernels).
INT8_WEIGHT_THRESHOLD = 512
#: Oldest OS the package runs on: ML Programs with int8 weights need iOS 16 / macOS 13.
DEPLOYMENT_TARGET = "iOS16"
MANIFEST_FILE = "Manifest.json"
SPEC_PATH = "Data/com.apple.CoreML/model.mlmodel"
#: Files coremltools writes that are not part of the model; dropped from the package.
DROPPED_FILES = ("executorch_debug_handle_mapping.json",)
CONVERSION_DATE_KEY = "com.github.apple.coremltools.conversion_date"
MAX_SPEC_BYTES = 256 * 1024 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024
#: Bounds on the package folder (its weights may be large; its file count is not).
PACKAGE_LIMITS = FolderLimits(max_files=1000)
_ID_NAMESPACE = uuid.UUID("6f7a6f6f-636f-7265-6d6c-7061636b6167")
NOT_ON_LINUX = "Core ML runs only on macOS (coremltools cannot run predictions on Linux)"


def normalized(model: nn.Module, mean: list[float], std: list[float]) -> nn.Module:
    """``model`` prefixed by an in-graph ``(x - mean) / std`` (image inputs, unequal std)."""
    import torch

    class Normalized(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1))
            self.register_buffer("inv_std", 1.0 / torch.tensor(std).reshape(1, 3, 1, 1))
            self.training = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model((x - self.mean) * self.inv_std)

    return Normalized()


def equal_std(card: ModelCard) -> bool:
    """Whether the card's std is one value for all channels (all of it fits ``ImageType``)."""
    std = card.preprocessing.std
    return max(std) - min(std) <= 1e-12 * max(std)


def image_fold(card: ModelCard) -> tuple[float, list[float], bool]:
    """``(scale, bias, in_graph)`` for an image input: Core ML computes ``scale * pixel +
    bias[c]``; ``in_graph`` means the model must still apply ``(x - mean) / std`` itself."""
    pre = card.preprocessing
    if equal_std(card):
        std = pre.std[0]
        return 1.0 / (pre.scale_divisor * std), [-m / std for m in pre.mean], False
    return 1.0 / pre.scale_divisor, [0.0, 0.0, 0.0], True


class CoreMLExporter(Exporter):
    """Core ML ML Program package for iOS/macOS apps (Xcode, ``MLModel``)."""

    name = "coreml"
    suffix = ".mlpackage"
    description = "Core ML ML Program package for iOS/macOS (Neural Engine, GPU, CPU)"
    artifact_is_dir = True
    precisions = ("fp16", "fp32", "int8")
    keeps_dict_output = False
    fixed_input_size = True
    input_types = ("tensor", "image")
    requires = (("coremltools", "coreml"),)
    runtime = "zoo_plugins.formats.runtimes.coreml"

    def runtime_unavailable(self) -> str | None:
        if platform.system() != "Darwin":
            return NOT_ON_LINUX
        return super().runtime_unavailable()

    def tolerance(self, options: ExportOptions) -> tuple[float, float]:
        # fp16 compute (the Neural Engine's) through a deep network: about 1e-3 of the logits'
        # range measured with fp16 eager; int8 weights add their own rounding. Image inputs
        # are rounded to 8-bit pixels before the model sees them (the noise case is not).
        image = options.input_type == "image"
        if options.precision == "int8":
            return 2e-2, 5e-2
        if options.precision == "fp16":
            return 1e-2, 4e-2 if image else 2e-2
        return (1e-2, 4e-2) if image else (1e-4, 1e-4)

    # -- export --------------------------------------------------------------------------

    def prepare(
        self, model: nn.Module, example: Tensor, card: ModelCard, options: ExportOptions,
        calibration: list[Tensor] | None = None,
    ) -> Prepared:
        import numpy as np
        import torch

        from zoo.export.wrappers import TensorOutput
        from zoo_plugins.formats._quiet import quiet_output

        ct = coremltools()

        wrapped: nn.Module = TensorOutput(model, card.output.key)
        pre = card.preprocessing
        shape = tuple(example.shape)
        optimizations = {"torch.export": "applied", "deployment_target": DEPLOYMENT_TARGET,
                         "compute_precision": "fp32" if options.precision == "fp32" else "fp16"}
        if options.input_type == "image":
            layout = ct.colorlayout.BGR if pre.color_order == "BGR" else ct.colorlayout.RGB
            scale, bias, in_graph = image_fold(card)
            inputs = [ct.ImageType(name=INPUT_IMAGE, shape=shape, color_layout=layout,
                                   scale=scale, bias=bias)]
            if in_graph:
                wrapped = normalized(wrapped, list(pre.mean), list(pre.std))
                optimizations["image_input"] = ("scale in ImageType; per-channel mean and std "
                                                "as the model's first op")
            else:
                optimizations["image_input"] = "scale, mean and std in ImageType"
            example = torch.zeros(shape)
        else:
            inputs = [ct.TensorType(name=INPUT_TENSOR, shape=shape, dtype=np.float32)]
        try:
            with quiet_output(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.export(wrapped, (example,)).run_decompositions({})
                mlmodel = ct.convert(
                    program, inputs=inputs,
                    outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
                    convert_to="mlprogram",
                    minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
                    compute_precision=ct.precision.FLOAT32 if options.precision == "fp32"
                    else ct.precision.FLOAT16,
                    skip_model_load=True,
                )
                _reclaim_when_dropped(mlmodel)
                if options.precision == "int8":
                    mlmodel = _reclaim_when_dropped(quantize_weights(mlmodel))
                    optimizations["int8_weights"] = (
                        f"linear_quantize_weights: symmetric int8, per output channel, weights "
                        f">= {INT8_WEIGHT_THRESHOLD} elements")
        except Exception as exc:
            raise ExportError(f"Core ML conversion failed: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}") from exc
        mlmodel.short_description = f"{card.name}: {card.description}"[:500]
        tensor_text = (f"float32 {list(shape)}: pixels / {pre.scale_divisor:g}, minus mean "
                       f"{list(pre.mean)}, divided by std {list(pre.std)}, {pre.color_order}")
        image_text = f"{pre.color_order} image, {shape[3]}x{shape[2]}"
        mlmodel.input_description[inputs[0].name] = (
            image_text if options.input_type == "image" else tensor_text)
        mlmodel.output_description[OUTPUT_NAME] = (
            f"float32 [1, {card.output.channels}, H, W] logits; argmax over dim 1 gives the "
            "class")
        return Prepared(module=mlmodel, method="export", optimizations=optimizations,
                        static_shape=True)

    def save(self, prepared: Prepared, path: Path, embedded: dict[str, str]) -> None:
        mlmodel = prepared.module
        metadata = mlmodel.user_defined_metadata
        for key in [CONVERSION_DATE_KEY, METADATA_KEY, *(k for k in metadata
                                                         if k.startswith("zoo."))]:
            if key in metadata:
                del metadata[key]
        for name, text in sorted(embedded.items()):
            metadata[METADATA_KEY if name == EMBEDDED_NAME else f"zoo.{name}"] = text
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlmodel.save(str(path))
        normalize_package(path, mlmodel.get_spec())

    def read_embedded(self, path: Path) -> str | None:
        try:
            spec = read_spec(path)
        except ValueError:
            return None
        return dict(spec.description.metadata.userDefined).get(METADATA_KEY)

    def check_container(self, path: Path) -> str | None:
        """Why the package is refused (links, odd names, oversized files, files and
        ``Manifest.json`` that disagree, an unreadable specification), or None."""
        try:
            read_spec(path)
        except ValueError as exc:
            return str(exc)
        return None

    def inspect(self, path: Path, manifest: Manifest) -> list[Finding]:
        """Package layout, model type, input and output names/shapes/dtypes, the card's
        contract (channels), metadata manifest and weight precision, without running."""
        try:
            spec = read_spec(path)
        except ValueError as exc:
            return [Finding("package", False, str(exc))]
        findings = [Finding("package", True, "Manifest.json and model.mlmodel parse")]
        kind = spec.WhichOneof("Type")
        findings.append(Finding("model type", kind == "mlProgram",
                                f"{kind} (specification version {spec.specificationVersion})"))
        findings.append(_input_finding(spec, manifest))
        findings.append(_output_finding(spec, manifest))
        text = dict(spec.description.metadata.userDefined).get(METADATA_KEY)
        same = text is not None and text == manifest.embedded().to_json()
        findings.append(Finding("metadata manifest", same, "user_defined_metadata holds the "
                                "sidecar manifest" if same else "missing or differs from the "
                                "sidecar manifest"))
        findings.append(_precision_finding(spec, manifest.export.precision))
        return findings


def coremltools() -> Any:
    """``import coremltools`` without the warnings it prints on import (untested torch
    version, scikit-learn, the missing native runtime on Linux)."""
    import sys

    if "coremltools" not in sys.modules:
        from zoo_plugins.formats._quiet import quiet_output

        with quiet_output(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools  # noqa: F401
    return sys.modules["coremltools"]


def proto(name: str) -> Any:
    """coremltools' generated protobuf module ``name`` (e.g. "Model_pb2").

    Importing ``coremltools`` itself takes seconds (it imports torch, torchvision and more);
    reading a package needs only its protobuf classes, so when coremltools is not imported yet
    they are loaded from its ``proto`` folder alone (relative imports only; the message
    classes are the same objects the full package later gets)."""
    import importlib
    import importlib.util
    import sys

    if "coremltools" in sys.modules:
        return importlib.import_module(f"coremltools.proto.{name}")
    package = "_zoo_coremltools_proto"
    if package not in sys.modules:
        import types

        found = importlib.util.find_spec("coremltools")
        if found is None or not found.submodule_search_locations:
            raise ImportError("coremltools is not installed: pip install 'zoo[coreml]'")
        stub = types.ModuleType(package)
        stub.__path__ = [str(Path(next(iter(found.submodule_search_locations))) / "proto")]
        sys.modules[package] = stub
    return importlib.import_module(f"{package}.{name}")


def _reclaim_when_dropped(mlmodel: Any) -> Any:
    """Remove ``mlmodel``'s temporary package (where coremltools keeps a converted model and
    its weights, 168 MB for deeplabv3 fp32) as soon as the object is dropped, not only at
    interpreter exit: a ``zoo sync`` of many Core ML artifacts would otherwise hold them all
    in the temp folder until it ends."""
    import shutil
    import weakref

    path = getattr(mlmodel, "package_path", None)
    if getattr(mlmodel, "is_temp_package", False) and path:
        weakref.finalize(mlmodel, shutil.rmtree, path, True)
    return mlmodel


def quantize_weights(mlmodel: Any) -> Any:
    """int8 weights, symmetric, per output channel (fp16 compute stays)."""
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
    )

    config = OptimizationConfig(global_config=OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel",
        weight_threshold=INT8_WEIGHT_THRESHOLD))
    return linear_quantize_weights(mlmodel, config=config)


# -- the package on disk -------------------------------------------------------------------


def normalize_package(path: Path, spec: Any) -> None:
    """Make a saved ``.mlpackage`` byte-reproducible (see the module docstring)."""
    for name in DROPPED_FILES:
        (path / name).unlink(missing_ok=True)
    (path / SPEC_PATH).write_bytes(spec.SerializeToString(deterministic=True))
    manifest_path = path / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    entries = manifest.get("itemInfoEntries", {})
    renamed: dict[str, str] = {}
    for old, entry in sorted(entries.items(), key=lambda kv: kv[1].get("path", "")):
        item = path / "Data" / entry["path"]
        renamed[old] = str(uuid.uuid5(_ID_NAMESPACE, f"{entry['path']}\0{_digest(item)}")).upper()
    manifest["itemInfoEntries"] = {renamed[k]: v for k, v in entries.items()}
    root = manifest.get("rootModelIdentifier")
    if root in renamed:
        manifest["rootModelIdentifier"] = renamed[root]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n",
                             encoding="utf-8")
    for folder, _dirs, files in os.walk(path):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(Path(folder) / name, 0o644)


def _digest(item: Path) -> str:
    """sha256 over a file, or over a folder's files (relative path and content)."""
    digest = hashlib.sha256()
    files = [item] if item.is_file() else sorted(p for p in item.rglob("*") if p.is_file())
    for file in files:
        digest.update(file.relative_to(item.parent).as_posix().encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_spec(path: Path) -> Any:
    """Parse the package's model specification (protobuf) without loading the model.

    The root item is looked up in ``Manifest.json`` and must be a plain relative path inside
    ``Data/``; sizes are bounded. Raises :class:`ValueError` naming what is wrong."""
    if not path.is_dir():
        raise ValueError(f"{path.name} is not a .mlpackage folder")
    manifest_path = path / MANIFEST_FILE
    try:
        files = dict(check_folder(path, path.name, PACKAGE_LIMITS))
    except ContainerError as exc:
        raise ValueError(str(exc)) from None
    try:
        if manifest_path.is_symlink() or manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"{MANIFEST_FILE} is a link or too large")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        rel = str(entry["path"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{MANIFEST_FILE} is missing or unreadable: {exc}") from None
    _check_listing(path.name, manifest, files)
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or "\\" in rel or not parts:
        raise ValueError(f"{MANIFEST_FILE} names the model outside the package: {rel!r}")
    spec_path = path / "Data" / rel
    root = path.resolve()
    try:
        resolved = spec_path.resolve()
        if root not in resolved.parents or spec_path.is_symlink():
            raise ValueError(f"the model file {rel!r} leaves the package")
        if spec_path.stat().st_size > MAX_SPEC_BYTES:
            raise ValueError(f"the model file {rel!r} is too large")
        data = spec_path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the model file {rel!r}: {exc.strerror or exc}") from None
    try:
        spec = proto("Model_pb2").Model()
    except ImportError as exc:
        raise ValueError(f"cannot parse Core ML packages here: {exc}") from None
    try:
        spec.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ValueError(f"model.mlmodel is not a Core ML specification: {exc}") from None
    return spec


def _check_listing(name: str, manifest: Any, files: dict[str, int]) -> None:
    """``Manifest.json`` and the folder agree: the package holds only ``Manifest.json`` and
    ``Data/``; every item is a plain path inside ``Data/`` that exists; every file in
    ``Data/`` belongs to an item. Raises :class:`ValueError`."""
    entries = manifest.get("itemInfoEntries") if isinstance(manifest, dict) else None
    if not isinstance(entries, dict):
        raise ValueError(f"{MANIFEST_FILE} has no itemInfoEntries")
    items: list[str] = []
    for key, entry in entries.items():
        rel = entry.get("path") if isinstance(entry, dict) else None
        problem = name_problem(rel) if isinstance(rel, str) else "no path"
        if problem is not None:
            raise ValueError(f"{MANIFEST_FILE}: item {str(key)[:40]!r}: {problem}")
        item = f"Data/{rel.rstrip('/')}"
        if item not in files and not any(f.startswith(item + "/") for f in files):
            raise ValueError(f"{MANIFEST_FILE} names {rel!r}, which the package does not hold")
        items.append(item)
    for file in files:
        if file == MANIFEST_FILE:
            continue
        if not file.startswith("Data/"):
            raise ValueError(f"{name}: {file} is outside Data/ (a package holds only "
                             f"{MANIFEST_FILE} and Data/)")
        if not any(file == item or file.startswith(item + "/") for item in items):
            raise ValueError(f"{name}: {file} belongs to no item of {MANIFEST_FILE}")


def _array_shape(feature: Any) -> list[int]:
    return [int(d) for d in feature.type.multiArrayType.shape]


def _input_finding(spec: Any, manifest: Manifest) -> Finding:
    FeatureTypes_pb2 = proto("FeatureTypes_pb2")

    inputs = list(spec.description.input)
    _, _, h, w = manifest.export.input_shape
    image = manifest.export.options.get("input_type") == "image"
    want = INPUT_IMAGE if image else INPUT_TENSOR
    if [i.name for i in inputs] != [want]:
        return Finding("input", False, f"inputs {[i.name for i in inputs]}, expected [{want!r}]")
    feature = inputs[0]
    if image:
        kind = feature.type.WhichOneof("Type")
        image_type = feature.type.imageType
        colour = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image_type.colorSpace)
        order = manifest.model.preprocessing.color_order
        ok = kind == "imageType" and (image_type.height, image_type.width) == (h, w) and \
            colour == order
        return Finding("input", ok, f"image {image_type.width}x{image_type.height} {colour}"
                       + ("" if ok else f"; expected {w}x{h} {order}"))
    dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(
        feature.type.multiArrayType.dataType)
    shape = _array_shape(feature)
    ok = feature.type.WhichOneof("Type") == "multiArrayType" and dtype == "FLOAT32" and \
        shape == [1, 3, h, w]
    return Finding("input", ok, f"{want} {dtype} {shape}" +
                   ("" if ok else f"; expected FLOAT32 {[1, 3, h, w]}"))


def _output_finding(spec: Any, manifest: Manifest) -> Finding:
    FeatureTypes_pb2 = proto("FeatureTypes_pb2")

    outputs = list(spec.description.output)
    if [o.name for o in outputs] != [OUTPUT_NAME]:
        return Finding("output", False, f"outputs {[o.name for o in outputs]}, expected "
                       f"[{OUTPUT_NAME!r}]")
    feature = outputs[0]
    dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(
        feature.type.multiArrayType.dataType)
    shape = _array_shape(feature)
    _, _, h, w = manifest.export.input_shape
    channels = manifest.output.channels
    want = [1, channels, h, w]
    ok = dtype == "FLOAT32" and shape == want
    return Finding("output", ok, f"{OUTPUT_NAME} {dtype} {shape}" + (
        "" if ok else f"; the manifest says FLOAT32 {want} ({channels} channels)"))


def _precision_finding(spec: Any, precision: str) -> Finding:
    ops: set[str] = set()
    dtypes: set[int] = set()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                ops.add(op.type)
                for output in op.outputs:
                    dtypes.add(output.type.tensorType.dataType)
    fp16 = proto("MIL_pb2").DataType.Value("FLOAT16") in dtypes
    int8 = any(op.startswith("constexpr_affine_dequantize") or
               op.startswith("constexpr_blockwise_shift_scale") for op in ops)
    want = {"fp32": (False, False), "fp16": (True, False), "int8": (True, True)}.get(precision)
    got = (fp16, int8)
    label = "int8 weights, fp16 compute" if int8 else ("fp16" if fp16 else "fp32")
    return Finding("precision", got == want, f"{label} ({len(ops)} op types)" +
                   ("" if got == want else f"; the manifest says {precision}"))

