"""TorchScript (``.pt``) and lite-interpreter (``.ptl``) exporters.

Both script the model (tracing a wrapper only where scripting fails, and saying so), freeze
it, and apply ``optimize_for_mobile`` only when this torch has XNNPACK. The archive's inner
folder name comes from the file name, so callers save under the final name in a temp folder.
"""

from __future__ import annotations

import functools
import io
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo_plugins.formats.lite_archive import canonicalize

from zoo.errors import ExportError, UsageError
from zoo.export.base import Exporter, ExportOptions, Prepared
from zoo.manifest import EMBEDDED_NAME

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.schema import ModelCard

XNNPACK_SKIPPED = "skipped: XNNPACK is not available in this torch build"


def xnnpack_available() -> bool:
    """Whether ``optimize_for_mobile`` can run here (it raises without XNNPACK)."""
    import torch

    return bool(getattr(torch._C, "_is_xnnpack_enabled", lambda: False)())


def capture(model: nn.Module, example: Tensor) -> tuple[Any, str, str | None]:
    """``torch.jit.script`` the model; fall back to tracing. Returns (module, method, note)."""
    import torch

    try:
        return torch.jit.script(model), "script", None
    except Exception as exc:  # scripting failures come in many types
        note = f"scripting failed ({type(exc).__name__}); traced instead: control flow is fixed"
    try:
        with torch.no_grad():
            traced = torch.jit.trace(model, example, strict=False, check_trace=False)
    except Exception as exc:
        raise ExportError(f"cannot script or trace the model: {type(exc).__name__}: {exc}") from exc
    return traced, "trace", note


def _prepare_script(model: nn.Module, example: Tensor, mobile: bool) -> Prepared:
    import torch

    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module, method, note = capture(model, example)
        optimizations: dict[str, str] = {"eval": "applied"}
        if note:
            optimizations["capture"] = note
        module = torch.jit.freeze(module.eval())
        optimizations["freeze"] = "applied"
        if mobile:
            if xnnpack_available():
                from torch.utils.mobile_optimizer import optimize_for_mobile

                module = optimize_for_mobile(module)
                optimizations["optimize_for_mobile"] = "applied"
            else:
                optimizations["optimize_for_mobile"] = XNNPACK_SKIPPED
    operators = sorted(set(torch.jit.export_opnames(module)))
    return Prepared(module=module, method=method, optimizations=optimizations, operators=operators,
                    static_shape=method == "trace")


def _read_zip_extra(path: Path, name: str) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            for entry in archive.namelist():
                if entry.endswith(f"/extra/{name}"):
                    return archive.read(entry).decode("utf-8")
    except (zipfile.BadZipFile, OSError, KeyError):
        return None
    return None


class _ScriptedExporter(Exporter):
    """Shared by TorchScript and lite: scripted graphs, zip archives, FX int8."""

    precisions = ("fp32", "int8")
    quantizes_eager_model = True
    extra_options = ("engine",)
    #: Apply mobile optimisations (``optimize_for_mobile``) when XNNPACK is available.
    mobile: bool = False

    def check_options(self, options: ExportOptions, card: ModelCard) -> None:
        super().check_options(options, card)
        if options.extra.get("engine") and options.precision != "int8":
            raise UsageError("--engine applies to --precision int8 only")

    def prepare(
        self, model: nn.Module, example: Tensor, card: ModelCard, options: ExportOptions,
        calibration: list[Tensor] | None = None,
    ) -> Prepared:
        return _prepare_script(model, example, mobile=self.mobile)

    def read_embedded(self, path: Path) -> str | None:
        return _read_zip_extra(path, EMBEDDED_NAME)

    def quantize(
        self, model: nn.Module, batches: list[Tensor], card: ModelCard, options: ExportOptions
    ) -> tuple[Any, dict[str, Any]]:
        from zoo.export.quantize import quantize_fx

        engine = options.extra.get("engine") or "qnnpack"
        return quantize_fx(model, batches, engine), {"method": "fx", "engine": engine}


class TorchScriptExporter(_ScriptedExporter):
    """``torch.jit.save`` archive for LibTorch / ``torch.jit.load``."""

    name = "torchscript"
    suffix = ".pt"
    description = "TorchScript archive for LibTorch and torch.jit.load (C++, Python, server)"
    runtime = "zoo_plugins.formats.runtimes.torchscript"

    def save(self, prepared: Prepared, path: Path, extra_files: dict[str, str]) -> None:
        import torch

        buffer = io.BytesIO()  # inner folder 'archive', independent of the file name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "torch.jit.save is deprecated": we know
            torch.jit.save(prepared.module, buffer, _extra_files=extra_files)
        canonical = io.BytesIO()  # process-independent names, no debug records (canonical.py)
        canonicalize(buffer.getvalue(), canonical)
        path.write_bytes(canonical.getvalue())


class LiteExporter(_ScriptedExporter):
    """PyTorch Mobile lite-interpreter archive (``_save_for_lite_interpreter``)."""

    name = "lite"
    suffix = ".ptl"
    description = "PyTorch Mobile lite interpreter (LibTorch-Lite on iOS, pytorch_android_lite)"
    deprecated = ("PyTorch Mobile's lite interpreter is deprecated; ExecuTorch (--format pte) "
                  "is its successor")
    runtime = "zoo_plugins.formats.runtimes.lite"
    backports = True
    mobile = True

    def prepare(
        self, model: nn.Module, example: Tensor, card: ModelCard, options: ExportOptions,
        calibration: list[Tensor] | None = None,
    ) -> Prepared:
        prepared = super().prepare(model, example, card, options, calibration)
        prepared.bytecode_version = options.bytecode_version or current_bytecode_version()
        return prepared

    def save(self, prepared: Prepared, path: Path, extra_files: dict[str, str]) -> None:
        """Save, backport and canonicalize in memory; only the finished archive touches the
        disk, and through Python: torch's C++ file writer aborts the process when the disk
        fills mid-write, while ``write_bytes`` raises an OSError zoo reports."""
        from torch.jit.mobile import _backport_for_mobile_to_buffer, _get_model_bytecode_version

        target = prepared.bytecode_version
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "lite interpreter is deprecated": we know
                raw = bytes(prepared.module._save_to_buffer_for_lite_interpreter(
                    _extra_files=extra_files))
            if target is not None and _get_model_bytecode_version(io.BytesIO(raw)) != target:
                raw = bytes(_backport_for_mobile_to_buffer(io.BytesIO(raw), target))
                if not raw or _get_model_bytecode_version(io.BytesIO(raw)) != target:
                    raise ExportError(
                        f"cannot backport to bytecode version {target}: this torch "
                        f"({_torch_version()}) cannot write it; try a version >= 5"
                    )
            # process-independent names, no debug records, backport constants by index
            canonical = io.BytesIO()
            canonicalize(raw, canonical)
            del raw
            if target is not None and _get_model_bytecode_version(
                    io.BytesIO(canonical.getbuffer())) != target:
                raise ExportError(f"rewriting the bytecode {target} archive failed")
        except ExportError:
            raise
        except Exception as exc:
            what = "saving the lite archive" if target is None else \
                f"backport to bytecode version {target}"
            raise ExportError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
        path.write_bytes(canonical.getbuffer())


@functools.cache
def current_bytecode_version() -> int:
    """The bytecode version this torch writes by default (probed with a one-op module)."""
    import tempfile

    import torch
    from torch.jit.mobile import _get_model_bytecode_version

    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        probe = torch.jit.script(torch.nn.Identity())
        path = Path(tmp) / "probe.ptl"
        probe._save_for_lite_interpreter(str(path))
        return int(_get_model_bytecode_version(str(path)))


def _torch_version() -> str:
    import torch

    return torch.__version__
