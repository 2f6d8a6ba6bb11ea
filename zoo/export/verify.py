"""``zoo verify``: checksums, manifest consistency and golden parity of an exported artifact.

The parity run happens in a fresh Python process that imports neither zoo nor torchvision and
loads the artifact with the format's own runtime loader, the way an app on a device would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from zoo.errors import UsageError
from zoo.export import get_exporter
from zoo.export.checksums import SUMS_NAME, read_sums
from zoo.fsutil import sha256_file
from zoo.manifest import EMBEDDED_NAME, Manifest, sidecar_paths


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    """Every check made, in order; ``ok`` only when all passed."""

    artifact: Path
    checks: list[Check] = field(default_factory=list)
    parity: dict[str, Any] | None = None
    untrained: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "artifact": str(self.artifact),
            "ok": self.ok,
            "checks": [c.__dict__ for c in self.checks],
            "parity": self.parity,
            "untrained": self.untrained,
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
        manifest = Manifest.model_validate_json(sidecar.read_text(encoding="utf-8"))
    except (ValidationError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0]
        report.add("manifest", False, f"{sidecar.name} is not a valid manifest: {first}")
        return None
    if manifest.artifact is None:
        report.add("manifest", False, f"{sidecar.name} has no artifact hash")
        return None
    return manifest if report.add("manifest", True, f"{sidecar.name} is valid") else None


def _check_hashes(report: Report, artifact: Path, sidecar: Path, manifest: Manifest) -> bool:
    facts = manifest.artifact
    assert facts is not None
    actual = sha256_file(artifact)
    size = artifact.stat().st_size
    ok = report.add(
        "sha256 (manifest)", actual == facts.sha256 and size == facts.size,
        f"{actual[:16]}… {size} bytes" + ("" if actual == facts.sha256 else
                                           f" != expected {facts.sha256[:16]}… {facts.size} bytes"),
    )
    sums = read_sums(artifact.parent / SUMS_NAME)
    if not sums:
        report.add("SHA256SUMS", True, f"no {SUMS_NAME} beside the artifact (skipped)")
        return ok
    for name, want in ((artifact.name, actual), (sidecar.name, sha256_file(sidecar))):
        listed = sums.get(name)
        if listed is None:
            ok &= report.add("SHA256SUMS", False, f"{name} is not listed in {SUMS_NAME}")
        else:
            detail = "matches" if listed == want else f"{want[:16]}… != listed {listed[:16]}…"
            ok &= report.add("SHA256SUMS", listed == want, f"{name}: {detail}")
    return ok


def _check_embedded(report: Report, artifact: Path, manifest: Manifest) -> None:
    exporter = get_exporter(manifest.export.format)
    embedded = exporter.read_embedded(artifact, EMBEDDED_NAME)
    if embedded is None:
        report.add("embedded manifest", False, "cannot read the manifest embedded in the artifact")
        return
    same = embedded == manifest.embedded().to_json()
    report.add("embedded manifest", same,
               "matches the sidecar" if same else "differs from the sidecar manifest")


def run_parity(artifact: Path, manifest: Manifest, threads: int = 1) -> dict[str, Any]:
    """Run the golden input through the artifact in a fresh process; returns the runner's JSON."""
    exporter = get_exporter(manifest.export.format)
    request = {
        "format": manifest.export.format,
        "artifact": str(artifact.resolve()),
        "golden": manifest.golden.model_dump(mode="json"),
        "output_key": manifest.output.key,
        "threads": threads,
        "engine": manifest.quantization.details.get("engine") if manifest.quantization else None,
    }
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    proc = subprocess.run(
        [sys.executable, "-c", exporter.runner_source(), json.dumps(request)],
        capture_output=True, text=True, env=env, check=False, timeout=900,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "problems": [f"the runtime could not run the artifact: {tail}"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_parity(report: Report, artifact: Path, manifest: Manifest) -> None:
    result = run_parity(artifact, manifest)
    report.parity = result
    golden = manifest.golden
    if result.get("max_abs_diff") is None:
        report.add("parity", False, "; ".join(result.get("problems", [])) or "failed")
        return
    tol = (f"limit {result['limit']:.3g} = atol {golden.atol:g} + rtol {golden.rtol:g} × "
           f"max|out| {golden.output.abs_max:.3g}")
    detail = (f"max |Δ| {result['max_abs_diff']:.3g} ({tol}) on {golden.input.shape}, "
              f"argmax agreement {result['argmax_agreement']:.1%}")
    if result.get("bit_exact"):
        detail += ", bit-exact"
    report.add("parity", bool(result["ok"]), detail if result["ok"] else
               f"{detail}: {'; '.join(result['problems'])}")
    isolated = not any(result.get("modules", {}).values())
    report.add("runtime isolation", isolated, "loaded without zoo or torchvision" if isolated
               else f"unexpected modules loaded: {result.get('modules')}")
    want = manifest.output.kind
    got = result.get("result_type")
    keys_ok = want != "dict" or manifest.output.key in (result.get("result_keys") or [])
    report.add("output contract", got == want and keys_ok,
               f"{got} with keys {result.get('result_keys')}" if got == "dict" else f"{got}")


def verify(path: Path) -> Report:
    """Check an artifact end to end; never raises for a bad artifact, only reports."""
    artifact, sidecar = locate(path)
    report = Report(artifact=artifact)
    if not artifact.is_file():
        report.add("artifact", False, f"{artifact.name} is missing")
        return report
    manifest = _read_manifest(report, sidecar)
    if manifest is None:
        return report
    report.untrained = manifest.untrained
    _check_hashes(report, artifact, sidecar, manifest)
    _check_embedded(report, artifact, manifest)
    _check_parity(report, artifact, manifest)
    return report
