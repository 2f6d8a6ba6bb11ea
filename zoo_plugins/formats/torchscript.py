"""TorchScript (``.pt``) and lite-interpreter (``.ptl``) exporters.

Both script the model (tracing a wrapper only where scripting fails, and saying so), freeze
it, and apply ``optimize_for_mobile`` only when this torch has XNNPACK. The archive's inner
folder name comes from the file name, so callers save under the final name in a temp folder.
"""

from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ExportError, UsageError
from zoo.export.base import Exporter, ExportOptions, Finding, Prepared
from zoo.export.containers import ContainerError, ZipEntry, check_zip, read_zip_entry
from zoo.export.manifest import EMBEDDED_NAME
from zoo_plugins.formats.canonical import canonical_records, write_archive

if TYPE_CHECKING:
    from torch import Tensor, nn

    from zoo.catalog.schema import ModelCard
    from zoo.export.manifest import Manifest

XNNPACK_SKIPPED = "skipped: XNNPACK is not available in this torch build"
#: The largest extra file (the embedded manifest) read from an archive.
MAX_EXTRA_BYTES = 16 * 1024 * 1024


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


def scripted_archive(path: Path) -> list[ZipEntry]:
    """The entries of a TorchScript or lite archive after the strict checks of
    :mod:`zoo.export.containers`, all inside one top-level folder (torch's layout); raises
    :class:`ContainerError`."""
    what = f"the archive {path.name}"
    entries = check_zip(path, what)
    tops = {e.name.split("/", 1)[0] for e in entries}
    if len(tops) > 1 or any("/" not in e.name for e in entries):
        raise ContainerError(f"{what}: entries outside one top-level folder "
                             f"({', '.join(sorted(tops)[:3])})")
    return entries


def _read_zip_extra(path: Path, name: str) -> str | None:
    """The extra file ``name`` of a strictly checked archive, or None (absent, refused,
    not UTF-8, or larger than ``MAX_EXTRA_BYTES``)."""
    try:
        entries = scripted_archive(path)
        found = [e.name for e in entries if e.name.split("/", 1)[-1] == f"extra/{name}"]
        if len(found) != 1:
            return None
        data = read_zip_entry(path, found[0], f"the archive {path.name}", MAX_EXTRA_BYTES)
        return None if data is None else data.decode("utf-8")
    except (ContainerError, UnicodeDecodeError):
        return None


class _ScriptedExporter(Exporter):
    """Shared by TorchScript and lite: scripted graphs, zip archives, FX int8."""

    precisions = ("fp32", "int8")
    quantizes_eager_model = True
    prepare_alongside_eager = True  # scripting copies the module; tracing state is per thread
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

    def check_container(self, path: Path) -> str | None:
        """Why the archive is refused (duplicate or unsafe names, oversized, bomb-like or
        inconsistent entries), or None when it passes the strict checks."""
        try:
            scripted_archive(path)
        except ContainerError as exc:
            return str(exc)
        return None

    def inspect(self, path: Path, manifest: Manifest) -> list[Finding]:
        """The archive, parsed strictly (its records are what the runtime loads)."""
        problem = self.check_container(path)
        return [Finding("container", problem is None, problem or
                        "ZIP archive: unique, relative names; sizes and headers agree")]

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

    def presave(self, prepared: Prepared) -> None:
        prepared.presaved = canonical_records(self._archive(prepared))

    def save(self, prepared: Prepared, path: Path, extra_files: dict[str, str]) -> None:
        """Canonical bytes (process-independent names, no debug records: canonical.py) with
        ``extra_files`` stored as the archive's extra files, written from Python."""
        records = prepared.presaved if prepared.presaved is not None else \
            canonical_records(self._archive(prepared))
        canonical = io.BytesIO()  # inner folder 'archive', independent of the file name
        write_archive(records, canonical, extra_files)
        path.write_bytes(canonical.getbuffer())

    @staticmethod
    def _archive(prepared: Prepared) -> bytes:
        """``torch.jit.save``'s bytes of the module, without extra files."""
        import torch

        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "torch.jit.save is deprecated": we know
            torch.jit.save(prepared.module, buffer)
        return buffer.getvalue()


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

    def presave(self, prepared: Prepared) -> None:
        prepared.presaved = self._records(prepared)

    def save(self, prepared: Prepared, path: Path, extra_files: dict[str, str]) -> None:
        """Save, backport and canonicalize in memory; only the finished archive touches the
        disk, and through Python: torch's C++ file writer aborts the process when the disk
        fills mid-write, while ``write_bytes`` raises an OSError zoo reports."""
        target = prepared.bytecode_version
        records = prepared.presaved if prepared.presaved is not None else \
            self._records(prepared)
        canonical = io.BytesIO()
        try:
            written = write_archive(records, canonical, extra_files)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"saving the lite archive failed: {type(exc).__name__}: "
                              f"{exc}") from exc
        # the version is read from the bytecode record written, not by parsing it all
        if target is not None and written != target:
            raise ExportError(f"rewriting the bytecode {target} archive failed (it holds "
                              f"version {written})")
        path.write_bytes(canonical.getbuffer())

    @staticmethod
    def _records(prepared: Prepared) -> list[tuple[str, bytes]]:
        """The lite archive's canonical records (process-independent names, no debug
        records, backported constants by index), at the bytecode version asked for."""
        from torch.jit.mobile import _backport_for_mobile_to_buffer, _get_model_bytecode_version

        target = prepared.bytecode_version
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "lite interpreter is deprecated": we know
                raw = bytes(prepared.module._save_to_buffer_for_lite_interpreter())
            # this torch writes current_bytecode_version() (probed once): read the archive's
            # version only when another one was asked for (each read parses the whole archive)
            if target is not None and target != current_bytecode_version() and \
                    _get_model_bytecode_version(io.BytesIO(raw)) != target:
                raw = bytes(_backport_for_mobile_to_buffer(io.BytesIO(raw), target))
                if not raw or _get_model_bytecode_version(io.BytesIO(raw)) != target:
                    raise ExportError(
                        f"cannot backport to bytecode version {target}: this torch "
                        f"({_torch_version()}) cannot write it; try a version >= 5"
                    )
            return canonical_records(raw)
        except ExportError:
            raise
        except Exception as exc:
            what = "saving the lite archive" if target is None else \
                f"backport to bytecode version {target}"
            raise ExportError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


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
