"""The fetch-and-export pipeline: card + weights -> artifact, manifest, operators, SHA256SUMS.

Exports are cached under ``ZOO_HOME/artifacts/<key>`` where the key hashes everything that
shapes the bytes (card, weights hash, format, options, zoo and torch versions); a repeat is a
cache hit that does no export work. Every output file appears by atomic rename.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from filelock import FileLock

from zoo.errors import ExportError
from zoo.export import get_exporter
from zoo.export.base import Exporter, ExportOptions, Prepared
from zoo.export.checksums import update_sums
from zoo.fsutil import StatMemo, atomic_copy, sha256_file
from zoo.manifest import (
    EMBEDDED_NAME,
    SIDECAR_SUFFIX,
    UNTRAINED_WARNING,
    ArtifactFacts,
    ExportFacts,
    Golden,
    GoldenInput,
    GoldenOutput,
    Manifest,
    QuantizationFacts,
    WeightsFacts,
    model_facts,
)
from zoo.paths import artifacts_dir, zoo_home
from zoo.schema import ModelCard, OutputContract

if TYPE_CHECKING:
    from zoo.registry import Registry
    from zoo.weights import ResolvedWeights

GOLDEN_SEED = 0
GOLDEN_MAX_SIDE = 256
ATOL = 1e-4
RTOL = 1e-5
# int8 kernels (XNNPACK, qnnpack) round differently from the quantized eager reference by up
# to a quantization step (about 1/128 of the output range): allow two.
RTOL_INT8 = 2e-2

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


def artifact_file_name(card: ModelCard, exporter: Exporter, options: ExportOptions) -> str:
    """``deeplabv3_resnet50.ptl``; a quantized export adds its scheme: ``x.int8.ptl``."""
    scheme = options.extra.get("quantize")
    return f"{card.name}{'.' + scheme if scheme else ''}{exporter.suffix}"


def cache_key(card: ModelCard, weights: ResolvedWeights, fmt: str, options: ExportOptions) -> str:
    """Hash of everything that shapes the artifact's bytes."""
    from importlib.metadata import version

    from zoo import __version__

    payload = {
        "card": card.model_dump(mode="json"),
        "weights": weights.sha256 or "untrained",
        "format": fmt,
        "options": options.as_dict(),
        "zoo": __version__,
        "torch": version("torch"),  # not `import torch`: a cache hit must stay cheap
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def golden_shape(input_size: tuple[int, int], static: bool) -> list[int]:
    """The golden input's shape: the export size, scaled down to keep the check fast.

    Fully convolutional models give the same per-pixel function at any size; a traced or
    statically exported model is shape-specialised, so it keeps the export size.
    """
    h, w = input_size
    longest = max(h, w)
    if static or longest <= GOLDEN_MAX_SIDE:
        return [1, 3, h, w]
    scale = GOLDEN_MAX_SIDE / longest
    h2, w2 = (max(32, round(side * scale / 16) * 16) for side in (h, w))
    return [1, 3, h2, w2]


def exported_output(card: ModelCard, exporter: Exporter, keep_aux: bool) -> OutputContract:
    """The artifact's output contract: the card's, minus heads that were dropped."""
    out = card.output
    if not exporter.keeps_dict_output:
        return OutputContract(kind="tensor", channels=out.channels, semantics=out.semantics)
    if out.kind == "dict":
        keys = [k for k in out.optional_keys if keep_aux and k == "aux"]
        return out.model_copy(update={"optional_keys": keys})
    return out


def export_artifact(
    card: ModelCard,
    weights: ResolvedWeights,
    fmt: str,
    out_dir: Path,
    options: ExportOptions,
    *,
    registry: Registry | None = None,
    log: Log | None = None,
    calibrate_dir: Path | None = None,
) -> ExportOutcome:
    """Produce (or reuse from the cache) the artifact for ``card`` and install it in ``out_dir``.

    ``calibrate_dir`` holds calibration images for ``options.extra['quantize']``; its content
    must already be fingerprinted in ``options.extra['calibrate']`` (it shapes the cache key).
    """
    say = log or (lambda _msg: None)
    exporter = get_exporter(fmt, registry.host if registry else None)
    name = artifact_file_name(card, exporter, options)
    key = cache_key(card, weights, fmt, options)
    root = artifacts_dir()
    root.mkdir(parents=True, exist_ok=True)
    cached = root / key
    with FileLock(str(root / f"{key}.lock")):
        manifest = _load_cached(cached, name)
        hit = manifest is not None
        if manifest is None:
            manifest = _produce(card, weights, exporter, options, name, cached, registry, say,
                                calibrate_dir)
        else:
            say(f"cache hit: {cached}")
    return _install(cached, name, manifest, out_dir, hit)


def _memo(folder: Path) -> StatMemo:
    """Hashes of the cached files and of their installed copies, by size and mtime."""
    return StatMemo(folder.parent / f"{folder.name}.stat.json")


def _load_cached(folder: Path, name: str) -> Manifest | None:
    manifest_path = folder / f"{name}{SIDECAR_SUFFIX}"
    artifact = folder / name
    if not (manifest_path.is_file() and artifact.is_file()):
        return None
    try:
        manifest = Manifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    facts = manifest.artifact
    intact = facts is not None and facts.size == artifact.stat().st_size
    if not intact or _memo(folder).sha256(artifact) != facts.sha256:
        shutil.rmtree(folder, ignore_errors=True)  # never serve bytes that don't match
        return None
    return manifest


def _produce(
    card: ModelCard,
    weights: ResolvedWeights,
    exporter: Exporter,
    options: ExportOptions,
    name: str,
    dest: Path,
    registry: Registry | None,
    say: Log,
    calibrate_dir: Path | None,
) -> Manifest:
    import torch

    from zoo.build import build_model
    from zoo.export._runner import golden_input, select_output, summarize

    say(f"building {card.name} ({weights.source})")
    model = build_model(card, weights, keep_aux=options.keep_aux, registry=registry)
    quantization = None
    if options.extra.get("quantize"):
        model, quantization = _quantize(model, card, exporter, options, calibrate_dir, say)
    h, w = options.input_size
    pre = card.preprocessing

    def record(static: bool) -> tuple[GoldenInput, dict]:
        spec = GoldenInput(seed=GOLDEN_SEED, shape=golden_shape(options.input_size, static),
                           mean=list(pre.mean), std=list(pre.std))
        say(f"recording the eager model's golden output at {spec.shape}")
        with torch.no_grad():
            eager = model(golden_input(spec.model_dump()))
        return spec, summarize(select_output(eager, card.output.key), GOLDEN_SEED)

    g_input, summary = record(exporter.golden_at_export_size)  # before export steps run
    say(f"preparing {exporter.name} export")
    prepared = exporter.prepare(model, torch.zeros(1, 3, h, w), card, options)
    if golden_shape(options.input_size, prepared.static_shape) != g_input.shape:
        g_input, summary = record(True)
    manifest = _manifest(card, weights, exporter, options, prepared, name, g_input, summary)
    manifest = manifest.model_copy(update={"quantization": quantization})
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest.parent))
    try:
        artifact = staging / name
        say(f"writing {name}")
        exporter.save(prepared, artifact, {EMBEDDED_NAME: manifest.embedded().to_json()})
        sha = sha256_file(artifact)
        manifest = manifest.model_copy(update={"artifact": ArtifactFacts(
            file=name, size=artifact.stat().st_size, sha256=sha)})
        if prepared.operators is not None:
            ops = yaml.safe_dump(sorted(prepared.operators), default_flow_style=False)
            (staging / f"{name}.ops.yaml").write_text(ops, encoding="utf-8")
        (staging / f"{name}{SIDECAR_SUFFIX}").write_text(manifest.to_json(), encoding="utf-8")
        shutil.rmtree(dest, ignore_errors=True)
        staging.replace(dest)
        memo = _memo(dest)
        memo.remember(dest / name, sha)
        memo.save()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _quantize(
    model: Any, card: ModelCard, exporter: Exporter, options: ExportOptions,
    calibrate_dir: Path | None, say: Log,
) -> tuple[Any, QuantizationFacts]:
    from zoo.export.quantize import calibration, fidelity

    scheme = options.extra["quantize"]
    batches, calib = calibration(card, options.input_size, calibrate_dir)
    say(f"quantizing to {scheme} with {calib['images']} {calib['source']} calibration images")
    quantized, details = exporter.quantize(model, batches, card, options)
    scores = fidelity(model, quantized, batches, card.output.key)
    say(f"int8 fidelity: SQNR {scores['sqnr_db']} dB, argmax agreement "
        f"{scores['argmax_agreement']:.1%}")
    method = details.pop("method")
    facts = QuantizationFacts(scheme=scheme, method=method, details=details,
                              calibration=calib, **scores)
    return quantized, facts


def _manifest(
    card: ModelCard,
    weights: ResolvedWeights,
    exporter: Exporter,
    options: ExportOptions,
    prepared: Prepared,
    name: str,
    g_input: GoldenInput,
    summary: dict,
) -> Manifest:
    import torch

    from zoo import __version__

    h, w = options.input_size
    return Manifest(
        untrained=weights.untrained,
        warning=UNTRAINED_WARNING if weights.untrained else None,
        model=model_facts(card),
        output=exported_output(card, exporter, options.keep_aux),
        weights=WeightsFacts(
            untrained=weights.untrained, source=weights.source, url=weights.url,
            sha256=weights.sha256,
        ),
        export=ExportFacts(
            format=exporter.name, file=name, options=options.as_dict(), zoo_version=__version__,
            torch_version=torch.__version__, bytecode_version=prepared.bytecode_version,
            input_shape=[1, 3, h, w], method=prepared.method,  # type: ignore[arg-type]
            optimizations=prepared.optimizations,
            operators_file=f"{name}.ops.yaml" if prepared.operators is not None else None,
        ),
        golden=Golden(input=g_input, output=GoldenOutput(**summary), atol=ATOL,
                      rtol=RTOL_INT8 if options.extra.get("quantize") else RTOL),
    )


def _install(
    cached: Path, name: str, manifest: Manifest, out_dir: Path, hit: bool
) -> ExportOutcome:
    """Copy the cached files into ``out_dir`` (skipping identical ones) and update SHA256SUMS."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [name, f"{name}{SIDECAR_SUFFIX}"]
    if manifest.export.operators_file:
        files.append(manifest.export.operators_file)
    folder_id = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:16]
    lock = zoo_home() / "locks" / f"out-{folder_id}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    sums: dict[str, str] = {}
    memo = _memo(cached)
    with FileLock(str(lock)):
        for file in files:
            src, dest = cached / file, out_dir / file
            sha = memo.sha256(src)
            if not (dest.is_file() and memo.sha256(dest) == sha):
                try:  # hard link where possible: a 160 MB artifact costs no copy
                    atomic_copy(src, dest, link=True)
                except OSError as exc:
                    raise ExportError(f"cannot write {dest}: {exc.strerror or exc}") from exc
                memo.remember(dest, sha)
            sums[file] = sha
        sums_path = update_sums(out_dir, sums)
        memo.save()
    ops = out_dir / manifest.export.operators_file if manifest.export.operators_file else None
    return ExportOutcome(
        artifact=out_dir / name, manifest_path=out_dir / f"{name}{SIDECAR_SUFFIX}",
        operators_path=ops, sums_path=sums_path, manifest=manifest, cache_hit=hit,
    )
