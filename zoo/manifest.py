"""The artifact manifest: what an app needs to run an exported model correctly, and the proof.

Written beside every artifact as ``<artifact>.manifest.json`` and embedded inside it where the
format allows (``extra/manifest.json`` in TorchScript and lite archives). The embedded copy
cannot contain the artifact's own hash, so ``artifact`` is ``null`` there; everything else is
identical. ``zoo schema manifest`` prints the JSON Schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from zoo.schema import RGB, ModelCard, OutputContract, Preprocessing

MANIFEST_VERSION = 1
EMBEDDED_NAME = "manifest.json"
SIDECAR_SUFFIX = ".manifest.json"
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
    source: str = Field(description="Card weights name, URL or file the weights came from.")
    url: str | None = None
    sha256: str | None = Field(default=None, description="Full sha256 of the weights file.")


class ExportFacts(_Strict):
    """How the artifact was made."""

    format: str = Field(description="Export format, e.g. 'torchscript', 'lite'.")
    file: str = Field(description="Artifact file name (no folder).")
    options: dict[str, Any] = Field(description="The options that shaped the export.")
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
    operators_file: str | None = Field(
        default=None, description="YAML list of root operators for a selective mobile build."
    )


class GoldenInput(_Strict):
    """A seeded input anyone can regenerate with torch alone (see docs/manifest.md)."""

    seed: int
    shape: list[int]
    recipe: str = Field(
        default="x = torch.rand(shape, generator=torch.Generator().manual_seed(seed)); "
        "x = (x - mean[None, :, None, None]) / std[None, :, None, None]",
        description="How to rebuild the input: uniform [0, 1) pixels, then the card's mean/std.",
    )
    mean: list[float]
    std: list[float]


class GoldenSample(_Strict):
    index: list[int] = Field(description="[n, c, h, w] position in the output.")
    value: float


class GoldenOutput(_Strict):
    """The eager model's output on the golden input (before any export step)."""

    shape: list[int]
    abs_max: float = Field(description="Largest |value| in the output: the scale of the check.")
    samples: list[GoldenSample]
    channel_means: list[float]
    argmax_histogram: list[int] = Field(description="Pixel count per class of the argmax.")
    sha256: str = Field(description="sha256 of the float32 output bytes (bit-exactness hint).")


class Golden(_Strict):
    input: GoldenInput
    output: GoldenOutput
    atol: float = Field(description="Absolute part of the parity tolerance.")
    rtol: float = Field(
        description="Relative part: a value passes when |Δ| <= atol + rtol * output.abs_max."
    )


class QuantizationFacts(_Strict):
    """How an int8 artifact was made and how close it stays to fp32."""

    scheme: Literal["int8"]
    method: str = Field(description="'fx' (TorchScript/lite) or 'pt2e' (ExecuTorch).")
    details: dict[str, str] = Field(description="Engine, quantizer, granularity, ...")
    calibration: dict[str, Any] = Field(
        description="'source' is 'images' (--calibrate DIR) or 'synthetic' (flagged)."
    )
    sqnr_db: float = Field(description="SQNR of int8 logits vs fp32 on the calibration set.")
    argmax_agreement: float = Field(description="Share of pixels whose argmax matches fp32.")


class ArtifactFacts(_Strict):
    file: str
    size: int
    sha256: str


class Manifest(_Strict):
    """Everything about one exported artifact."""

    manifest_version: int = MANIFEST_VERSION
    untrained: bool = Field(description="True when exported without trained weights.")
    warning: str | None = Field(default=None, description="A loud warning, e.g. UNTRAINED.")
    model: ModelFacts
    output: OutputContract = Field(description="The artifact's output, as exported.")
    weights: WeightsFacts
    export: ExportFacts
    golden: Golden
    quantization: QuantizationFacts | None = Field(
        default=None, description="Present for --quantize exports; the golden output is the "
        "quantized model's own (parity), fidelity to fp32 is recorded here."
    )
    artifact: ArtifactFacts | None = Field(
        default=None, description="Hash of the artifact file (sidecar only, null when embedded)."
    )

    def embedded(self) -> Manifest:
        """The copy stored inside the artifact (no self-hash)."""
        return self.model_copy(update={"artifact": None})

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, fixed indentation, trailing newline (reproducible)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


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
