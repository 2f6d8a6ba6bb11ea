"""The artifact manifest: what an app needs to run an exported model correctly, and the proof.

Written beside every artifact as ``<artifact>.manifest.json`` and embedded inside it where the
format allows (``extra/manifest.json`` in TorchScript and lite archives). The embedded copy
cannot contain the artifact's own hash, so ``artifact`` is ``null`` there; everything else is
identical. ``zoo schema manifest`` prints the JSON Schema.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from zoo._core.names import SHA256_RE, SIDECAR_SUFFIX
from zoo.catalog.schema import RGB, ModelCard, OutputContract, Preprocessing

MANIFEST_VERSION: Literal[2] = 2
EMBEDDED_NAME = "manifest.json"
UNTRAINED_WARNING = (
    "UNTRAINED: exported with --weights none; the weights are random and the predictions "
    "are meaningless. Do not ship this artifact."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelFacts(_Strict):
    """The card subset an app needs at run time."""

    name: str
    family: str
    description: str
    license: str
    plugin: str | None
    num_classes: int
    labels: list[str]
    palette: list[RGB]
    palettes: dict[str, list[RGB]]
    preprocessing: Preprocessing


class WeightsFacts(_Strict):
    """Which weights went into the artifact."""

    untrained: bool = Field(description="True for --weights none: random initialisation.")
    source: str = Field(description="What the weights are, never how this machine obtained "
                        "them (that would make one export identity two byte strings): 'NAME "
                        "(the card's weights)' when their sha256 is a card entry's pin, 'NAME "
                        "(the card's weights, matched by their sha256 prefix)', 'weights that "
                        "are not the card's, identified by their sha256', or 'none "
                        "(untrained)'.")
    url: str | None = Field(default=None, description="The card's first URL for these "
                            "weights (redacted); the bytes may have come from a mirror, the "
                            "team store or a local file with the same sha256.")
    sha256: str | None = Field(default=None, description="Full sha256 of the weights file.")


BARE_NAME = r"^(?!\.{1,2}$)[^/\\\x00-\x1f\x7f]{1,255}$"
RELATIVE_PATH = r"^(?!/)(?!.*(^|/)\.{1,2}(/|$))[^\\\x00-\x1f\x7f]{1,1024}$"
_BARE = re.compile(BARE_NAME)
_RELATIVE = re.compile(RELATIVE_PATH)
HEX64 = SHA256_RE.pattern
MAX_SIDE = 8192  # golden inputs larger than this are refused (they would only cost memory)


def _bare(value: str | None) -> str | None:
    if value is not None and not _BARE.fullmatch(value):
        raise ValueError(f"{value!r} must be a bare file name (no folders, no '..')")
    return value


BareName = Annotated[str, AfterValidator(_bare), Field(
    description="A bare file name inside the manifest's folder: no '/', '\\', '..' or "
    "control characters.", json_schema_extra={"pattern": BARE_NAME})]


def _relative(value: str) -> str:
    if not _RELATIVE.fullmatch(value) or any(part in ("", ".", "..") for part in
                                              value.split("/")):
        raise ValueError(f"{value!r} must be a relative path inside the artifact folder")
    return value


RelativePath = Annotated[str, AfterValidator(_relative), Field(
    description="A '/'-separated path inside the artifact folder, no '..'.",
    json_schema_extra={"pattern": RELATIVE_PATH})]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class CodeIdentity(_Strict):
    """The code that built the model or wrote the artifact (part of the export identity)."""

    plugin: str = Field(description="Plugin (entry-point) name, or 'in-process'.")
    distribution: str = Field(description="Distribution name and version, e.g. 'zoo 0.1.0'.")
    source_sha256: str = Field(description="sha256 over the source files of the plugin's "
                               "package.", json_schema_extra={"pattern": HEX64})


class ExportFacts(_Strict):
    """How the artifact was made."""

    format: str = Field(description="Export format, e.g. 'torchscript', 'lite', 'coreml'.")
    file: BareName
    precision: str = Field(default="fp32", description="'fp32', 'fp16' or 'int8'.")
    options: dict[str, Any] = Field(description="The options that shaped the export.")
    identity: str = Field(
        description="sha256 of everything that determines the bytes (card, weights, format, "
        "options, builder and format code, versions): the export cache and team store key.",
        json_schema_extra={"pattern": HEX64})
    builder: CodeIdentity
    exporter: CodeIdentity
    zoo_version: str
    torch_version: str
    bytecode_version: int | None = Field(
        default=None, description="Lite interpreter bytecode version (lite only)."
    )
    input_shape: list[int] = Field(description="Example input shape used: [1, 3, H, W].")
    method: Literal["script", "trace", "export"] = Field(
        description="How the graph was captured; 'trace' is a fallback and is data-dependent."
    )
    optimizations: dict[str, str] = Field(
        description="Each optimisation and what happened, e.g. {'freeze': 'applied', "
        "'optimize_for_mobile': 'skipped: XNNPACK not available in this torch'}."
    )
    operators_file: BareName | None = Field(
        default=None, description="YAML list of root operators for a selective mobile build."
    )


class GoldenInput(_Strict):
    """A golden input anyone can rebuild with torch alone (recipes in docs/manifest.md)."""

    kind: Literal["noise", "scene"] = Field(
        description="'noise': uniform [0, 1) pixels; 'scene': the procedural outdoor scene "
        "(8-bit pixels, then / scale).")
    seed: int
    shape: list[int] = Field(min_length=4, max_length=4, description="[1, 3, H, W]")
    scale: Finite = Field(default=255.0, gt=0, description="Pixel divisor (scene only).")
    mean: list[Finite] = Field(min_length=3, max_length=3)
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        min_length=3, max_length=3)

    @field_validator("shape")
    @classmethod
    def _bounded(cls, shape: list[int]) -> list[int]:
        if shape[:2] != [1, 3] or not all(1 <= side <= MAX_SIDE for side in shape[2:]):
            raise ValueError(f"golden shape {shape} must be [1, 3, H, W] with 1 <= H, W <= "
                             f"{MAX_SIDE}")
        return shape


class GoldenSample(_Strict):
    index: list[int] = Field(description="[n, c, h, w] position in the output.")
    value: Finite


class ArgmaxGrid(_Strict):
    stride: list[int] = Field(min_length=2, max_length=2, description="Row and column step.")
    labels: str = Field(description="base64(zlib(uint16 LE argmax)) of out[0].argmax(0)"
                        "[::sy, ::sx], row-major.")


class GoldenOutput(_Strict):
    """A reference output's summary."""

    shape: list[int]
    non_finite: int = Field(default=0, description="Count of NaN/Inf values (must be 0).")
    abs_max: Finite = Field(description="Largest |value| in the output: the scale of the check.")
    samples: list[GoldenSample]
    channel_means: list[Finite]
    argmax_histogram: list[int] = Field(description="Pixel count per class of the argmax.")
    argmax_grid: ArgmaxGrid
    sha256: str = Field(description="sha256 of the float32 output bytes (bit-exactness hint).")


class GoldenCase(_Strict):
    name: str = Field(description="'noise' or 'scene'.")
    input: GoldenInput
    output: GoldenOutput


class Golden(_Strict):
    """The parity check: reference outputs on the golden inputs and the limits that judge."""

    reference: Literal["eager", "artifact"] = Field(
        default="eager", description="'eager': the eager (or int8-quantized eager) model, "
        "before any export step; 'artifact': the saved artifact run at export time (int8 "
        "made during conversion); fidelity to fp32 is then in 'quantization'.")
    cases: list[GoldenCase] = Field(min_length=1)
    atol: Finite = Field(ge=0, description="Absolute part of the parity tolerance.")
    rtol: Finite = Field(
        ge=0, description="Relative part: a value passes when |Δ| <= atol + rtol * output.abs_max."
    )
    min_argmax_agreement: Finite = Field(ge=0, le=1, description="Share of argmax-grid pixels "
                                         "that must agree with the reference.")
    min_sqnr_db: Finite | None = Field(default=None, description="int8: the sampled SQNR "
                                       "against the reference must reach this.")


class QuantizationFacts(_Strict):
    """How a reduced-precision artifact was made and how close it stays to fp32."""

    scheme: Literal["int8", "fp16"]
    method: str = Field(description="'fx' (TorchScript/lite), 'pt2e' (ExecuTorch), "
                        "'qdq' (ONNX), 'coreml', 'litert', ...")
    details: dict[str, str] = Field(description="Engine, quantizer, granularity, ...")
    calibration: dict[str, Any] = Field(
        description="'source' is 'images' (--calibrate DIR) or 'synthetic' (flagged)."
    )
    sqnr_db: Finite | None = Field(description="SQNR of the logits vs fp32 on the calibration "
                                   "set; null when not measurable here (no runtime).")
    argmax_agreement: Finite | None = Field(description="Share of pixels whose argmax matches "
                                            "fp32.")


class FileFacts(_Strict):
    path: RelativePath
    size: int = Field(ge=0)
    sha256: str = Field(json_schema_extra={"pattern": HEX64})


class ArtifactFacts(_Strict):
    file: BareName
    size: int = Field(ge=0, description="Bytes (a folder artifact: the sum of its files).")
    sha256: str = Field(description="sha256 of the file; for a folder artifact, of its "
                        "'files' list (see docs/manifest.md).", json_schema_extra={
                            "pattern": HEX64})
    files: list[FileFacts] | None = Field(
        default=None, description="Folder artifacts (.mlpackage): every file inside it.")


class Manifest(_Strict):
    """Everything about one exported artifact."""

    manifest_version: Literal[2] = MANIFEST_VERSION
    untrained: bool = Field(description="True when exported without trained weights.")
    warning: str | None = Field(default=None, description="A loud warning, e.g. UNTRAINED.")
    model: ModelFacts
    output: OutputContract = Field(description="The artifact's output, as exported.")
    weights: WeightsFacts
    export: ExportFacts
    golden: Golden
    quantization: QuantizationFacts | None = Field(
        default=None, description="Present for fp16/int8 exports: how, and fidelity to fp32."
    )
    artifact: ArtifactFacts | None = Field(
        default=None, description="Hash of the artifact (sidecar only, null when embedded)."
    )

    def embedded(self) -> Manifest:
        """The copy stored inside the artifact (no self-hash)."""
        return self.model_copy(update={"artifact": None})

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, fixed indentation, small arrays and records on one
        line, trailing newline (reproducible)."""
        return canonical_json(self.model_dump(mode="json")) + "\n"


def _flat(value: Any) -> bool:
    """A scalar, or a list/dict of scalars and scalar lists: printed on one line."""
    if isinstance(value, list):
        return all(not isinstance(v, dict | list) or (isinstance(v, list) and all(
            not isinstance(x, dict | list) for x in v)) for v in value)
    if isinstance(value, dict):
        return all(not isinstance(v, dict | list) or (isinstance(v, list) and all(
            not isinstance(x, dict | list) for x in v)) for v in value.values())
    return True


def canonical_json(value: Any, indent: int = 0) -> str:
    """Deterministic JSON (sorted keys) that stays readable: nested objects are indented by
    two spaces, flat arrays and flat records are written on one line."""
    if _flat(value) and not (isinstance(value, dict) and len(value) > 4):
        return json.dumps(value, sort_keys=True, ensure_ascii=True)
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {canonical_json(v, indent + 2)}"
                 for k, v in sorted(value.items())]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}" if items else "{}"
    items = [f"{inner}{canonical_json(v, indent + 2)}" for v in value]
    return "[\n" + ",\n".join(items) + f"\n{pad}]" if items else "[]"


def tree_digest(files: list[FileFacts]) -> str:
    """The sha256 of a folder artifact: over ``path\0size\0sha256\n`` lines sorted by path."""
    lines = "".join(f"{f.path}\0{f.size}\0{f.sha256}\n" for f in sorted(files,
                                                                       key=lambda f: f.path))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def sidecar_paths(path: Path) -> tuple[Path, Path]:
    """(artifact, sidecar manifest) for a path naming either one."""
    if path.name.endswith(SIDECAR_SUFFIX):
        return path.with_name(path.name[: -len(SIDECAR_SUFFIX)]), path
    return path, path.with_name(path.name + SIDECAR_SUFFIX)


def model_facts(card: ModelCard) -> ModelFacts:
    """The card subset that goes into a manifest."""
    return ModelFacts(
        name=card.name,
        family=card.family,
        description=card.description,
        license=card.license,
        plugin=card.plugin,
        num_classes=card.num_classes,
        labels=list(card.labels),
        palette=list(card.palette),
        palettes={k: list(v) for k, v in card.palettes.items()},
        preprocessing=card.preprocessing,
    )
