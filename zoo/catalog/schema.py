"""The model card: every fact an app needs about a registered segmentation model.

The pydantic models here *are* the schema: ``zoo schema`` prints
``ModelCard.model_json_schema()`` so a Swift or Kotlin app can validate a manifest, and the
``Field`` descriptions are its documentation. Cross-field rules (palette length == label count
== channel count, and so on) live in validators whose messages name the field.

Card data is hostile until validated: every number is finite and bounded, every text and list
has a maximum length (limits in :mod:`zoo._core.names`), and ``architecture`` is a builder name a
plugin registered, never an import path. Validators are built on first use (``defer_build``),
so importing this module, or listing models from the compiled registry, stays cheap.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from zoo._core.names import (
    ARCHITECTURE_RE,
    MAX_BYTES,
    MAX_CLASSES,
    MAX_DESCRIPTION,
    MAX_ITEMS,
    MAX_NAME,
    MAX_PARAMS,
    MAX_SIDE,
    MAX_TEXT,
    MAX_URL,
    MAX_VALUE,
    MODEL_NAME_CLASS,
    MODEL_NAME_RE,
    SHA256_PREFIX_RE,
    SHA256_RE,
)

RGB = Annotated[
    tuple[
        Annotated[int, Field(ge=0, le=255)],
        Annotated[int, Field(ge=0, le=255)],
        Annotated[int, Field(ge=0, le=255)],
    ],
    Field(description="An sRGB colour as [r, g, b], each 0..255."),
]
_Bounded = Annotated[float, Field(ge=-MAX_VALUE, le=MAX_VALUE)]
Triple = tuple[_Bounded, _Bounded, _Bounded]
_Positive = Annotated[float, Field(gt=0, le=MAX_VALUE)]
PositiveTriple = tuple[_Positive, _Positive, _Positive]  # expressed in the JSON Schema too
Side = Annotated[int, Field(gt=0, le=MAX_SIDE)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Url = Annotated[str, Field(min_length=1, max_length=MAX_URL)]


def _weights_url(value: str) -> str:
    if not value.lower().startswith(("https://", "http://")) or any(
            ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise ValueError(
            f"weights URL {value[:80]!r} is not an http(s) URL: zoo downloads card weights "
            "over http(s) only (every URL is tried, none is skipped); for a local file use "
            "`zoo fetch NAME --weights PATH`, for another host --mirror BASE")
    return value


WeightsUrl = Annotated[Url, AfterValidator(_weights_url),
                       Field(json_schema_extra={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"})]


def checked_name(value: str, what: str) -> str:
    """``value`` when it is a model/weights name (lowercase, digits, '_'), else ValueError."""
    if not MODEL_NAME_RE.fullmatch(value):
        raise ValueError(f"{what} {value!r} must match {MODEL_NAME_CLASS}+ (lowercase, "
                         "digits, '_')")
    return value


class _Strict(BaseModel):
    # allow_inf_nan=False: every float on a card is finite (NaN/inf are refused by name)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


class Link(_Strict):
    """A paper, training recipe or project page."""

    title: str = Field(max_length=MAX_TEXT, description="What the link is, e.g. 'paper'.")
    url: str = Field(
        max_length=MAX_URL,
        description="Absolute http(s) URL.",
        json_schema_extra={"pattern": "^https?://"},
    )

    @field_validator("url")
    @classmethod
    def _web_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"link {value[:80]!r} must be an absolute http(s) URL")
        return value


class Metric(_Strict):
    """A published quality figure for a set of weights."""

    name: Literal["miou", "pixel_acc"] = Field(
        description="'miou': mean intersection over union; 'pixel_acc': pixel accuracy; in %."
    )
    value: float = Field(ge=0, le=100, description="The figure, in percent.")
    dataset: str = Field(
        max_length=MAX_TEXT, description="Where it was measured, e.g. 'COCO-val2017-VOC-labels'."
    )


class WeightsSource(_Strict):
    """One named set of published weights and how to verify it."""

    name: str = Field(
        max_length=MAX_NAME,
        description="Key used with `--weights NAME`, lowercase [a-z0-9_]+.",
        json_schema_extra={"pattern": MODEL_NAME_RE.pattern},
    )
    urls: list[WeightsUrl] = Field(
        min_length=1, max_length=MAX_ITEMS,
        description="Download URLs, tried in order: absolute http(s) URLs (a local file is "
        "given with `zoo fetch NAME --weights PATH`, a mirror with --mirror / ZOO_MIRROR).",
    )
    sha256: str | None = Field(
        default=None,
        description="Full sha256 of the file (64 lowercase hex).",
        json_schema_extra={"pattern": SHA256_RE.pattern},
    )
    sha256_prefix: str | None = Field(
        default=None,
        description="The 8-hex sha256 prefix torchvision embeds in file names, when the full "
        "hash is not published. Verification then checks the prefix only.",
        json_schema_extra={"pattern": SHA256_PREFIX_RE.pattern},
    )
    size: int | None = Field(default=None, gt=0, le=MAX_BYTES, description="File size in bytes.")
    size_exact: bool = Field(
        default=True,
        description="False when 'size' is only approximate (published rounded); it then bounds "
        "the download instead of being checked exactly.",
    )
    includes_aux: bool = Field(
        default=False,
        description="The state dict holds the auxiliary head (aux_classifier.*) too; the model "
        "is built with its aux head to load it.",
    )
    trained_on: str = Field(
        max_length=MAX_TEXT, description="Training data, e.g. 'COCO train2017 (VOC labels)'."
    )
    metrics: list[Metric] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Published quality."
    )

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        return checked_name(value, "weights name")

    @field_validator("sha256")
    @classmethod
    def _full_hash(cls, value: str | None) -> str | None:
        if value is not None and not SHA256_RE.fullmatch(value):
            raise ValueError(
                f"sha256 {value!r} must be 64 lowercase hex digits; an 8-hex prefix goes in "
                "'sha256_prefix'"
            )
        return value

    @field_validator("sha256_prefix")
    @classmethod
    def _prefix_hash(cls, value: str | None) -> str | None:
        if value is not None and not SHA256_PREFIX_RE.fullmatch(value):
            raise ValueError(f"sha256_prefix {value!r} must be exactly 8 lowercase hex digits")
        return value

    @model_validator(mode="after")
    def _one_hash(self) -> WeightsSource:
        if (self.sha256 is None) == (self.sha256_prefix is None):
            raise ValueError("give exactly one of 'sha256' (64 hex) or 'sha256_prefix' (8 hex)")
        return self

    @property
    def expected_hash(self) -> str:
        """The full hash or the prefix, whichever the card has."""
        return self.sha256 or self.sha256_prefix or ""


class Preprocessing(_Strict):
    """How an app turns camera pixels into the model's input tensor."""

    color_order: Literal["RGB", "BGR"] = Field(default="RGB", description="Channel order.")
    scale_divisor: float = Field(
        default=255.0,
        gt=0,
        le=MAX_VALUE,
        description="Divide 8-bit pixel values by this before normalising (255: to [0, 1]).",
    )
    mean: Triple = Field(description="Per-channel mean subtracted after scaling.")
    std: PositiveTriple = Field(
        description="Per-channel std (each > 0) divided by after subtracting the mean."
    )
    resize: Literal["none", "shorter_side", "exact"] = Field(
        default="none",
        description="'none': keep the image size; 'shorter_side': scale so the shorter edge is "
        "resize_size (aspect kept); 'exact': resize to input_size.",
    )
    resize_size: int | None = Field(
        default=None,
        gt=0,
        le=MAX_SIDE,
        description="Target shorter edge for resize='shorter_side'.",
    )
    interpolation: Literal["bilinear", "nearest", "bicubic"] = Field(
        default="bilinear", description="Interpolation used when resizing."
    )
    antialias: bool = Field(default=True, description="Antialias when downscaling.")
    input_size: tuple[Side, Side] = Field(
        description=f"Default input [height, width] for exports and examples (each <= {MAX_SIDE})."
    )
    layout: Literal["NCHW"] = Field(default="NCHW", description="Tensor layout.")
    dtype: Literal["float32"] = Field(default="float32", description="Input dtype.")

    @model_validator(mode="after")
    def _resize_size_needed(self) -> Preprocessing:
        if self.resize == "shorter_side" and self.resize_size is None:
            raise ValueError("resize='shorter_side' needs 'resize_size'")
        return self


class OutputContract(_Strict):
    """What the model returns and how an app reads it."""

    kind: Literal["dict", "tensor"] = Field(
        description="'dict': a mapping of named tensors (read 'key'); 'tensor': a bare tensor."
    )
    key: str | None = Field(
        default=None,
        max_length=MAX_TEXT,
        description="For kind='dict': the key holding the prediction, e.g. 'out'.",
    )
    optional_keys: list[Text] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="For kind='dict': keys present only with extra heads, e.g. 'aux'.",
    )
    channels: int = Field(
        gt=0, le=MAX_CLASSES, description="Channel count C of the [N, C, H, W] output."
    )
    semantics: Literal["logits", "probabilities"] = Field(
        default="logits", description="What the channels hold; take the argmax over C."
    )

    @model_validator(mode="after")
    def _key_matches_kind(self) -> OutputContract:
        if self.kind == "dict" and not self.key:
            raise ValueError("kind='dict' needs 'key' (the output to read, e.g. 'out')")
        if self.kind == "tensor" and (self.key or self.optional_keys):
            raise ValueError("kind='tensor' takes no 'key' or 'optional_keys'")
        return self


class ModelCard(_Strict):
    """A registered model: identity, weights, preprocessing, output, labels and palette."""

    name: str = Field(
        max_length=MAX_NAME,
        description="CLI key, lowercase [a-z0-9_]+.",
        json_schema_extra={"pattern": MODEL_NAME_RE.pattern},
    )
    family: str = Field(
        max_length=MAX_NAME, description="Architecture family, e.g. 'deeplabv3', 'fcn'."
    )
    task: Literal["semantic_segmentation"] = Field(default="semantic_segmentation")
    description: str = Field(
        max_length=MAX_DESCRIPTION, description="One or two sentences for humans."
    )
    architecture: str = Field(
        max_length=MAX_NAME,
        description="Builder that makes the nn.Module: a key a plugin registered with its "
        "zoo_builders hook. Never an import path: a card cannot make zoo import code.",
        json_schema_extra={"pattern": ARCHITECTURE_RE.pattern},
    )
    plugin: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        description="Plugin that provides this model (filled in by the registry).",
    )
    license: str = Field(
        max_length=MAX_TEXT, description="Licence of the weights/code, SPDX id where possible."
    )
    links: list[Link] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Papers and recipes."
    )
    num_params: int = Field(
        gt=0, le=MAX_PARAMS, description="Parameter count of the built model."
    )
    num_params_with_aux: int | None = Field(
        default=None,
        gt=0,
        le=MAX_PARAMS,
        description="Parameter count with the auxiliary head, if it has one.",
    )
    gflops: float | None = Field(
        default=None, gt=0, le=MAX_VALUE, description="GFLOPs at the reference input."
    )
    num_classes: int = Field(
        gt=0, le=MAX_CLASSES, description="Number of classes = output channels."
    )
    weights: list[WeightsSource] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Published weights."
    )
    default_weights: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        description="Name of the weights `zoo fetch` uses when none are given.",
    )
    preprocessing: Preprocessing
    output: OutputContract
    labels: list[Text] = Field(
        max_length=MAX_CLASSES, description="One class name per output channel, in order."
    )
    palette: list[RGB] = Field(
        max_length=MAX_CLASSES, description="One colour per class, in label order."
    )
    palettes: dict[str, Annotated[list[RGB], Field(max_length=MAX_CLASSES)]] = Field(
        default_factory=dict,
        max_length=MAX_ITEMS,
        description="Named alternative palettes, one colour per class.",
    )

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        return checked_name(value, "name")

    @field_validator("architecture")
    @classmethod
    def _builder_name(cls, value: str) -> str:
        if not ARCHITECTURE_RE.fullmatch(value):
            raise ValueError(
                f"architecture {value!r} must name a builder a plugin registered "
                "([A-Za-z0-9_.-]+); import paths such as 'module:function' are not allowed"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        n = self.num_classes
        if self.output.channels != n:
            raise ValueError(f"output.channels is {self.output.channels} but num_classes is {n}")
        if len(self.labels) != n:
            raise ValueError(f"labels has {len(self.labels)} entries but num_classes is {n}")
        if len(self.palette) != n:
            raise ValueError(f"palette has {len(self.palette)} colours but num_classes is {n}")
        for pname, colours in self.palettes.items():
            if not MODEL_NAME_RE.fullmatch(pname) or len(pname) > MAX_NAME:
                raise ValueError(
                    f"palettes: name {pname[:MAX_NAME]!r} must match {MODEL_NAME_CLASS}+ "
                    f"(at most {MAX_NAME} characters)"
                )
            if len(colours) != n:
                raise ValueError(
                    f"palettes.{pname} has {len(colours)} colours but num_classes is {n}"
                )
        names = [w.name for w in self.weights]
        if len(set(names)) != len(names):
            raise ValueError(f"weights: duplicate names in {names}")
        if self.default_weights is not None and self.default_weights not in names:
            raise ValueError(
                f"default_weights {self.default_weights!r} is not one of the weights {names}"
            )
        return self

    def weights_named(self, name: str) -> WeightsSource | None:
        """The weights source called ``name``, or None."""
        return next((w for w in self.weights if w.name == name), None)

    def palette_named(self, name: str | None) -> list[tuple[int, int, int]]:
        """The default palette (``None`` or 'default') or a named alternative."""
        return choose_palette(self.name, self.palette, self.palettes, name)


def choose_palette(
    model: str,
    default: list[tuple[int, int, int]],
    named: dict[str, list[tuple[int, int, int]]],
    name: str | None,
) -> list[tuple[int, int, int]]:
    """``default`` for ``None``/'default', else ``named[name]``; unknown names list choices."""
    if name in (None, "default"):
        return list(default)
    if name not in named:
        from zoo.errors import UsageError

        choices = ", ".join(["default", *named])
        raise UsageError(f"model {model!r} has no palette {name!r}; choose from {choices}")
    return list(named[name])
