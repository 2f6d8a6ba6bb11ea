"""The exporter interface every format implements (built-in or from a plugin).

An exporter turns an eval-mode ``nn.Module`` into artifact bytes in two steps, so the manifest
can describe the export before it is embedded: ``prepare`` captures and optimises the graph
and reports what it did; ``save`` writes the artifact with the manifest embedded.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.schema import ModelCard


@dataclass(frozen=True)
class ExportOptions:
    """What the user asked for; every field shapes the artifact and the cache key."""

    input_size: tuple[int, int]
    keep_aux: bool = False
    bytecode_version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_size": list(self.input_size),
            "keep_aux": self.keep_aux,
            "bytecode_version": self.bytecode_version,
            **self.extra,
        }


@dataclass
class Prepared:
    """A model made ready for saving, and the facts of how."""

    module: Any
    method: str
    optimizations: dict[str, str]
    bytecode_version: int | None = None
    operators: list[str] | None = None
    #: The artifact only accepts the example's shape, so the golden input must use it.
    static_shape: bool = False


class Exporter(abc.ABC):
    """One artifact format. Subclass, set the class attributes, implement the two steps."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    description: ClassVar[str]
    #: The format keeps dict outputs (TorchScript does; ExecuTorch returns tensors only).
    keeps_dict_output: ClassVar[bool] = True
    #: Record the golden output at the export size (shape-specialised programs).
    golden_at_export_size: ClassVar[bool] = False
    #: Precisions ``--quantize`` accepts besides fp32.
    quantize_schemes: ClassVar[tuple[str, ...]] = ()
    #: ``(import name, pip extra)`` the format needs at export time, e.g. ("onnx", "onnx").
    requires: ClassVar[tuple[str, str] | None] = None

    def supports(self, card: ModelCard) -> str | None:
        """None when ``card`` is known to export to this format, else the reason it is not."""
        return None

    def check_available(self) -> None:
        """Raise a usage error with the exact install line when an optional extra is missing."""
        if self.requires is None:
            return
        import importlib.util

        module, extra = self.requires
        if importlib.util.find_spec(module) is None:
            raise UsageError(
                f"format {self.name!r} needs the optional extra '{extra}': "
                f"pip install 'zoo[{extra}]'"
            )

    def quantize(
        self, model: nn.Module, batches: list[Tensor], card: ModelCard, options: ExportOptions
    ) -> tuple[Any, dict[str, Any]]:
        """Return an int8 version of ``model`` calibrated on ``batches``, and its facts."""
        raise UsageError(f"format {self.name!r} has no --quantize support")

    @abc.abstractmethod
    def prepare(
        self, model: nn.Module, example: Tensor, card: ModelCard, options: ExportOptions
    ) -> Prepared:
        """Capture (script/trace/export) and optimise ``model``; don't write anything."""

    @abc.abstractmethod
    def save(self, prepared: Prepared, path: Path, extra_files: dict[str, str]) -> None:
        """Write the artifact to ``path`` (a fresh temp location) with ``extra_files`` inside.

        The caller moves the file into place atomically and deletes it on failure.
        """

    def runner_source(self) -> str:
        """Source of the script ``zoo verify`` runs in a fresh process to load and run the
        artifact; it must not import zoo or torchvision. The default handles TorchScript and
        lite archives; formats with their own runtime override this."""
        return (resources.files("zoo.export") / "_runner.py").read_text(encoding="utf-8")

    def read_embedded(self, path: Path, name: str) -> str | None:
        """Read an embedded extra file back, or None when the format cannot hold one."""
        return None
