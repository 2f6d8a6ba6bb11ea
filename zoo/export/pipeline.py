"""The fetch-and-export pipeline: card + weights -> artifact, manifest, operators, SHA256SUMS.

Steps: build the model through its plugin; check it against the card's contract (output
kind, key, channels, finite values, parameter count) before anything is written; quantize
where asked; record the golden outputs (noise and scene); export through the format's
exporter; commit into the export cache (:mod:`zoo.export.cache`, keyed by the export
identity, :mod:`zoo.export.identity`); install copies into the output folder and update
SHA256SUMS. A cache hit re-proves the cached bytes and does no export work.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from zoo.catalog.schema import ModelCard, OutputContract
from zoo.errors import ExportError, PluginError, UsageError
from zoo.export import get_exporter
from zoo.export.base import Exporter, ExportOptions, Prepared
from zoo.export.checksums import update_sums
from zoo.export.custody import Custody
from zoo.export.golden_runs import BackgroundCases, golden_specs, run_cases, summaries
from zoo.export.manifest import (
    EMBEDDED_NAME,
    SIDECAR_SUFFIX,
    UNTRAINED_WARNING,
    ArtifactFacts,
    CodeIdentity,
    ExportFacts,
    FileFacts,
    Golden,
    GoldenCase,
    GoldenInput,
    Manifest,
    QuantizationFacts,
    WeightsFacts,
    model_facts,
    tree_digest,
)
from zoo.weights.urls import redact_url

if TYPE_CHECKING:
    from torch import nn

    from zoo.catalog.registry import Registry
    from zoo.weights.resolve import ResolvedWeights

#: Share of argmax-grid pixels that must agree with the reference, by precision.
MIN_ARGMAX_AGREEMENT = {"fp32": 0.99, "fp16": 0.95, "int8": 0.9}
SQNR_MARGIN_DB = 3.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class ExportOutcome:
    """Where the outputs landed and whether the export was served from the cache."""

    artifact: Path
    manifest_path: Path
    operators_path: Path | None
    sums_path: Path
    manifest: Manifest
    cache_hit: bool
    source: str = "export"  # "cache" (a local hit), "store" (pulled), or "export"
    #: where the bytes came from (built here, or pulled from which record, signed by whom)
    provenance: dict[str, Any] = field(default_factory=dict)


def artifact_file_name(card: ModelCard, exporter: Exporter, options: ExportOptions) -> str:
    """``deeplabv3_resnet50.ptl``; other precisions than fp32 add theirs: ``x.int8.ptl``."""
    tag = "" if options.precision == "fp32" else f".{options.precision}"
    return f"{card.name}{tag}{exporter.suffix}"


def exported_output(card: ModelCard, exporter: Exporter, keep_aux: bool) -> OutputContract:
    """The artifact's output contract: the card's, minus heads that were dropped."""
    out = card.output
    if not exporter.keeps_dict_output:
        return OutputContract(kind="tensor", channels=out.channels, semantics=out.semantics)
    if out.kind == "dict":
        keys = [k for k in out.optional_keys if keep_aux and k == "aux"]
        return out.model_copy(update={"optional_keys": keys})
    return out


def export_identity(card: ModelCard, weights: ResolvedWeights, exporter: Exporter,
                    options: ExportOptions, registry: Registry
                    ) -> tuple[str, CodeIdentity, CodeIdentity]:
    """(identity key, builder code, format code) of an export; imports no torch."""
    from zoo.export.identity import (
        builder_identity,
        exporter_identity,
        identity_key,
        identity_payload,
    )

    builder = builder_identity(card, registry)
    format_code = exporter_identity(exporter.name, exporter, registry)
    payload = identity_payload(card, weights, exporter, options, builder, format_code)
    return identity_key(payload), builder, format_code


def export_artifact(
    card: ModelCard,
    weights: ResolvedWeights,
    fmt: str | Exporter,
    out_dir: Path,
    options: ExportOptions,
    *,
    registry: Registry | None = None,
    log: Log | None = None,
    calibrate_dir: Path | None = None,
    pull: Callable[[str, Path], dict[str, Any] | None] | None = None,
    custody: Custody | None = None,
    options_checked: bool = False,
) -> ExportOutcome:
    """Produce (or reuse from the cache) the artifact for ``card`` and install it in ``out_dir``.

    ``fmt`` is a format name or the format's :class:`Exporter` already looked up;
    ``options_checked`` says the caller already ran ``exporter.check_options`` on ``options``
    (the command line does, before downloading anything).

    ``calibrate_dir`` holds calibration images for int8; its content must already be
    fingerprinted in ``options.extra['calibrate']`` (it shapes the identity). ``pull(key,
    staging)`` may fill a staging folder from elsewhere (the team store) before exporting;
    it returns the provenance of what it installed, or None. ``custody`` decides which cached
    or pulled bytes may be served (default: any verified bytes); with ``require_signed``, a
    run that would have to export locally raises :class:`ExportError` instead.
    """
    from zoo.catalog.registry import default_registry
    from zoo.export.cache import ArtifactCache

    custody = custody or Custody()
    say = log or (lambda _msg: None)
    registry = registry or default_registry()
    exporter = get_exporter(fmt, registry.host) if isinstance(fmt, str) else fmt
    if not options_checked:
        exporter.check_options(options, card)
    name = artifact_file_name(card, exporter, options)
    key, builder, format_code = export_identity(card, weights, exporter, options, registry)
    cache = ArtifactCache()
    with cache.lock(key, on_wait=say):
        entry = cache.lookup(key)
        if entry is not None and (why := custody.refusal(entry.provenance)) is not None:
            say(f"not serving the cached export {entry.folder.name[:16]}…: {why}")
            entry = None
        hit = entry is not None
        source = "cache"
        if entry is None:
            with cache.staging() as staging:
                provenance = pull(key, staging) if pull is not None and custody.may_pull \
                    else None
                if provenance is not None and custody.refusal(provenance) is not None:
                    _empty(staging)  # never installs what the rules refuse
                    provenance = None
                source = "store" if provenance is not None else "export"
                known: dict[str, str] | None = None  # the artifact's sha256, when built here
                if provenance is not None:
                    say("pulled from the team store: verified, no export work done")
                elif custody.require_signed:
                    raise ExportError(
                        f"no artifact signed by a trusted key for {card.name} ({exporter.name}, "
                        f"identity {key[:16]}…) in the team store, and --require-signed "
                        "(ZOO_REQUIRE_SIGNED) forbids exporting it here; publish it from CI "
                        "with `zoo fetch ... --publish --sign KEY`, or drop --require-signed")
                else:
                    with export_threads():
                        known = _produce(card, weights, exporter, options, name, staging,
                                         registry, say, calibrate_dir, key, builder,
                                         format_code)
                    provenance = {"kind": "built", "weights_from": weights.source}
                entry = cache.commit(key, staging, manifest_file=f"{name}{SIDECAR_SUFFIX}",
                                     model=card.name, format=exporter.name,
                                     provenance=provenance,
                                     known=known)
        else:
            say(f"cache hit: {entry.folder}")
    return _install(cache, entry, name, out_dir, hit, source)


#: torch threads an export runs on, on every machine and in every mode: golden outputs (in
#: the manifest, embedded in the artifact) and int8 calibration are float sums whose last bits
#: depend on how many threads share them, so one fixed count makes one identity one byte
#: string whether it was exported on a laptop, a 2-core CI runner, by `zoo sync --jobs` or Ray
EXPORT_THREADS = 1


@contextlib.contextmanager
def export_threads() -> Iterator[None]:
    """Run the block on :data:`EXPORT_THREADS` torch threads, then restore the caller's."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(EXPORT_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _empty(folder: Path) -> None:
    """Remove everything inside ``folder`` (a staging folder), keeping the folder."""
    import shutil

    for item in folder.iterdir():
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()


def check_contract(model: nn.Module, card: ModelCard, keep_aux: bool, plugin: str,
                   outputs: dict[str, Any]) -> None:
    """Raise :class:`PluginError` (naming plugin, card and field) when the built model does
    not honour the card: parameter count, output kind and key, channels, finite values."""
    where = f"plugin {plugin!r} built {card.name!r} (architecture {card.architecture!r})"
    params = sum(p.numel() for p in model.parameters())
    expected = card.num_params_with_aux if keep_aux and card.num_params_with_aux else \
        card.num_params
    if params != expected:
        field = "num_params_with_aux" if keep_aux and card.num_params_with_aux else "num_params"
        raise PluginError(f"{where} with {params:,} parameters, but the card's {field} says "
                          f"{expected:,}; fix the builder or the card")
    out = card.output
    for case, (x, result) in outputs.items():
        if out.kind == "dict":
            if not isinstance(result, dict) or out.key not in result:
                got = f"a dict with keys {sorted(result)}" if isinstance(result, dict) else \
                    f"a {type(result).__name__}"
                raise PluginError(f"{where}: it returns {got}, but the card's output says a "
                                  f"dict with {out.key!r}")
            pred = result[out.key]
        else:
            if isinstance(result, dict):
                raise PluginError(f"{where}: it returns a dict, but the card's output.kind "
                                  "says a bare tensor")
            pred = result
        want = [x.shape[0], out.channels, x.shape[2], x.shape[3]]
        shape = [int(d) for d in getattr(pred, "shape", [])]
        if shape != want:
            raise PluginError(f"{where}: output shape {shape} on the {case} input: "
                              f"{shape_problem(shape, want)}")
        if not bool(pred.isfinite().all()):
            raise PluginError(f"{where}: the output has NaN or Inf values on the {case} input")


def shape_problem(got: list[int], want: list[int]) -> str:
    """Which dimension of an ``[N, C, H, W]`` output is wrong, in words."""
    if len(got) != 4:
        return f"expected 4 dimensions [N, C, H, W] = {want}, got {len(got)}"
    names = ("batch N", "channels C (the card's output.channels)", "height H", "width W")
    wrong = [f"{names[i]} is {g}, expected {w}" for i, (g, w) in enumerate(zip(got, want,
                                                                               strict=True))
             if g != w]
    hint = "; the output must keep the input's height and width (upsample the logits)" \
        if got[2:] != want[2:] else ""
    return ", ".join(wrong) + hint


def _produce(
    card: ModelCard, weights: ResolvedWeights, exporter: Exporter, options: ExportOptions,
    name: str, staging: Path, registry: Registry, say: Log, calibrate_dir: Path | None,
    key: str, builder: CodeIdentity, format_code: CodeIdentity,
) -> dict[str, str]:
    """Export into ``staging``; returns the sha256 of the artifact's files (as the cache
    records them) hashed on the way."""

    from zoo.catalog.plugins import plugin_code
    from zoo.export.build import build_model

    say(f"building {card.name} ({weights.source})")
    model = build_model(card, weights, keep_aux=options.keep_aux, registry=registry)
    specs = golden_specs(card, options.input_size, exporter.fixed_input_size)

    def contained() -> Any:
        return plugin_code(builder.plugin, f"running model {card.name!r}")

    # fp32 with an exporter that allows it: the eager golden runs (one thread, for
    # reproducible sums) overlap prepare on a second core; the model's own errors (its
    # exceptions, the card's contract) are still reported before the exporter's
    overlap = options.precision == "fp32" and exporter.prepare_alongside_eager
    background = BackgroundCases(model, specs, contained) if overlap else None
    try:
        return _prepare_and_finish(
            card, weights, exporter, options, name, staging, key, builder, format_code, say,
            calibrate_dir, model, specs, background, contained)
    finally:
        if background is not None:
            background.close()  # the GIL's short turns end on every way out


def _prepare_and_finish(
    card: ModelCard, weights: ResolvedWeights, exporter: Exporter, options: ExportOptions,
    name: str, staging: Path, key: str, builder: CodeIdentity, format_code: CodeIdentity,
    say: Log, calibrate_dir: Path | None, model: Any, specs: dict[str, GoldenInput],
    background: BackgroundCases | None, contained: Callable[[], Any],
) -> dict[str, str]:
    """From the built model: contract check, quantization, prepare (alongside the golden
    runs of ``background`` when given), then :func:`_finish`."""
    import torch

    from zoo.catalog.plugins import plugin_code

    if background is None:
        with contained():
            eager = run_cases(model, specs)
        check_contract(model, card, options.keep_aux, builder.plugin, eager)
    reference: Any = model
    quantization: Any = None  # QuantizationFacts, or {"calib": ...} until the artifact runs
    batches = None
    if options.precision != "fp32":
        from zoo.export.quantize import calibration

        batches, calib = calibration(card, options.input_size, calibrate_dir)
        if options.precision == "int8" and exporter.quantizes_eager_model:
            say(f"quantizing to int8 with {calib['images']} {calib['source']} calibration "
                "images")
            with plugin_code(format_code.plugin, f"format {exporter.name!r} quantize"):
                reference, details = exporter.quantize(model, batches, card, options)
            quantization = _fidelity_facts(model, reference, batches, card, options, details,
                                           calib)
            eager = run_cases(reference, specs)
        else:
            quantization = {"calib": calib}
    say(f"preparing the {exporter.name} export")
    h, w = options.input_size
    extra: dict[str, Any] = {"calibration": batches} if batches is not None else {}
    try:
        with plugin_code(format_code.plugin, f"format {exporter.name!r} prepare"):
            prepared = exporter.prepare(reference, torch.zeros(1, 3, h, w), card, options,
                                        **extra)
        if background is not None:  # serialise while the golden inputs finish
            with plugin_code(format_code.plugin, f"format {exporter.name!r} presave"):
                exporter.presave(prepared)
    except Exception:
        if background is not None:
            check_contract(model, card, options.keep_aux, builder.plugin, background.result())
        raise
    if background is not None:
        eager = background.result()
        check_contract(model, card, options.keep_aux, builder.plugin, eager)
    return _finish(card, weights, exporter, options, name, staging, key, builder, format_code,
                   say, model, reference, prepared, specs, eager, quantization, batches)


def _finish(
    card: ModelCard, weights: ResolvedWeights, exporter: Exporter, options: ExportOptions,
    name: str, staging: Path, key: str, builder: CodeIdentity, format_code: CodeIdentity,
    say: Log, model: Any, reference: Any, prepared: Prepared, specs: dict[str, GoldenInput],
    eager: dict[str, Any], quantization: Any, batches: list[Any] | None,
) -> dict[str, str]:
    """After ``prepare``: the golden cases (eager, or the artifact's for reduced precision
    made in conversion), the manifest, and the artifact, sidecar and operators in
    ``staging``."""
    from zoo.catalog.plugins import plugin_code

    if prepared.static_shape and specs != (full := golden_specs(card, options.input_size, True)):
        specs = full  # the capture was shape-specialised (traced): run at the export size
        eager = run_cases(reference, specs)
    golden_ref = "eager"
    cases = summaries(eager, specs, card.output.key)
    if isinstance(quantization, dict):  # reduced precision made during conversion
        calib = quantization["calib"]
        quantization = None
        from_artifact = exporter.golden_from_artifact(options)
        if exporter.runtime_unavailable() is None:
            with _scratch_runnable(exporter, prepared, format_code, options) as runnable:
                quantization = _fidelity_facts(model, runnable, batches or [], card, options,
                                               {"method": exporter.name}, calib)
                if from_artifact:
                    golden_ref = "artifact"
                    cases = summaries(run_cases(runnable, specs), specs,
                                      card.output.key if exporter.keeps_dict_output else None)
        else:
            quantization = QuantizationFacts(
                scheme=options.precision, method=exporter.name,  # type: ignore[arg-type]
                details={"fidelity": f"not measured: {exporter.runtime_unavailable()}"},
                calibration=calib, sqnr_db=None, argmax_agreement=None)
    manifest = _manifest(card, weights, exporter, options, prepared, name, cases, golden_ref,
                         quantization, key, builder, format_code)
    artifact = staging / name
    say(f"writing {name}")
    try:
        with plugin_code(format_code.plugin, f"format {exporter.name!r} save"):
            exporter.save(prepared, artifact, {EMBEDDED_NAME: manifest.embedded().to_json()})
    except OSError as exc:  # a full or read-only disk, passed through by plugin_code
        from zoo._core.fs import disk_error_message

        hint = "set ZOO_HOME to another folder (the export cache stages there)"
        raise ExportError(disk_error_message(exc, artifact, home_hint=hint)) from exc
    if not artifact.exists():
        raise PluginError(f"format {exporter.name!r} (plugin {format_code.plugin!r}) wrote no "
                          f"artifact at {name}")
    facts = artifact_facts(artifact, name)
    manifest = manifest.model_copy(update={"artifact": facts})
    if prepared.operators is not None:
        ops = yaml.safe_dump(sorted(prepared.operators), default_flow_style=False)
        (staging / f"{name}.ops.yaml").write_text(ops, encoding="utf-8")
    (staging / f"{name}{SIDECAR_SUFFIX}").write_text(manifest.to_json(), encoding="utf-8")
    if facts.files:
        return {f"{name}/{f.path}": f.sha256 for f in facts.files}
    return {name: facts.sha256}


def artifact_facts(artifact: Path, name: str) -> ArtifactFacts:
    """Size and sha256 of a file artifact, or of every file of a folder artifact."""
    from zoo._core.fs import sha256_file
    from zoo.export.verify import artifact_files

    if artifact.is_file():
        return ArtifactFacts(file=name, size=artifact.stat().st_size,
                             sha256=sha256_file(artifact))
    files = [FileFacts(path=rel, size=path.stat().st_size, sha256=sha256_file(path))
             for rel, path in artifact_files(artifact)]
    return ArtifactFacts(file=name, size=sum(f.size for f in files), sha256=tree_digest(files),
                         files=files)


@contextlib.contextmanager
def _scratch_runnable(exporter: Exporter, prepared: Prepared, format_code: CodeIdentity,
                      options: ExportOptions) -> Iterator[Callable[..., Any]]:
    """The prepared artifact saved to a scratch folder and loaded through its runtime module
    in this process (for fidelity and artifact-referenced golden outputs); the folder is
    removed when the block ends, whichever way."""
    from zoo._core.fs import remove_path
    from zoo.catalog.plugins import plugin_code
    from zoo.export.runtime import load_in_process

    scratch = Path(tempfile.mkdtemp(prefix="zoo-scratch-"))
    try:
        path = scratch / f"scratch{exporter.suffix}"
        with plugin_code(format_code.plugin, f"format {exporter.name!r} save"):
            exporter.save(prepared, path, {})
            fn = load_in_process(exporter.runtime, path, {**options.as_dict(), "threads": 1})
        yield fn
    finally:
        remove_path(scratch)


def _fidelity_facts(model: Any, candidate: Any, batches: list[Any], card: ModelCard,
                    options: ExportOptions, details: dict[str, Any],
                    calib: dict[str, Any]) -> QuantizationFacts:
    from zoo.export.quantize import fidelity

    scores = fidelity(model, candidate, batches, card.output.key)
    details = dict(details)
    method = str(details.pop("method", "unknown"))
    return QuantizationFacts(scheme=options.precision, method=method,  # type: ignore[arg-type]
                             details={k: str(v) for k, v in details.items()},
                             calibration=calib, **scores)


def _manifest(
    card: ModelCard, weights: ResolvedWeights, exporter: Exporter, options: ExportOptions,
    prepared: Prepared, name: str, cases: list[GoldenCase], golden_ref: str,
    quantization: QuantizationFacts | None, key: str, builder: CodeIdentity,
    format_code: CodeIdentity,
) -> Manifest:
    import torch

    from zoo import __version__

    h, w = options.input_size
    atol, rtol = exporter.tolerance(options)
    min_sqnr = None
    if options.precision == "int8" and quantization is not None and \
            quantization.sqnr_db is not None:
        min_sqnr = round(max(10.0, quantization.sqnr_db - SQNR_MARGIN_DB), 2)
    return Manifest(
        untrained=weights.untrained,
        warning=UNTRAINED_WARNING if weights.untrained else None,
        model=model_facts(card),
        output=exported_output(card, exporter, options.keep_aux),
        weights=weights_facts(card, weights),
        export=ExportFacts(
            format=exporter.name, file=name, precision=options.precision,
            options=options.as_dict(), identity=key, builder=builder, exporter=format_code,
            zoo_version=__version__, torch_version=torch.__version__,
            bytecode_version=prepared.bytecode_version, input_shape=[1, 3, h, w],
            method=prepared.method,  # type: ignore[arg-type]
            optimizations=prepared.optimizations,
            operators_file=f"{name}.ops.yaml" if prepared.operators is not None else None,
        ),
        golden=Golden(reference=golden_ref, cases=cases, atol=atol,  # type: ignore[arg-type]
                      rtol=rtol, min_argmax_agreement=MIN_ARGMAX_AGREEMENT[options.precision],
                      min_sqnr_db=min_sqnr),
        quantization=quantization,
    )


def weights_facts(card: ModelCard, weights: ResolvedWeights) -> WeightsFacts:
    """The weights as the manifest records them: by what they are (their sha256, and the
    card's weights entry they match), never by how this machine obtained them, so the same
    bytes through ``--weights PATH``, the card's URL, a mirror or the team store give one
    manifest and one artifact (the export identity covers the weights by sha256 only)."""
    if weights.untrained or weights.sha256 is None:
        return WeightsFacts(untrained=True, source="none (untrained)", url=None, sha256=None)
    sha = weights.sha256
    for entry in card.weights:
        if entry.sha256 == sha:
            return WeightsFacts(untrained=False, source=f"{entry.name} (the card's weights)",
                                url=redact_url(str(entry.urls[0])), sha256=sha)
    for entry in card.weights:
        if entry.sha256 is None and entry.sha256_prefix and sha.startswith(entry.sha256_prefix):
            return WeightsFacts(
                untrained=False, url=redact_url(str(entry.urls[0])), sha256=sha,
                source=f"{entry.name} (the card's weights, matched by their sha256 prefix)")
    return WeightsFacts(untrained=False, url=None, sha256=sha,
                        source="weights that are not the card's, identified by their sha256")


def _install(cache: Any, entry: Any, name: str, out_dir: Path, hit: bool,
             source: str) -> ExportOutcome:
    """Copy the cached files into ``out_dir`` and update SHA256SUMS, under a folder lock."""
    from filelock import FileLock

    from zoo.export.manifest import Manifest
    from zoo.paths import zoo_home

    manifest_name = f"{name}{SIDECAR_SUFFIX}"
    manifest = Manifest.model_validate_json(
        (entry.folder / manifest_name).read_text(encoding="utf-8"))
    files = [name, manifest_name]
    if manifest.export.operators_file:
        files.append(manifest.export.operators_file)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the output folder {out_dir}: "
                          f"{exc.strerror or exc}") from exc
    if not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: not a folder")
    folder_id = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:16]
    lock = zoo_home() / "locks" / f"out-{folder_id}.lock"
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        guard: Any = FileLock(str(lock))
    except OSError:  # a read-only ZOO_HOME: install without the folder lock
        from contextlib import nullcontext

        guard = nullcontext()
    with guard:
        try:
            sums = cache.install(entry, out_dir, files)
            sums_path = update_sums(out_dir, sums)
        except OSError as exc:
            raise ExportError(f"cannot write into {out_dir}: {exc.strerror or exc}") from exc
    ops = out_dir / manifest.export.operators_file if manifest.export.operators_file else None
    return ExportOutcome(
        artifact=out_dir / name, manifest_path=out_dir / manifest_name,
        operators_path=ops, sums_path=sums_path, manifest=manifest, cache_hit=hit,
        source=source, provenance=dict(entry.provenance),
    )
