"""The plan file (``zoo.toml``): the set of artifacts an app needs, as a small matrix.

```toml
[output]
folder = "models"                 # relative to the plan file
layout = "{model}"                # sub-folder per artifact: {model} {format} {precision}

[[artifacts]]
models = ["lraspp_mobilenet_v3_large", "deeplabv3_*"]   # names or globs
formats = ["pte", "tflite"]
precisions = ["fp32", "int8"]     # default: each format's own default
input_sizes = ["520x520"]         # default: each card's input_size
weights = "default"               # "default" (the card's), a weights NAME, or "none"
keep_aux = false
```

Everything is validated like a card: unknown keys and bad values are errors naming the file,
the line and the field; ``zoo schema plan`` prints the JSON Schema. :func:`expand` turns a
plan into its entries, one per artifact, in a stable order.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zoo._core.names import inside
from zoo.errors import CardError, UsageError

PLAN_NAME = "zoo.toml"
MAX_PLAN_BYTES = 4 << 20
MAX_ENTRIES = 100_000
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_LAYOUT_FIELDS = {"model", "format", "precision", "size"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutputSpec(_Strict):
    """Where the artifacts go."""

    folder: str = Field(default="models", min_length=1, max_length=1000,
                        description="Output folder, relative to the plan file.")
    layout: str = Field(default="{model}", max_length=200,
                        description="Sub-folder of each artifact; fields {model}, {format}, "
                        "{precision}, {size}; '' puts every artifact in the folder itself.")

    @field_validator("folder")
    @classmethod
    def _relative(cls, value: str) -> str:
        if not inside(value):
            raise ValueError("must be a relative folder inside the plan's folder")
        return value

    @field_validator("layout")
    @classmethod
    def _layout(cls, value: str) -> str:
        names = set(re.findall(r"\{(\w+)\}", value))
        if names - _LAYOUT_FIELDS:
            raise ValueError(f"unknown field {sorted(names - _LAYOUT_FIELDS)[0]!r}; use "
                             f"{', '.join('{' + n + '}' for n in sorted(_LAYOUT_FIELDS))}")
        literal = re.sub(r"\{\w+\}", "x", value)
        if not inside(literal):
            raise ValueError("must stay inside the output folder")
        return value


class ArtifactSpec(_Strict):
    """One row of the matrix: every model x format x precision x input size."""

    models: list[str] = Field(min_length=1, max_length=1000,
                              description="Model names or globs ('deeplabv3_*').")
    formats: list[str] = Field(min_length=1, max_length=50)
    precisions: list[Literal["fp32", "fp16", "int8"]] | None = Field(
        default=None, description="Default: each format's own default precision.")
    input_sizes: list[str] | None = Field(default=None, description="HEIGHTxWIDTH, e.g. 520x520;"
                                          " default: each card's input_size.")
    weights: str = Field(default="default", max_length=200,
                         description="'default' (the card's), a weights NAME, or 'none'.")
    keep_aux: bool = False

    @field_validator("input_sizes")
    @classmethod
    def _sizes(cls, value: list[str] | None) -> list[str] | None:
        for size in value or []:
            match = _SIZE.match(size)
            if not match or not all(0 < int(g) <= 8192 for g in match.groups()):
                raise ValueError(f"{size!r} is not HEIGHTxWIDTH with sides 1..8192")
        return value


class Plan(_Strict):
    """A zoo.toml."""

    output: OutputSpec = Field(default_factory=OutputSpec)
    artifacts: list[ArtifactSpec] = Field(min_length=1, max_length=1000)


@dataclass(frozen=True, order=True)
class Entry:
    """One artifact of an expanded plan."""

    key: str  # "model/format/precision/HxW": unique, sorts stably
    model: str
    format: str
    precision: str
    input_size: tuple[int, int]
    weights: str
    keep_aux: bool
    folder: str  # relative to the output folder

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "model": self.model, "format": self.format,
                "precision": self.precision, "input_size": list(self.input_size),
                "weights": self.weights, "keep_aux": self.keep_aux, "folder": self.folder}


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line a validation error points at: the n-th [[artifacts]] block, then its key."""
    lines = text.splitlines()
    start, section = 0, None
    if loc and loc[0] == "artifacts" and len(loc) > 1 and isinstance(loc[1], int):
        headers = [i for i, ln in enumerate(lines) if ln.strip() == "[[artifacts]]"]
        if loc[1] < len(headers):
            start, section = headers[loc[1]], loc[2] if len(loc) > 2 else None
    elif loc and loc[0] == "output":
        start = next((i for i, ln in enumerate(lines) if ln.strip() == "[output]"), 0)
        section = loc[1] if len(loc) > 1 else None
    if section is None:
        return start + 1 if start else None
    for i in range(start, len(lines)):
        if re.match(rf"\s*{re.escape(str(section))}\s*=", lines[i]):
            return i + 1
        if i > start and lines[i].strip().startswith("["):
            break
    return start + 1


def read_plan(path: Path) -> Plan:
    """Parse and validate a plan file; CardError naming the file, the line and the field."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the plan {path}: {exc.strerror or exc}; write a "
                         f"{PLAN_NAME} (see `zoo sync --help`) or pass --plan PATH") from None
    if len(raw) > MAX_PLAN_BYTES:
        raise CardError(f"{path}: {len(raw)} bytes is larger than any plan")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CardError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        line = _line_of(text, loc)
        field = ".".join(str(p) for p in loc)
        where = f"{path}:{line}" if line else str(path)
        message = err["msg"].removeprefix("Value error, ")
        raise CardError(f"{where}: field {field}: {message}") from None


def plan_schema() -> dict[str, Any]:
    """The JSON Schema of a plan (``zoo schema plan``)."""
    return Plan.model_json_schema()


def expand(plan: Plan, registry: Any) -> list[Entry]:
    """Every artifact the plan asks for, sorted by key; UsageError for a model glob that
    matches nothing, an unknown format, or a format that cannot export a model."""
    from zoo.export import available_formats, get_exporter

    names = registry.names()
    formats = set(available_formats(registry.host))
    found: dict[str, Entry] = {}
    for row in plan.artifacts:
        models: list[str] = []
        for pattern in row.models:
            hits = sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))
            if not hits:
                raise UsageError(f"plan: no model matches {pattern!r}; see `zoo list`")
            models += [m for m in hits if m not in models]
        for fmt in row.formats:
            if fmt not in formats:
                raise UsageError(f"plan: unknown format {fmt!r}; choose from "
                                 f"{', '.join(sorted(formats))}")
            exporter = get_exporter(fmt, registry.host)
            for model in models:
                card = registry.get(model)
                reason = exporter.supports(card)
                if reason is not None:
                    raise UsageError(f"plan: {model} does not export to {fmt}: {reason}")
                sizes = [tuple(int(v) for v in s.split("x")) for s in row.input_sizes] \
                    if row.input_sizes else [tuple(card.preprocessing.input_size)]
                precisions: list[str] = [*(row.precisions or [])] or [exporter.default_precision()]
                for precision in precisions:
                    for size in sizes:
                        h, w = size
                        key = f"{model}/{fmt}/{precision}/{h}x{w}"
                        folder = plan.output.layout.format(model=model, format=fmt,
                                                           precision=precision,
                                                           size=f"{h}x{w}").strip("/")
                        entry = Entry(key, model, fmt, precision, (h, w), row.weights,
                                      row.keep_aux, folder)
                        if key in found and found[key] != entry:
                            raise UsageError(f"plan: {key} is asked for twice with "
                                             "different settings")
                        found[key] = entry
    if len(found) > MAX_ENTRIES:
        raise UsageError(f"plan: {len(found)} artifacts is more than {MAX_ENTRIES}")
    return [found[k] for k in sorted(found)]


def plan_digest(entries: list[Entry]) -> str:
    """A sha256 over the expanded plan (what the lock was made for)."""
    blob = json.dumps([e.as_dict() for e in entries], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
