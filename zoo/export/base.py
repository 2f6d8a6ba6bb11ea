"""The format interface: one :class:`Exporter` subclass owns everything about its format.

A format declares its file suffix, what it supports (precisions, dynamic sizes, backports,
input types), how to export (``prepare`` then ``save``), how to read back the manifest it
embedded, whether its runtime exists on this machine, and, through a *runtime module*, how
to load an artifact and run one input. ``zoo verify``, ``zoo run --artifact``, ``zoo info``'s
format matrix and the CLI's option checks ask the exporter; nothing outside the format's
plugin names a format.

The runtime module (``Exporter.runtime``, a dotted module name) must be self-contained: it
may import only its runtime (``torch``, ``onnxruntime``, ...), never zoo or torchvision,
because ``zoo verify`` sends its *source* to an isolated child process (``python -I``, a
private working folder, a time limit) that loads the artifact the way an app would. It
defines::

    REQUIRES: tuple[str, ...]          # import names the runtime needs, e.g. ("onnxruntime",)
    def load(path: str, options: dict) -> Callable[[torch.Tensor], Any]
        # the artifact as a callable on a float32 [1, 3, H, W] tensor; returns a tensor, a
        # dict of tensors, or a list/tuple whose first item is the prediction
    def read_embedded(path: str) -> str | None      # optional: the embedded manifest JSON

``options`` holds ``manifest.export.options`` plus ``threads``. ``zoo run --artifact``
imports the same module in-process, so one loader serves both.
"""

from __future__ import annotations

import abc
import functools
import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.catalog.schema import ModelCard
    from zoo.export.manifest import Manifest

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ExportOptions:
    """What the user asked for; every field shapes the artifact and the cache key."""

    input_size: tuple[int, int]
    precision: str = "fp32"
    keep_aux: bool = False
    bytecode_version: int | None = None
    dynamic_size: tuple[int, int] | None = None
    input_type: str = "tensor"  # or "image" where the format takes images (Core ML)
    #: Format-specific facts, e.g. {"engine": "qnnpack", "calibrate": "synthetic"}.
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form recorded in the manifest (``export.options``)."""
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        data["dynamic_size"] = list(self.dynamic_size) if self.dynamic_size else None
        extra = data.pop("extra")
        return {**data, **extra}


def default_extra(precision: str, extra_options: Any, *, engine: str | None = None,
                  calibrate: Any = None) -> dict[str, Any]:
    """The format-specific facts an export gets when the user names none: int8 calibrates on
    the synthetic set and, where the format takes an engine, runs on ``qnnpack`` (ARM phones).
    ``calibrate``: the fingerprint of the user's calibration folder, when there is one.
    ``zoo fetch``, ``zoo sync`` and ``zoo bench`` all ask here, so they share cache entries."""
    extra: dict[str, Any] = {}
    if engine is not None:
        extra["engine"] = engine
    elif precision == "int8" and "engine" in extra_options:
        extra["engine"] = "qnnpack"
    if calibrate is not None:
        extra["calibrate"] = calibrate
    elif precision == "int8":
        extra["calibrate"] = "synthetic"
    return extra


@dataclass
class Prepared:
    """A model made ready for saving, and the facts of how."""

    module: Any
    method: str  # "script", "trace" or "export"
    optimizations: dict[str, str]
    bytecode_version: int | None = None
    operators: list[str] | None = None
    #: The artifact only accepts the example's shape, so the golden inputs must use it.
    static_shape: bool = False
    #: What the exporter's ``presave`` computed ahead for its ``save`` (its own business).
    presaved: Any = None


@dataclass(frozen=True)
class Finding:
    """One structural check of an artifact made without running it (``Exporter.inspect``)."""

    name: str
    ok: bool
    detail: str


@functools.cache
def zoo_extras() -> frozenset[str]:
    """The optional extras zoo's own distribution declares (``executorch``, ``onnx``, ...)."""
    try:
        from importlib.metadata import PackageNotFoundError, metadata

        return frozenset(metadata("zoo").get_all("Provides-Extra") or ())
    except PackageNotFoundError:
        return frozenset()


@functools.cache
def module_installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found, not imported). Asked once per process:
    which extras are installed does not change while zoo runs (``module_installed.cache_clear()``
    after installing one from the same process)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


class Exporter(abc.ABC):
    """One artifact format. Subclass, set the class attributes, implement the steps."""

    name: ClassVar[str]
    suffix: ClassVar[str]  # ".pt", ".mlpackage", ...
    description: ClassVar[str]
    #: Why the format's runtime is deprecated and what replaces it, or None.
    deprecated: ClassVar[str | None] = None
    #: The artifact is a folder (Core ML ``.mlpackage``), not a single file.
    artifact_is_dir: ClassVar[bool] = False
    #: Precisions the format exports; the first is the default.
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: The artifact returns the model's dict (TorchScript) rather than the prediction tensor.
    keeps_dict_output: ClassVar[bool] = True
    #: The artifact accepts only its export size (unless ``--dynamic-size`` gave a range).
    fixed_input_size: ClassVar[bool] = False
    #: ``--dynamic-size MIN:MAX`` is supported.
    dynamic_size: ClassVar[bool] = False
    #: ``--bytecode-version N`` (backport for older runtimes) is supported.
    backports: ClassVar[bool] = False
    #: Input kinds: "tensor" (normalised float NCHW) and/or "image" (pixels; mean/std inside).
    input_types: ClassVar[tuple[str, ...]] = ("tensor",)
    #: ``(import name, what to install)`` pairs needed at export time. The second item is
    #: one of zoo's own extras (``("onnx", "onnx")`` -> ``pip install 'zoo[onnx]'``) or, for a
    #: third-party format, a pip requirement (``("openvino", "openvino>=2025")``).
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: The whole install line shown when a requirement is missing, when a plugin wants its own
    #: (e.g. ``"pip install 'zoo-openvino[runtime]'"``); default: derived from ``requires``.
    install_hint: ClassVar[str | None] = None
    #: Dotted name of the self-contained runtime module (see the module docstring).
    runtime: ClassVar[str]
    #: Keys of ``ExportOptions.extra`` the format understands besides "calibrate" (int8),
    #: e.g. ("engine",); the CLI refuses the others for this format.
    extra_options: ClassVar[tuple[str, ...]] = ()

    # -- what the format can do ----------------------------------------------------------

    def supports(self, card: ModelCard) -> str | None:
        """None when ``card`` is known to export to this format, else the reason it is not."""
        return None

    def precisions_for(self, card: ModelCard) -> tuple[str, ...]:
        """Precisions that work for ``card`` (default: all of ``precisions``)."""
        return self.precisions if self.supports(card) is None else ()

    def missing_extra(self) -> str | None:
        """The pip line that installs what export needs, or None when it is installed."""
        for module, extra in self.requires:
            if not module_installed(module):
                return self.install_line(extra)
        return None

    def install_line(self, extra: str) -> str:
        """``install_hint``, else ``pip install 'zoo[EXTRA]'`` for one of zoo's own extras,
        else ``pip install 'REQUIREMENT'`` (a third-party format names its requirement)."""
        if self.install_hint:
            return self.install_hint
        return f"pip install 'zoo[{extra}]'" if extra in zoo_extras() else \
            f"pip install '{extra}'"

    def check_available(self) -> None:
        """Raise a usage error with the exact install line when an optional extra is missing."""
        line = self.missing_extra()
        if line is not None:
            raise UsageError(f"format {self.name!r} needs an optional extra: {line}")

    def check_options(self, options: ExportOptions, card: ModelCard) -> None:
        """Raise :class:`UsageError` for options this format cannot honour (before any work)."""
        if options.precision not in self.precisions:
            raise UsageError(
                f"--precision {options.precision} is not available for --format {self.name} "
                f"(it exports {', '.join(self.precisions)})"
            )
        if options.dynamic_size and not self.dynamic_size:
            raise UsageError(f"--dynamic-size is not supported by --format {self.name}")
        if options.bytecode_version is not None and not self.backports:
            raise UsageError(f"--bytecode-version is not supported by --format {self.name}")
        unknown = sorted(set(options.extra) - {"calibrate", *self.extra_options})
        if unknown:
            raise UsageError(f"--{unknown[0].replace('_', '-')} is not supported by --format "
                             f"{self.name}")
        if options.input_type not in self.input_types:
            raise UsageError(
                f"--input-type {options.input_type} is not supported by --format {self.name} "
                f"(it takes {', '.join(self.input_types)})"
            )

    def runtime_unavailable(self) -> str | None:
        """Why artifacts of this format cannot run on this machine, or None when they can.

        The default checks the runtime module's ``REQUIRES`` import names."""
        from zoo.export.runtime import runtime_requires

        for module in runtime_requires(self.runtime):
            if not module_installed(module):
                extra = next((e for m, e in self.requires if m == module), None)
                hint = f" ({self.install_line(extra or '')})" if extra or self.install_hint \
                    else ""
                return f"the {self.name} runtime needs the Python package {module!r}{hint}"
        return None

    def default_precision(self) -> str:
        return self.precisions[0]

    # -- export --------------------------------------------------------------------------

    def quantize(
        self, model: nn.Module, batches: list[Tensor], card: ModelCard, options: ExportOptions
    ) -> tuple[Any, dict[str, Any]]:
        """For formats whose int8 path quantizes the eager model before capture: return the
        quantized model and its facts (``{"method": ..., ...}``). Formats that quantize
        during conversion (Core ML, LiteRT, ONNX QDQ) do it in ``prepare``/``save``."""
        raise UsageError(f"format {self.name!r} has no int8 support")

    #: ``quantize`` runs on the eager model before ``prepare`` (TorchScript FX, ExecuTorch PT2E).
    quantizes_eager_model: ClassVar[bool] = False
    #: ``prepare`` may run while the eager golden inputs run through the same model on
    #: another thread: it neither changes the model nor patches torch process-wide (as FX
    #: tracing and ``torch.export`` do). True only where that is known (TorchScript, lite).
    prepare_alongside_eager: ClassVar[bool] = False

    @abc.abstractmethod
    def prepare(
        self, model: nn.Module, example: Tensor, card: ModelCard, options: ExportOptions,
        calibration: list[Tensor] | None = None,
    ) -> Prepared:
        """Capture (script/trace/export/convert) and optimise ``model``; write nothing.

        ``calibration`` holds normalised input batches for int8 formats that quantize during
        conversion (None otherwise)."""

    def golden_from_artifact(self, options: ExportOptions) -> bool:
        """Record the golden outputs by running the saved artifact (in this process, through
        the runtime module) instead of the eager model: for conversions that change the
        numbers on purpose. Default: int8 made during conversion (not by ``quantize``).
        Fidelity to fp32 is recorded apart."""
        return options.precision == "int8" and not self.quantizes_eager_model

    def tolerance(self, options: ExportOptions) -> tuple[float, float]:
        """``(atol, rtol)`` of the parity check: ``|Δ| <= atol + rtol * max|reference|``."""
        if options.precision == "fp16":
            return 1e-3, 1e-2
        if options.precision == "int8":
            # int8 kernels (another CPU's, or the quantized eager reference's) may round an
            # activation a quantization step apart (about 1/128 of the output range): allow two.
            return 1e-4, 2e-2
        return 1e-4, 1e-5

    @abc.abstractmethod
    def save(self, prepared: Prepared, path: Path, embedded: dict[str, str]) -> None:
        """Write the artifact to ``path`` (inside a fresh staging folder) with ``embedded``
        (file name -> text; ``manifest.json`` at least) stored inside it. Same inputs must give
        the same bytes. The caller moves it into place atomically and cleans up on failure."""

    def presave(self, prepared: Prepared) -> None:
        """Optional: the part of ``save`` that needs no embedded files (serialising, say),
        done ahead: zoo calls it after ``prepare`` while the golden inputs still run on other
        threads, then calls ``save``. Keep the result on ``prepared.presaved``; ``save`` must
        give the same bytes with or without it. Default: nothing."""
        return None

    def check_container(self, path: Path) -> str | None:
        """Why the artifact's container is refused (duplicate, unsafe or oversized entries,
        external data, links in a folder ...), or None. Parses only, on untrusted bytes;
        called by ``zoo verify`` and before any artifact is loaded (see
        :mod:`zoo.export.containers` for the shared checker)."""
        return None

    def read_embedded(self, path: Path) -> str | None:
        """The manifest JSON embedded in the artifact, or None. Runs in zoo's process on
        untrusted bytes: it must not execute the artifact (parse the container only)."""
        return None

    def inspect(self, path: Path, manifest: Manifest) -> list[Finding]:
        """Structural checks made without running the artifact (inputs, outputs, shapes,
        metadata against the manifest's contract). Used by ``zoo verify`` always, and as the
        whole check where the runtime is unavailable."""
        return []

    def accepted_size(self, manifest: Manifest) -> tuple[int, ...] | None:
        """Input sizes the artifact accepts: ``(H, W)`` when fixed, ``(min, max, -1, -1)``
        for a ``--dynamic-size`` range, None when any size works."""
        if not self.fixed_input_size:
            return None
        dynamic = manifest.export.options.get("dynamic_size")
        if dynamic:
            return (int(dynamic[0]), int(dynamic[1]), -1, -1)
        return (manifest.export.input_shape[2], manifest.export.input_shape[3])
