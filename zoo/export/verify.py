"""``zoo verify``: integrity, contract and golden parity of an exported artifact.

Order matters: everything that can be checked without executing the artifact is checked
first (manifest, file names, hashes, SHA256SUMS, embedded manifest, structure), and a failure
there stops before any runtime code touches the artifact. The golden run happens in an
isolated child process (:mod:`zoo.export.isolated`). A format whose runtime does not exist on
this machine gets the integrity and structure checks and the verdict ``checked`` ("not run"),
never ``verified``. docs/manifest.md states exactly what each verdict means.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo._core.fs import sha256_file
from zoo.errors import UsageError, ZooError
from zoo.export.checksums import SUMS_NAME, read_sums
from zoo.export.manifest import GoldenOutput, Manifest, sidecar_paths
from zoo.export.manifest_files import (
    EmbeddedUnreadable,
    read_embedded,
    read_manifest_file,
)
from zoo.export.sandbox import DEFAULT_MEMORY_LIMIT

#: zoo's policy: a manifest may not loosen the check beyond these, whatever it records.
POLICY = {"atol": 0.05, "rtol": 0.05, "min_argmax_agreement": 0.9}
MAX_GOLDEN_PIXELS = 4096 * 4096


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    """Every check made, in order, and the verdict."""

    artifact: Path
    checks: list[Check] = field(default_factory=list)
    parity: list[dict[str, Any]] | None = None
    untrained: bool = False
    ran: bool = False
    not_run_reason: str | None = None
    #: what confined the child that ran the artifact (zoo.export.sandbox), and why not
    confinement: dict[str, Any] | None = None
    unconfined: str | None = None
    #: things the verdict cannot tell (e.g. a constant output: random-init weights?)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed (``verified``, or ``checked`` where nothing could run)."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def verdict(self) -> str:
        """``verified`` (ran and passed), ``checked`` (passed, golden not run), ``failed``."""
        if not self.ok:
            return "failed"
        return "verified" if self.ran else "checked"

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "artifact": str(self.artifact),
            "verdict": self.verdict,
            "ok": self.ok,
            "ran": self.ran,
            "not_run_reason": self.not_run_reason,
            "checks": [c.__dict__ for c in self.checks],
            "parity": self.parity,
            "untrained": self.untrained,
            "confined": self.ran and self.unconfined is None,
            "confinement": self.confinement,
            "unconfined_reason": self.unconfined,
            "warnings": self.warnings,
        }


def locate(path: Path) -> tuple[Path, Path]:
    """(artifact, sidecar manifest) for a path naming either one."""
    if not path.exists():
        raise UsageError(f"{path} does not exist; pass an artifact made by `zoo fetch --format`")
    return sidecar_paths(path)


def _read_manifest(report: Report, sidecar: Path) -> Manifest | None:
    if not sidecar.is_file():
        report.add("manifest", False, f"{sidecar.name} is missing beside the artifact")
        return None
    try:
        manifest = read_manifest_file(sidecar)
    except ValueError as exc:
        report.add("manifest", False, f"{sidecar.name} is not a valid zoo manifest: {exc}")
        return None
    if manifest.artifact is None:
        report.add("manifest", False, f"{sidecar.name} has no artifact hash")
        return None
    return manifest if report.add("manifest", True, f"{sidecar.name} is valid") else None


def artifact_files(artifact: Path) -> list[tuple[str, Path]]:
    """(relative path, file) for every file of a folder artifact, sorted; symlinks refused."""
    found = []
    for root, dirs, files in os.walk(artifact, followlinks=False):
        for name in [*dirs, *files]:
            if Path(root, name).is_symlink():
                raise ValueError(f"{Path(root, name)} is a symbolic link")
        for name in files:
            path = Path(root, name)
            found.append((path.relative_to(artifact).as_posix(), path))
    return sorted(found)


def _check_hashes(report: Report, artifact: Path, sidecar: Path, manifest: Manifest) -> bool:
    facts = manifest.artifact
    assert facts is not None
    if facts.file != artifact.name or manifest.export.file != artifact.name:
        return report.add("file name", False, f"the manifest describes {facts.file!r}, not "
                          f"{artifact.name!r}")
    actual: dict[str, str] = {}
    if facts.files is None:
        if not artifact.is_file() or artifact.is_symlink():
            return report.add("sha256 (manifest)", False, f"{artifact.name} is not a file")
        sha, size = sha256_file(artifact), artifact.stat().st_size
        ok = sha == facts.sha256 and size == facts.size
        detail = f"{sha[:16]}… {size} bytes"
        if not ok:
            detail += f" != recorded {facts.sha256[:16]}… {facts.size} bytes"
        report.add("sha256 (manifest)", ok, detail)
        actual[artifact.name] = sha
    else:
        if not artifact.is_dir() or artifact.is_symlink():
            return report.add("sha256 (manifest)", False, f"{artifact.name} is not a folder")
        try:
            present = artifact_files(artifact)
        except ValueError as exc:
            return report.add("sha256 (manifest)", False, str(exc))
        recorded = {f.path: f for f in facts.files}
        extra = sorted({p for p, _ in present} - set(recorded))
        missing = sorted(set(recorded) - {p for p, _ in present})
        bad = []
        for rel, path in present:
            if rel in recorded:
                sha = sha256_file(path)
                actual[f"{artifact.name}/{rel}"] = sha
                if sha != recorded[rel].sha256 or path.stat().st_size != recorded[rel].size:
                    bad.append(rel)
        problems = ([f"changed: {', '.join(bad[:3])}"] if bad else []) + \
            ([f"missing: {', '.join(missing[:3])}"] if missing else []) + \
            ([f"not recorded: {', '.join(extra[:3])}"] if extra else [])
        ok = not problems
        report.add("sha256 (manifest)", ok, f"{len(present)} files match" if ok
                   else "; ".join(problems))
    sums = read_sums(artifact.parent / SUMS_NAME)
    if not sums:
        report.add("SHA256SUMS", True, f"no {SUMS_NAME} beside the artifact (skipped)")
        return ok
    actual[sidecar.name] = sha256_file(sidecar)
    wrong = [name for name, sha in actual.items() if sums.get(name) not in (None, sha)]
    unlisted = [name for name in actual if name not in sums]
    sums_ok = not wrong and not unlisted
    detail = "every file matches" if sums_ok else "; ".join(
        ([f"differs: {', '.join(wrong[:3])}"] if wrong else [])
        + ([f"not listed: {', '.join(unlisted[:3])}"] if unlisted else []))
    report.add("SHA256SUMS", sums_ok, detail)
    return ok and sums_ok


def _check_embedded(report: Report, exporter: Any, artifact: Path, manifest: Manifest,
                    time_limit: float, limits: RunLimits) -> bool:
    try:
        embedded, where = read_embedded(exporter, artifact, time_limit,
                                        expected=_expected_digest(manifest),
                                        memory_limit=limits.memory, confine=limits.confine)
    except EmbeddedUnreadable as exc:
        return report.add("embedded manifest", False, str(exc))
    if not isinstance(embedded, str):
        return report.add("embedded manifest", False,
                          "cannot read the manifest embedded in the artifact")
    same = embedded == manifest.embedded().to_json()
    return report.add("embedded manifest", same, f"matches the sidecar ({where})" if same
                      else "differs from the sidecar manifest")


def _check_policy(report: Report, manifest: Manifest) -> bool:
    golden = manifest.golden
    loose = [f"{name} {getattr(golden, name)}" for name in ("atol", "rtol")
             if getattr(golden, name) > POLICY[name]]
    if golden.min_argmax_agreement < POLICY["min_argmax_agreement"]:
        loose.append(f"min_argmax_agreement {golden.min_argmax_agreement}")
    big = [c.name for c in golden.cases
           if c.input.shape[2] * c.input.shape[3] > MAX_GOLDEN_PIXELS]
    contract = manifest.output.channels == manifest.model.num_classes
    problems = ([f"tolerances looser than zoo allows: {', '.join(loose)}"] if loose else []) + \
        ([f"golden inputs too large: {', '.join(big)}"] if big else []) + \
        ([] if contract else [f"output.channels {manifest.output.channels} != model."
                              f"num_classes {manifest.model.num_classes}"])
    return report.add("manifest policy", not problems, "; ".join(problems) or
                      f"tolerances within policy, {len(golden.cases)} golden inputs")


def parity_request(manifest: Manifest, threads: int = 1) -> dict[str, Any]:
    """The child's request for the golden run of ``manifest``."""
    golden = manifest.golden
    limits = {"atol": golden.atol, "rtol": golden.rtol,
              "min_argmax_agreement": golden.min_argmax_agreement,
              "min_sqnr_db": golden.min_sqnr_db}
    out = manifest.output
    return {
        "action": "run",
        "options": {**manifest.export.options, "threads": threads},
        "cases": [c.model_dump(mode="json") for c in golden.cases],
        "limits": limits,
        "contract": {"kind": out.kind, "key": out.key, "channels": out.channels},
    }


def _check_parity(report: Report, exporter: Any, artifact: Path, manifest: Manifest,
                  time_limit: float, limits: RunLimits) -> None:
    from zoo.export.isolated import ChildFailed, run_child
    from zoo.export.sandbox import unconfined_reason

    try:
        answer = run_child(exporter.runtime, artifact, parity_request(manifest), time_limit,
                           expected=_expected_digest(manifest),
                           memory_limit=limits.memory, confine=limits.confine)
    except ChildFailed as exc:
        report.add("golden run", False, str(exc))
        return
    report.ran = True
    report.confinement = answer.get("confinement")
    report.unconfined = "--no-confine" if not limits.confine else \
        unconfined_reason(report.confinement)
    report.add("confinement", True, describe_confinement(report.confinement, report.unconfined))
    report.parity = answer["cases"]
    contract_problems = [p for case in answer["cases"] for p in case.get("contract_problems", [])
                         + case.get("problems", [])]
    out = manifest.output
    shape = f"[1, {out.channels}, H, W]"
    report.add("output contract", not contract_problems, "; ".join(contract_problems[:3]) or
               (f"dict with '{out.key}' {shape}" if out.kind == "dict" else f"tensor {shape}"))
    for case in answer["cases"]:
        verdict = case.get("verdict")
        if verdict is None:
            continue
        detail = (f"max |Δ| {verdict['max_abs_diff']:.3g} (limit {verdict['limit']:.3g}), "
                  f"argmax agreement {verdict['argmax_agreement']:.1%}")
        if manifest.golden.min_sqnr_db is not None:
            detail += f", SQNR {verdict['sqnr_db']} dB"
        if verdict.get("bit_exact"):
            detail += ", bit-exact"
        if not verdict["ok"]:
            detail += ": " + "; ".join(verdict["problems"])
        report.add(f"golden {case['name']}", bool(verdict["ok"]), detail)
    isolated = not any(answer.get("modules", {}).values())
    report.add("runtime isolation", isolated, "ran without zoo or torchvision" if isolated
               else f"unexpected modules loaded: {answer.get('modules')}")
    report.warnings += honesty_warnings(manifest)


def describe_confinement(info: dict[str, Any] | None, unconfined: str | None) -> str:
    """One line: what confined the child, or why it ran unconfined."""
    if unconfined is not None:
        return f"unconfined: {unconfined}"
    assert info is not None
    from zoo._core.settings import format_size

    memory = info.get("memory_limit")
    return (f"writes only in its folder ({info.get('filesystem')}), no network "
            f"({info.get('network')}), memory at most {format_size(memory) if memory else '-'}")


def _same_output(a: GoldenOutput, b: GoldenOutput) -> bool:
    """Whether two golden outputs are the same: the same bytes, or (inputs of two sizes, as
    the noise and scene inputs are for size-agnostic artifacts) the same largest value and
    channel means (to float32 rounding: a mean over more pixels may differ in its last bits),
    which an output that ignores its input gives and a working model never does."""
    if a.sha256 and a.sha256 == b.sha256:
        return True
    tol = 1e-6 * max(a.abs_max, 1e-30)
    return (a.shape != b.shape and a.abs_max == b.abs_max
            and len(a.channel_means) == len(b.channel_means)
            and all(abs(x - y) <= tol for x, y in zip(a.channel_means, b.channel_means,
                                                       strict=True)))


def honesty_warnings(manifest: Manifest) -> list[str]:
    """What a passing golden check cannot tell: identical outputs for both golden inputs, or
    one class everywhere (random-init weights are the usual cause)."""
    cases = manifest.golden.cases
    warnings = []
    if len(cases) > 1 and all(_same_output(cases[0].output, c.output) for c in cases[1:]):
        warnings.append("the model gives identical outputs for both golden inputs: this check "
                        "cannot tell it from a broken model (random-init weights are the "
                        "usual cause)")
    flat = [c.name for c in cases if c.output.argmax_histogram and
            sum(1 for n in c.output.argmax_histogram if n) == 1]
    if flat and not warnings:
        warnings.append(f"the prediction is one class everywhere on the {', '.join(flat)} "
                        "input: this check cannot tell the model from a broken one "
                        "(random-init weights are the usual cause)")
    return warnings


@dataclass(frozen=True)
class RunLimits:
    """How the child that runs the artifact is bounded."""

    memory: int = DEFAULT_MEMORY_LIMIT
    confine: bool = True


def _expected_digest(manifest: Manifest) -> str | None:
    return manifest.artifact.sha256 if manifest.artifact is not None else None


Provenance = Callable[[Path, Path, Manifest], tuple[bool, str]]


def verify(path: Path, *, time_limit: float = 300.0,
           provenance: Provenance | None = None, limits: RunLimits | None = None) -> Report:
    """Check an artifact end to end; never raises for a bad artifact, only reports.

    ``provenance(artifact, sidecar, manifest) -> (ok, detail)`` adds a signature check
    (``zoo verify --trusted-key``) right after the hashes. ``limits`` bound the confined child
    that runs the artifact (memory ceiling; confinement on by default)."""
    limits = limits or RunLimits()
    from zoo.export import get_exporter

    artifact, sidecar = locate(path)
    report = Report(artifact=artifact)
    if not artifact.exists():
        report.add("artifact", False, f"{artifact.name} is missing")
        return report
    manifest = _read_manifest(report, sidecar)
    if manifest is None:
        return report
    report.untrained = manifest.untrained
    try:
        exporter = get_exporter(manifest.export.format)
    except ZooError as exc:
        report.add("format", False, f"{exc}; install the plugin that provides it")
        return report
    if not _check_hashes(report, artifact, sidecar, manifest):
        return report  # never run bytes that are not the recorded ones
    if provenance is not None and not report.add("signature", *provenance(artifact, sidecar,
                                                                          manifest)):
        return report
    refused = exporter.check_container(artifact)
    if not report.add("container", refused is None, refused or "every entry checked"):
        return report  # duplicate manifests, unsafe names, bombs, external data: not read
    if not _check_embedded(report, exporter, artifact, manifest, time_limit, limits):
        return report
    if not _check_policy(report, manifest):
        return report
    for finding in exporter.inspect(artifact, manifest):
        report.add(finding.name, finding.ok, finding.detail)
    if not report.ok:
        return report
    reason = exporter.runtime_unavailable()
    if reason is not None:
        report.not_run_reason = reason
        return report
    _check_parity(report, exporter, artifact, manifest, time_limit, limits)
    return report
