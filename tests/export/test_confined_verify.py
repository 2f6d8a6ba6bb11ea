"""Verify contains what it runs (issue 19): hostile artifacts cannot write outside the child's
folder or reach the network, a memory-hungry one stops at the ceiling, a file swapped after the
hash check never runs, and a check that proves nothing says so."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_zoo

LANDLOCK = sys.platform.startswith("linux")


def sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real single_conv TorchScript export folder (untrained, 32x48)."""
    folder = tmp_path_factory.mktemp("confined")
    proc = run_zoo(["fetch", "single_conv", "--weights", "none", "--format", "torchscript",
                    "--input-size", "32x48", "-o", str(folder / "o"), "--quiet"],
                   env={"ZOO_HOME": str(folder / "home")})
    assert proc.returncode == 0, proc.stderr
    return folder / "o"


def hostile(genuine: Path, dest: Path, forward: str, *, lite: bool = False) -> Path:
    """A copy of the export whose artifact runs ``forward`` (TorchScript source), carrying the
    genuine embedded manifest; sidecar and SHA256SUMS fixed, so every check before the run
    passes (what a store writer or a malicious colleague could hand over)."""
    import shutil

    shutil.copytree(genuine, dest)
    code = textwrap.dedent('''
        import sys, zipfile, torch
        path, out, lite = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith("extra/manifest.json"))
            embedded = z.read(name).decode()
        class Hostile(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
        %s
        m = torch.jit.script(Hostile())
        if lite:
            m._save_for_lite_interpreter(out, _extra_files={"manifest.json": embedded})
        else:
            torch.jit.save(m, out, _extra_files={"manifest.json": embedded})
    ''') % textwrap.indent(textwrap.dedent(forward), " " * 12)
    artifact = dest / "single_conv.pt"
    target = dest / ("single_conv.ptl" if lite else "single_conv.pt")
    script = dest / "make_hostile.py"  # TorchScript compiles from a source file
    script.write_text(code)
    subprocess.run([sys.executable, str(script), str(artifact), str(target), "1" if lite else "0"],
                   check=True, timeout=120)
    script.unlink()
    sidecar = dest / "single_conv.pt.manifest.json"
    manifest = json.loads(sidecar.read_text())
    if lite:
        artifact.unlink()
        manifest["artifact"]["file"] = manifest["export"]["file"] = target.name
        manifest["export"]["format"] = "lite"
        (dest / "single_conv.pt.ops.yaml").unlink(missing_ok=True)
        manifest["export"]["operators_file"] = None
        sidecar.unlink()
        sidecar = dest / "single_conv.ptl.manifest.json"
    manifest["artifact"]["sha256"] = sha(target)
    manifest["artifact"]["size"] = target.stat().st_size
    sidecar.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    (dest / "SHA256SUMS").unlink()
    return target


WRITER = '''
    f = torch.from_file("{target}", shared=True, size=16, dtype=torch.uint8)
    f.fill_(65)  # writes through the shared mapping into the file
    return torch.zeros(1, 23, x.shape[2], x.shape[3]) + f[0].float() * 0.0
'''


@pytest.mark.skipif(not LANDLOCK, reason="Landlock confinement is Linux-only")
def test_a_torchscript_artifact_cannot_write_outside_its_folder(
        genuine: Path, tmp_path: Path) -> None:
    target = tmp_path / "outside" / "evil.pth"
    target.parent.mkdir()
    target.write_bytes(b"\0" * 16)  # from_file(shared=True) writes into an existing file
    artifact = hostile(genuine, tmp_path / "h", WRITER.format(target=target))
    proc = run_zoo(["verify", str(artifact), "--json"], env={"ZOO_HOME": str(tmp_path / "z")})
    report = json.loads(proc.stdout)
    assert target.read_bytes() == b"\0" * 16, "the artifact wrote outside its folder"
    assert proc.returncode == 1 and report["verdict"] == "failed"
    assert any(c["name"] == "golden run" and not c["ok"] for c in report["checks"])
    # unconfined, the same artifact does write: the test means something
    loose = run_zoo(["verify", str(artifact), "--json", "--no-confine"],
                    env={"ZOO_HOME": str(tmp_path / "z")})
    assert target.read_bytes() == b"A" * 16
    assert json.loads(loose.stdout)["confined"] is False


@pytest.mark.skipif(not LANDLOCK, reason="Landlock confinement is Linux-only")
def test_a_lite_artifact_cannot_write_outside_its_folder(genuine: Path, tmp_path: Path) -> None:
    target = tmp_path / "outside.bin"
    target.write_bytes(b"\0" * 16)
    artifact = hostile(genuine, tmp_path / "h", WRITER.format(target=target), lite=True)
    proc = run_zoo(["verify", str(artifact), "--json"], env={"ZOO_HOME": str(tmp_path / "z")})
    assert target.read_bytes() == b"\0" * 16
    assert proc.returncode == 1, proc.stdout[-2000:]


def test_a_memory_hungry_artifact_stops_at_the_ceiling_with_one_clear_line(
        genuine: Path, tmp_path: Path) -> None:
    artifact = hostile(genuine, tmp_path / "h", '''
        big = torch.ones(3 << 28)  # 3 GiB of float32
        return torch.zeros(1, 23, x.shape[2], x.shape[3]) + big[0]
    ''')
    proc = run_zoo(["verify", str(artifact), "--memory-limit", "1GiB"],
                   env={"ZOO_HOME": str(tmp_path / "z")})
    assert proc.returncode == 1
    assert "exceeded the memory limit of 1.0 GiB (raise it with --memory-limit)" in proc.stdout
    bad = run_zoo(["verify", str(artifact), "--memory-limit", "lots"])
    assert bad.returncode == 2 and "not a size" in bad.stderr


def test_a_file_swapped_after_the_hash_check_never_runs(genuine: Path, tmp_path: Path) -> None:
    """The provenance hook runs after the hashes were checked and before the golden run: the
    moment an attacker racing verify would swap the file. The run uses a private copy that
    must hash to the manifest, so the swapped bytes never run."""
    import shutil

    from zoo.export.verify import verify

    folder = tmp_path / "o"
    shutil.copytree(genuine, folder)
    target = tmp_path / "swapped.bin"
    target.write_bytes(b"\0" * 16)
    evil = hostile(genuine, tmp_path / "h", WRITER.format(target=target))
    artifact = folder / "single_conv.pt"

    def swap(*_args: object) -> tuple[bool, str]:
        shutil.copyfile(evil, artifact)
        return True, "swapped the file after the hash check"

    report = verify(artifact, provenance=swap)
    assert report.verdict == "failed"
    failed = [c for c in report.checks if not c.ok]
    assert failed and "changed after they were checked" in failed[0].detail
    assert target.read_bytes() == b"\0" * 16


def test_a_constant_model_is_verified_with_a_warning(tmp_path: Path) -> None:
    """Both golden inputs give the same output: VERIFIED, and the report says the check cannot
    tell this model from a broken one."""
    import torch

    import zoo
    from zoo.catalog.plugins import PluginHost
    from zoo.catalog.registry import Registry
    from zoo.export.base import ExportOptions
    from zoo.export.pipeline import export_artifact
    from zoo.export.verify import verify
    from zoo.weights.resolve import UNTRAINED

    class Constant(torch.nn.Module):
        def __init__(self, classes: int) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, classes, 3, padding=1)
            with torch.no_grad():
                self.conv.weight.zero_()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.conv(x))

    class Builders:
        @zoo.hookimpl
        def zoo_builders(self) -> dict[str, object]:
            return {"single_conv": lambda card, aux=False: Constant(card.num_classes)}

    host = PluginHost()
    host.register(Builders(), name="constant")
    host.load_entry_points()
    registry = Registry(host=host)
    card = registry.get("single_conv")
    outcome = export_artifact(card, UNTRAINED, "torchscript", tmp_path / "o",
                              ExportOptions(input_size=(32, 48)), registry=registry)
    report = verify(outcome.artifact)
    assert report.verdict == "verified", report.checks
    assert report.warnings and "cannot tell it from a broken model" in report.warnings[0]
    assert report.as_dict()["warnings"] == report.warnings


# -- zoo run --artifact and load_artifact: the same confined child ------------------------------


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    from tests.inference.test_imaging import make_image

    path = tmp_path_factory.mktemp("pictures") / "street.png"
    Image.fromarray(make_image(height=20, width=30)).save(path)
    return path


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("zoo: error:")]


@pytest.mark.skipif(not LANDLOCK, reason="Landlock confinement is Linux-only")
def test_zoo_run_artifact_cannot_write_outside_its_folder(genuine: Path, tmp_path: Path,
                                                          picture: Path) -> None:
    target = tmp_path / "outside.bin"
    target.write_bytes(b"\0" * 16)
    artifact = hostile(genuine, tmp_path / "h", WRITER.format(target=target))
    args = ["run", "single_conv", str(picture), "--artifact", str(artifact),
            "-o", str(tmp_path / "out")]
    proc = run_zoo(args)
    assert target.read_bytes() == b"\0" * 16, "the artifact wrote outside its folder"
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (error,) = _errors(proc.stderr)
    assert "the runtime could not run the artifact" in error and str(target) in error
    assert not (tmp_path / "out").exists()
    # in zoo's own process, the same artifact does write: --in-process means what it says
    loose = run_zoo([*args, "--in-process", "--json"])
    assert loose.returncode == 0, loose.stderr
    assert target.read_bytes() == b"A" * 16
    report = json.loads(loose.stdout)
    assert report["in_process"] is True and report["confinement"] is None


def test_zoo_run_artifact_stops_at_the_memory_ceiling(genuine: Path, tmp_path: Path,
                                                      picture: Path) -> None:
    artifact = hostile(genuine, tmp_path / "h", '''
        big = torch.ones(3 << 28)  # 3 GiB of float32
        return torch.zeros(1, 23, x.shape[2], x.shape[3]) + big[0]
    ''')
    proc = run_zoo(["run", "single_conv", str(picture), "--artifact", str(artifact),
                    "--memory-limit", "1GiB", "-o", str(tmp_path / "out")])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (error,) = _errors(proc.stderr)
    assert error.endswith("the runtime exceeded the memory limit of 1.0 GiB (raise it with "
                          "--memory-limit)"), error


@pytest.mark.parametrize("args,message", [
    (["--in-process"], "--in-process applies to an --artifact"),
    (["--memory-limit", "2GiB"], "--memory-limit applies to an --artifact"),
    (["--artifact", "{artifact}", "--in-process", "--memory-limit", "2GiB"],
     "drop one of them"),
    (["--artifact", "{artifact}", "--memory-limit", "lots"], "not a size"),
])
def test_zoo_run_confinement_flags_are_checked(genuine: Path, picture: Path,
                                               args: list[str], message: str) -> None:
    artifact = str(genuine / "single_conv.pt")
    proc = run_zoo(["run", "single_conv", str(picture), "--weights", "none",
                    *[a.format(artifact=artifact) for a in args]]
                   if "--artifact" not in args else
                   ["run", "single_conv", str(picture), *[a.format(artifact=artifact)
                                                          for a in args]])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_load_artifact_runs_in_a_confined_child_unless_in_process(genuine: Path,
                                                                  picture: Path) -> None:
    import numpy as np

    from zoo.inference.predictor import UntrainedWarning, load_artifact

    artifact = genuine / "single_conv.pt"
    with pytest.warns(UntrainedWarning):
        confined = load_artifact(artifact)
    with pytest.warns(UntrainedWarning):
        local = load_artifact(artifact, in_process=True)
    with confined:
        proc = confined.module._proc  # the child serving it
        assert proc.poll() is None
        if LANDLOCK:
            assert confined.unconfined is None, confined.confinement
            assert confined.confinement["filesystem"].startswith("landlock")
        np.testing.assert_array_equal(confined.predict(picture), local.predict(picture))
    assert proc.poll() is not None  # closed with the predictor
    assert (local.confinement, local.unconfined) == (None, "--in-process")


# -- the confinement itself, without torch ------------------------------------------------------


PROBE = '''
import json, socket, sys, types
request = json.loads(sys.argv[1])
mod = types.ModuleType("zoo_confine")
exec(request["source"], mod.__dict__)
info = mod.confine(request["work"], 1 << 30)
found = {"info": info}
for name, family, kind in (("tcp", socket.AF_INET, socket.SOCK_STREAM),
                           ("udp", socket.AF_INET, socket.SOCK_DGRAM),
                           ("unix", socket.AF_UNIX, socket.SOCK_STREAM)):
    try:
        socket.socket(family, kind).close()
        found[name] = "made"
    except OSError as exc:
        found[name] = type(exc).__name__
for name in ("inside", "outside"):
    try:
        with open(request[name], "w") as fh:
            fh.write("x")
        found[name] = "written"
    except OSError as exc:
        found[name] = type(exc).__name__
print(json.dumps(found))
'''


@pytest.mark.skipif(not LANDLOCK, reason="Landlock confinement is Linux-only")
def test_the_confined_child_makes_no_socket_and_writes_only_its_folder(tmp_path: Path) -> None:
    from zoo.export.sandbox import CONFINE_SOURCE

    work = tmp_path / "work"
    work.mkdir()
    request = {"source": CONFINE_SOURCE, "work": str(work), "inside": str(work / "ok.txt"),
               "outside": str(tmp_path / "evil.pth")}
    proc = subprocess.run([sys.executable, "-I", "-c", PROBE, json.dumps(request)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["info"]["problems"] == [], found
    assert (found["tcp"], found["udp"], found["unix"]) == ("PermissionError",) * 3, found
    assert (found["inside"], found["outside"]) == ("written", "PermissionError"), found
    assert not (tmp_path / "evil.pth").exists()
