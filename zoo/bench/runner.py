"""Run a bench: export (or reuse the export cache / team store) each format x precision, load
it through its runtime module, time it interleaved with eager fp32 and measure its fidelity on
the natural-image golden input; one record row per format x precision, with the reason for
every row that did not run."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo._core.errors import UsageError, ZooError
from zoo.bench.machine import describe, one_line
from zoo.bench.measure import steady_allocator
from zoo.bench.record import MAX_REASON, RECORD_VERSION, BenchRecord, Row, validate_record

if TYPE_CHECKING:
    from zoo.catalog.registry import Registry
    from zoo.catalog.schema import ModelCard
    from zoo.export.base import Exporter, ExportOptions
    from zoo.export.custody import Custody
    from zoo.weights.resolve import ResolvedWeights

#: golden scene seed (the natural-image case of zoo.export.golden)
SCENE_SEED = 1

#: ``progress(done, total, "onnx:int8", stage)``; stage: "export", "measure" or "done"
Progress = Callable[[int, int, str, str], None]


@dataclass(frozen=True)
class BenchOptions:
    """How to bench: input ``size`` (H, W), interleaved pairs, threads (eager and runtimes)."""

    size: tuple[int, int]
    runs: int = 7
    threads: int = 2
    warmup: int = 2  # untimed calls of each before the pairs (thread pools wake, caches fill)
    #: what the weights are, as the record says: "trained", "user", "untrained", "generated"
    weights_label: str = "trained"
    #: export notes (cache hits, pulls); None: silent
    log: Callable[[str], None] | None = None
    progress: Progress | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_targets(items: Sequence[str] | None, card: ModelCard,
                  registry: Registry | None = None) -> list[tuple[str, str]]:
    """``["onnx:int8", "pte"]`` -> ``[("onnx", "int8"), ("pte", "fp32"), ("pte", "int8")]``
    (a bare format means each of its precisions); None or empty: every format x precision
    the installed formats declare. Unknown names are a :class:`UsageError`."""
    from zoo.bench.record import FORMAT_TOKEN
    from zoo.export import available_formats, get_exporter

    host = registry.host if registry is not None else None
    formats = available_formats(host)
    if not items:
        pairs = [(f, p) for f in formats for p in get_exporter(f, host).precisions]
        return [pair for pair in pairs if all(FORMAT_TOKEN.fullmatch(x) for x in pair)]
    targets: list[tuple[str, str]] = []
    for item in items:
        fmt, sep, precision = item.strip().partition(":")
        if fmt not in formats:
            raise UsageError(f"--formats {item!r}: unknown format {fmt!r}; choose from "
                             f"{', '.join(formats)}")
        declared = get_exporter(fmt, host).precisions
        if sep and precision not in declared:
            raise UsageError(f"--formats {item!r}: {fmt} exports {', '.join(declared)}")
        for pair in [(fmt, precision)] if sep else [(fmt, p) for p in declared]:
            bad = next((x for x in pair if not FORMAT_TOKEN.fullmatch(x)), None)
            if bad is not None:  # the record could not hold it: say so before measuring
                raise UsageError(f"--formats {item!r}: {bad!r} is not a name a bench record "
                                 "holds (lowercase letters, digits, '_', '.', '-'); the "
                                 "format plugin should rename it")
            if pair not in targets:
                targets.append(pair)
    return targets


def weights_label(card: ModelCard, weights: ResolvedWeights) -> str:
    """"trained" for one of the card's weights, "untrained" for none, else "user"."""
    if weights.untrained:
        return "untrained"
    pinned = {w.sha256 for w in card.weights if getattr(w, "sha256", None)}
    return "trained" if weights.sha256 in pinned else "user"


def _row(fmt: str, precision: str, status: str, reason: str | None = None, **facts: Any) -> Row:
    row: dict[str, Any] = {
        "format": fmt, "precision": precision, "status": status,
        "reason": None if reason is None else one_line(reason, MAX_REASON),
        "size_bytes": None, "export_s": None, "latency_ms": None, "eager_ms": None,
        "ratio": None, "sqnr_db": None, "argmax_agreement": None,
    }
    row.update(facts)
    return row  # type: ignore[return-value]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ZooError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def artifact_bytes(path: Path) -> int:
    """Size of an artifact file, or of every regular file in an artifact folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def export_options_for(exporter: Exporter, precision: str, size: tuple[int, int]
                       ) -> ExportOptions:
    """The options ``zoo fetch --format F --precision P --input-size HxW`` would use (so a
    bench reuses what fetch cached, and the other way round)."""
    from zoo.export.base import ExportOptions, default_extra

    return ExportOptions(input_size=size, precision=precision,
                         extra=default_extra(precision, exporter.extra_options))


class _Bench:
    """One model's bench: the eager reference, then each row in turn."""

    def __init__(self, card: ModelCard, weights: ResolvedWeights, options: BenchOptions,
                 registry: Registry, out_dir: Path,
                 pull: Callable[[str, Path], dict[str, Any] | None] | None,
                 custody: Custody | None) -> None:
        import torch

        from zoo.export.build import build_model
        from zoo.export.golden import golden_input, select_output

        self.card, self.weights, self.options = card, weights, options
        self.registry, self.out_dir, self.pull, self.custody = registry, out_dir, pull, custody
        torch.set_num_threads(options.threads)
        steady_allocator()
        self.model = build_model(card, weights, registry=registry)
        pre = card.preprocessing
        spec = {"kind": "scene", "seed": SCENE_SEED, "shape": [1, 3, *options.size],
                "scale": pre.scale_divisor, "mean": list(pre.mean), "std": list(pre.std)}
        self.x = golden_input(spec)
        self._select = select_output
        with torch.no_grad():
            self.reference = self.eager(self.x).float()

    def eager(self, x: Any) -> Any:
        return self._select(self.model(x), self.card.output.key)

    def row(self, fmt: str, precision: str, step: Callable[[str], None]) -> Row:
        from zoo.export import get_exporter

        exporter = get_exporter(fmt, self.registry.host)
        unsupported = exporter.supports(self.card)
        if unsupported is not None:
            return _row(fmt, precision, "skipped", f"{self.card.name} does not export to "
                        f"{fmt}: {unsupported}")
        missing = exporter.missing_extra()
        if missing is not None:
            return _row(fmt, precision, "skipped", f"needs an optional extra: {missing}")
        step("export")
        try:
            artifact, runtime_options, export_s = self._export(exporter, precision)
        except (ZooError, Exception) as exc:  # one row fails, the bench goes on
            return _row(fmt, precision, "failed", f"export failed: {_reason(exc)}")
        size = artifact_bytes(artifact)
        cannot_run = exporter.runtime_unavailable()
        if cannot_run is not None:
            return _row(fmt, precision, "size-only", cannot_run, size_bytes=size,
                        export_s=export_s)
        step("measure")
        try:
            facts = self._measure(exporter, artifact, runtime_options)
        except (ZooError, Exception) as exc:
            return _row(fmt, precision, "failed", f"could not run: {_reason(exc)}",
                        size_bytes=size, export_s=export_s)
        return _row(fmt, precision, "ok", size_bytes=size, export_s=export_s, **facts)

    def _export(self, exporter: Exporter, precision: str
                ) -> tuple[Path, dict[str, Any], float | None]:
        from zoo.export.pipeline import export_artifact

        options = export_options_for(exporter, precision, self.options.size)
        start = time.perf_counter()
        outcome = export_artifact(self.card, self.weights, exporter.name, self.out_dir, options,
                                  registry=self.registry, log=self.options.log,
                                  pull=self.pull, custody=self.custody)
        took = time.perf_counter() - start
        # export time only when this run exported: a cache hit or a pull did no export work
        return (outcome.artifact, dict(outcome.manifest.export.options),
                took if outcome.source == "export" else None)

    def _measure(self, exporter: Exporter, artifact: Path, runtime_options: dict[str, Any]
                 ) -> dict[str, Any]:
        import torch

        from zoo.bench.measure import fidelity, interleaved, stats
        from zoo.export.runtime import load_in_process

        threads = self.options.threads
        fn = load_in_process(exporter.runtime, artifact,
                             {**runtime_options, "threads": threads})
        torch.set_num_threads(threads)  # a runtime may have changed it while loading

        def run(x: Any) -> Any:
            return self._select(fn(x), self.card.output.key)

        with torch.no_grad():
            got = run(self.x).float()
        sqnr, agree = fidelity(self.reference, got)
        timing = interleaved(self.eager, run, self.x, self.options.runs, self.options.warmup)
        return {"latency_ms": stats(timing.candidate_ms), "eager_ms": stats(timing.eager_ms),
                "ratio": stats(timing.ratios), "sqnr_db": sqnr, "argmax_agreement": agree}


def run_bench(card: ModelCard, weights: ResolvedWeights, targets: Sequence[tuple[str, str]],
              options: BenchOptions, out_dir: Path, *, registry: Registry | None = None,
              pull: Callable[[str, Path], dict[str, Any] | None] | None = None,
              custody: Custody | None = None) -> BenchRecord:
    """Bench ``card`` with ``weights`` for each (format, precision) of ``targets``; artifacts
    are installed in ``out_dir`` (reused from the export cache, or pulled by ``pull`` from the
    team store, as ``zoo fetch`` would). Returns the validated record (not yet written).

    Sets torch's thread count to ``options.threads`` and, on glibc, fixes the process's malloc
    thresholds (:func:`zoo.bench.measure.steady_allocator`); both stay set afterwards."""
    from zoo import __version__
    from zoo.catalog.registry import default_registry
    from zoo.export import get_exporter
    from zoo.export.runtime import runtime_requires

    if options.runs < 1 or options.threads < 1:
        raise UsageError("--runs and --threads must be at least 1")
    registry = registry or default_registry()
    host = registry.host
    modules: list[str] = []
    for fmt, _ in targets:
        exporter = get_exporter(fmt, host)
        modules += [m for m, _extra in exporter.requires]
        with contextlib.suppress(ZooError):  # a plugin's broken runtime shows in its row
            modules += runtime_requires(exporter.runtime)
    bench = _Bench(card, weights, options, registry, out_dir, pull, custody)
    rows: list[Row] = []
    total = len(targets)
    for done, (fmt, precision) in enumerate(targets):
        label = f"{fmt}:{precision}"

        def step(stage: str, done: int = done, label: str = label) -> None:
            if options.progress is not None:
                options.progress(done, total, label, stage)

        rows.append(bench.row(fmt, precision, step))
        step("done", done + 1)
    record: BenchRecord = {
        "zoo_bench": RECORD_VERSION,
        "model": card.name,
        "zoo_version": __version__,
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        .replace("+00:00", "Z"),
        "machine": describe(modules),
        "settings": {"size": list(options.size), "runs": options.runs,
                     "threads": options.threads, "weights": options.weights_label},
        "rows": rows,
    }
    return validate_record(record, source=f"bench of {card.name}")
