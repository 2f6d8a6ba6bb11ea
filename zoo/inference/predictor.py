"""Run a model on images: the eager module from the registry, or an exported artifact.

``load`` builds the eager module through the same weights path as ``zoo fetch``.
``load_artifact`` runs an artifact through its format's runtime module (the same one
``zoo verify`` runs; see zoo.export.base) in a confined child process by default
(:mod:`zoo.export.served`: a private copy of the hashed bytes, a memory ceiling, no network,
no writes outside its folder), or in this process with ``in_process=True``, and reads its
sidecar manifest for the preprocessing and output contract. Both give a :class:`Predictor`,
which is what ``zoo run`` drives.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zoo.catalog.schema import ModelCard, OutputContract, Preprocessing, choose_palette
from zoo.errors import UsageError, ZooError
from zoo.export.manifest import Manifest, sidecar_paths
from zoo.inference.postprocessing import postprocess
from zoo.inference.preprocessing import preprocess, rgb_array

if TYPE_CHECKING:
    from torch import nn

    from zoo.catalog.registry import Registry
    from zoo.export.base import Exporter
    from zoo.inference.preprocessing import ImageLike
    from zoo.weights.policy import DownloadPolicy
    from zoo.weights.resolve import ResolvedWeights

RGBTriple = tuple[int, int, int]


class UntrainedWarning(UserWarning):
    """A model or artifact with random weights: its predictions are meaningless."""


def fit_input(x: torch.Tensor, accepted: tuple[int, ...] | None) -> torch.Tensor:
    """Resize ``x`` (bilinear) into what the artifact accepts; the label map is resized back."""
    if accepted is None:
        return x
    h, w = x.shape[-2:]
    if len(accepted) == 2:
        target = accepted
    else:
        low, high = accepted[0], accepted[1]
        target = (min(max(h, low), high), min(max(w, low), high))
    if (h, w) == tuple(target):
        return x
    return torch.nn.functional.interpolate(x, size=tuple(target), mode="bilinear",
                                           align_corners=False)


def artifact_exporter(fmt: str) -> Exporter:
    """The exporter of format ``fmt``, able to run its artifacts here; a clear error if not."""
    from zoo.export import available_formats, get_exporter

    if fmt not in available_formats():
        raise UsageError(f"the artifact's manifest names format {fmt!r}, which no installed "
                         f"plugin provides (installed: {', '.join(available_formats())}); "
                         "install the plugin that made it")
    exporter = get_exporter(fmt)
    reason = exporter.runtime_unavailable()
    if reason is not None:
        raise UsageError(f"cannot run {fmt} artifacts on this machine: {reason}; run the "
                         "eager model instead (drop --artifact)")
    return exporter


@dataclass
class Predictor:
    """A runnable model plus the facts to feed it and read it (from its card or manifest)."""

    name: str
    module: Callable[..., Any]
    preprocessing: Preprocessing
    output: OutputContract
    labels: list[str]
    palette: list[RGBTriple]
    palettes: dict[str, list[RGBTriple]] = field(default_factory=dict)
    untrained: bool = False
    runtime: str = "eager"  # or the artifact's format
    source: str = ""  # weights source, or the artifact path
    accepted: tuple[int, ...] | None = None  # see accepted_size()
    #: how an artifact runs: "in-process", or what confined its child (zoo.export.sandbox)
    confinement: dict[str, Any] | None = None
    unconfined: str | None = None  # why an artifact runs unconfined; None when confined

    @classmethod
    def from_card(cls, card: ModelCard, module: Callable[..., Any], *, untrained: bool,
                  source: str) -> Predictor:
        """Wrap an eager module built for ``card``."""
        return cls(card.name, module, card.preprocessing, card.output, list(card.labels),
                   list(card.palette), {k: list(v) for k, v in card.palettes.items()},
                   untrained, "eager", source)

    @classmethod
    def from_artifact(cls, path: str | Path, **options: Any) -> Predictor:
        """Any artifact, run by its format's runtime (confined by default) with its
        manifest's pre- and post-processing: ``predict(image)`` gives labels. Options as
        :func:`load_artifact`."""
        return load_artifact(path, **options)

    def palette_named(self, name: str | None) -> list[RGBTriple]:
        """The default palette (``None``/'default') or a named one; unknown names list choices."""
        return choose_palette(self.name, self.palette, self.palettes, name)

    def __call__(self, x: torch.Tensor) -> Any:
        """The raw output for an input tensor (no gradients)."""
        with torch.inference_mode():
            return self.module(fit_input(x, self.accepted))

    def close(self) -> None:
        """End the artifact's child process, if it has one (idempotent)."""
        close = getattr(self.module, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict(self, image: ImageLike) -> np.ndarray:
        """The label map for ``image``, at the image's own size: preprocess, run, postprocess."""
        pixels = rgb_array(image)
        return postprocess(self(preprocess(pixels, self.preprocessing)), self.output, size=pixels)


def load(
    name: str | ModelCard,
    weights: str | Path | None = None,
    *,
    keep_aux: bool = False,
    registry: Registry | None = None,
    mirror: str | None = None,
    offline: bool | None = None,
    progress: str = "auto",
    store: str | None = None,
) -> nn.Module:
    """The eager ``nn.Module`` of model ``name``, in eval mode, with its weights loaded.

    ``weights`` is what ``zoo fetch --weights`` takes: ``None`` for the card's default, a
    weights name, a URL (``#sha256=HEX`` pins it), a local path, or ``"none"`` for random
    init, which warns :class:`UntrainedWarning`. Downloads go through zoo's verified cache.
    ``store`` is a team store URL (default: ``ZOO_STORE``; ``""``: none) asked for card
    weights before their URLs and checked against the card's pin like any mirror; offline,
    only a ``file://`` store is asked.
    """
    from zoo.export.build import build_model
    from zoo.store.config import weights_store
    from zoo.weights.policy import DownloadPolicy

    card, reg = _card(name, registry)
    policy = DownloadPolicy(mirror=mirror, offline=offline, progress=progress)
    resolved = resolve(card, weights, policy, store=weights_store(store, offline))
    if resolved.untrained:
        warnings.warn(untrained_message(card.name), UntrainedWarning, stacklevel=2)
    return build_model(card, resolved, keep_aux=keep_aux, registry=reg)


def _card(name: str | ModelCard, registry: Registry | None) -> tuple[ModelCard, Registry]:
    from zoo.catalog.registry import default_registry

    reg = registry or default_registry()
    return (name if isinstance(name, ModelCard) else reg.get(name)), reg


def resolve(card: ModelCard, weights: str | Path | None, policy: DownloadPolicy | None = None,
            **options: Any) -> ResolvedWeights:
    """``zoo.weights.resolve.resolve_weights`` for a spec that may also be a ``Path``."""
    from zoo.weights.resolve import resolve_weights

    return resolve_weights(card, None if weights is None else str(weights), policy, **options)


def untrained_message(name: str) -> str:
    return (f"UNTRAINED: {name} has random weights (--weights none); its predictions are "
            "meaningless")


def eager_predictor(card: ModelCard, weights: ResolvedWeights,
                    registry: Registry | None = None) -> Predictor:
    """A predictor for the eager model of ``card`` with already-resolved ``weights``."""
    from zoo.export.build import build_model

    model = build_model(card, weights, registry=registry)
    return Predictor.from_card(card, model, untrained=weights.untrained, source=weights.source)


def read_manifest(path: Path) -> tuple[Path, Manifest]:
    """(artifact, its sidecar manifest) for a path naming either; errors name the file."""
    artifact, sidecar = sidecar_paths(Path(path))
    if not artifact.exists():
        raise UsageError(f"{artifact}: no such artifact; make one with `zoo fetch NAME --format F`")
    if not sidecar.is_file():
        raise UsageError(
            f"{artifact}: its manifest {sidecar.name} is missing beside it; zoo needs it for "
            "the preprocessing and output contract (re-export with `zoo fetch --format`)"
        )
    from zoo.export.manifest_files import read_manifest_file

    try:
        manifest = read_manifest_file(sidecar)
    except ValueError as exc:
        raise UsageError(f"{sidecar}: not a valid zoo manifest: {exc}") from None
    return artifact, manifest


def load_artifact(path: str | Path, *, check_hash: bool = True, in_process: bool = False,
                  memory_limit: int | None = None, time_limit: float | None = None
                  ) -> Predictor:
    """A predictor for an exported artifact, with the facts of its sidecar manifest.

    The artifact's size and sha256 must match the manifest (``check_hash``), so a stale or
    swapped manifest cannot describe another file. Running an artifact is running code: by
    default it runs in a confined child process that gets a private copy of exactly the
    checked bytes, a memory ceiling (``memory_limit`` bytes, default 8 GiB), no network and
    no writes outside its folder; ``close()`` the predictor (or use it as a context manager)
    to end it. ``in_process=True`` loads it into this process instead, unconfined. An
    untrained artifact warns :class:`UntrainedWarning`.
    """
    from zoo.export.pipeline import artifact_facts

    artifact, manifest = read_manifest(Path(path))
    facts = manifest.artifact
    if check_hash and facts is not None:
        try:
            actual = artifact_facts(artifact, artifact.name)
        except (OSError, ValueError):
            actual = None
        if actual is None or (actual.size, actual.sha256) != (facts.size, facts.sha256):
            raise ZooError(
                f"{artifact} does not match its manifest (sha256/size differ); it was changed "
                f"after export: re-export it, or see `zoo verify {artifact}`"
            )
    exporter = artifact_exporter(manifest.export.format)
    refused = exporter.check_container(artifact)
    if refused is not None:
        raise ZooError(f"{artifact}: its container is refused: {refused}; nothing was loaded "
                       f"(see `zoo verify {artifact}`)")
    options = {**manifest.export.options, "threads": torch.get_num_threads()}
    expected = facts.sha256 if check_hash and facts is not None else None
    if in_process:
        module = _in_process(exporter.runtime, artifact, options, manifest.export.format)
    else:
        module = _served(exporter.runtime, artifact, options, manifest, expected,
                         memory_limit, time_limit)
    model = manifest.model
    if manifest.untrained:
        warnings.warn(untrained_message(model.name), UntrainedWarning, stacklevel=2)
    from zoo.inference.preprocessing import preprocessing_of

    # the manifest's preprocessing, at the size the artifact was exported at ('exact')
    return Predictor(model.name, module, preprocessing_of(manifest), manifest.output,
                     list(model.labels), list(model.palette),
                     {k: list(v) for k, v in model.palettes.items()},
                     manifest.untrained, manifest.export.format, str(artifact),
                     exporter.accepted_size(manifest),
                     getattr(module, "confinement", None),
                     getattr(module, "unconfined", "--in-process"))


def _in_process(runtime: str, artifact: Path, options: dict[str, Any], fmt: str) -> Any:
    from zoo.export.runtime import load_in_process

    try:
        return load_in_process(runtime, artifact, options)
    except Exception as exc:  # runtimes raise many types for files they cannot read
        text = " ".join(str(exc).split())[:200]
        raise ZooError(f"{artifact}: the {fmt} runtime cannot load it: {text}") from exc


def _served(runtime: str, artifact: Path, options: dict[str, Any], manifest: Manifest,
            expected: str | None, memory_limit: int | None, time_limit: float | None) -> Any:
    from zoo.export.isolated import DEFAULT_TIME_LIMIT, ChildFailed
    from zoo.export.served import ServedArtifact

    try:
        return ServedArtifact(runtime, artifact, options, kind=manifest.output.kind,
                              key=manifest.output.key, expected=expected,
                              memory_limit=memory_limit,
                              time_limit=time_limit or DEFAULT_TIME_LIMIT)
    except ChildFailed as exc:
        raise ZooError(f"{artifact}: {exc}") from None
