"""The flagship's TorchScript and lite archives are the same bytes every time (issue 10, item 7).

What made them differ: scripting names re-specialised classes ``___torch_mangle_N`` from a
process-wide counter (so the bytes depended on what the process scripted before), debug
records held absolute install paths, and the code printer once in a while hoisted two
constants in the other order. ``zoo_plugins.formats.canonical`` writes them canonically.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import ROOT, run_zoo
from zoo_plugins.formats.canonical import canonical_code, canonicalize

FLAGSHIP = "deeplabv3_resnet50"
SIZE = 64

# Runs in a fresh interpreter: exports the untrained flagship through the exporters, in the
# order given, after scripting whatever "warm" names (which advances torch's name counter).
EXPORT = r"""
import io, json, sys, warnings
from pathlib import Path
import torch
from zoo.export.build import build_model
from zoo.export.base import ExportOptions
from zoo.catalog.registry import default_registry
from zoo.weights.resolve import UNTRAINED
from zoo_plugins.formats.torchscript import LiteExporter, TorchScriptExporter

plan = json.loads(sys.argv[1])
warnings.simplefilter("ignore")
registry = default_registry()
for name in plan["warm"]:
    torch.jit.freeze(torch.jit.script(build_model(registry.get(name), UNTRAINED)))
card = registry.get(plan["model"])
model = build_model(card, UNTRAINED)
size = plan["size"]
options = ExportOptions(input_size=(size, size))
for fmt, out in plan["exports"]:
    exporter = TorchScriptExporter() if fmt == "torchscript" else LiteExporter()
    prepared = exporter.prepare(model, torch.zeros(1, 3, size, size), card, options)
    path = Path(out) / (card.name + exporter.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    exporter.save(prepared, path, {"manifest.json": "{}"})
    raw = plan.get("raw", {}).get(fmt)
    if raw:  # torch's own bytes, to compare outputs with
        Path(raw).parent.mkdir(parents=True, exist_ok=True)
        if fmt == "torchscript":
            torch.jit.save(prepared.module, raw)
        else:
            prepared.module._save_for_lite_interpreter(raw)
"""


def _spawn(plan: dict, cwd: Path, hash_seed: str) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONHASHSEED": hash_seed,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", EXPORT, json.dumps(plan)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def flagship(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Two fresh processes at once, with other hash seeds, folders and histories: A exports
    TorchScript, lite, then TorchScript again; B scripts single_conv first, then exports lite
    and TorchScript. Returns every artifact by format, plus A's raw torch saves."""
    root = tmp_path_factory.mktemp("flagship")
    a, b = root / "a", root / "process-b"
    plans = [
        (a, "1", {"model": FLAGSHIP, "size": SIZE, "warm": [],
                  "exports": [["torchscript", str(a / "ts")], ["lite", str(a / "lite")],
                              ["torchscript", str(a / "again" / "nested")]],
                  "raw": {"torchscript": str(a / "raw" / "raw.pt"),
                          "lite": str(a / "raw" / "raw.ptl")}}),
        (b, "2", {"model": FLAGSHIP, "size": SIZE, "warm": ["single_conv"],
                  "exports": [["lite", str(b / "out" / "lite")],
                              ["torchscript", str(b / "out" / "ts")]]}),
    ]
    procs = [_spawn(plan, cwd, seed) for cwd, seed, plan in plans]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err
    return {
        "torchscript": sorted(root.rglob(f"{FLAGSHIP}.pt")),
        "lite": sorted(root.rglob(f"{FLAGSHIP}.ptl")),
        "raw": [a / "raw" / "raw.pt", a / "raw" / "raw.ptl"],
    }


@pytest.mark.parametrize("fmt", ["torchscript", "lite"])
def test_flagship_is_byte_identical_across_processes_folders_and_runs(
    flagship: dict[str, list[Path]], fmt: str
) -> None:
    artifacts = flagship[fmt]
    assert len(artifacts) == (3 if fmt == "torchscript" else 2)
    first = artifacts[0].read_bytes()
    for other in artifacts[1:]:
        assert other.read_bytes() == first, f"{other} differs from {artifacts[0]}"


def _records(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}


@pytest.mark.parametrize("index", [0, 1], ids=["torchscript", "lite"])
def test_canonical_archive_holds_no_machine_facts(
    flagship: dict[str, list[Path]], index: int
) -> None:
    canonical = _records(flagship[["torchscript", "lite"][index]][0])
    raw = _records(flagship["raw"][index])
    assert any(n.endswith(".debug_pkl") for n in raw)  # what torch wrote
    assert not any(n.endswith(".debug_pkl") for n in canonical)
    mangles = {int(m) for n, data in canonical.items() if not n.startswith("constants/")
               for m in re.findall(rb"___torch_mangle_(\d+)", data)}
    assert mangles == {0}
    raw_mangles = {int(m) for n in raw for m in re.findall(r"___torch_mangle_(\d+)", n)}
    assert raw_mangles and raw_mangles != {0}  # the counter had moved on (lite came second)
    prefix = sys.prefix.encode()
    assert any(prefix in data for data in raw.values())
    assert not any(prefix in data for data in canonical.values())
    tensors = {n: d for n, d in raw.items() if n.startswith("constants/")}
    assert tensors == {n: d for n, d in canonical.items() if n.startswith("constants/")}


def test_canonical_archives_load_and_compute_what_torch_saved(
    flagship: dict[str, list[Path]],
) -> None:
    from torch.jit.mobile import _load_for_lite_interpreter

    x = torch.rand(1, 3, SIZE, SIZE)
    raw_pt, raw_ptl = flagship["raw"]
    with torch.no_grad():
        expected = torch.jit.load(str(raw_pt))(x)["out"]
        assert torch.equal(torch.jit.load(str(flagship["torchscript"][0]))(x)["out"], expected)
        lite = flagship["lite"][0]
        assert torch.equal(_load_for_lite_interpreter(str(lite))(x)["out"],
                           _load_for_lite_interpreter(str(raw_ptl))(x)["out"])
        assert torch.equal(torch.jit.load(str(lite))(x)["out"], expected)


class _Upsampler(nn.Module):
    """Small, with the flagship's trouble spot: F.interpolate's hoisted error strings."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = F.interpolate(self.conv(x), scale_factor=0.5, mode="bilinear", align_corners=False)
        return {"out": F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)}


def _frozen() -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    return torch.jit.freeze(torch.jit.script(_Upsampler().eval()))


def _save(module: torch.jit.ScriptModule) -> bytes:
    raw, out = io.BytesIO(), io.BytesIO()
    torch.jit.save(module, raw)
    canonicalize(raw.getvalue(), out)
    return out.getvalue()


def test_repeated_exports_in_one_process_are_identical() -> None:
    first, second = _frozen(), _frozen()  # the second is named from a later counter
    raw = [io.BytesIO(), io.BytesIO()]
    torch.jit.save(first, raw[0])
    torch.jit.save(second, raw[1])
    assert raw[0].getvalue() != raw[1].getvalue()
    assert _save(first) == _save(second)


def _swap_hoisted(code: str, a: str, b: str) -> str:
    """``code`` as the printer wrote it in the rare process: hoisted ``a`` and ``b`` in the
    other order, names swapped so that the body still means the same."""
    swapped = re.sub(rf"\b{a}\b", "_TMP", code)
    swapped = re.sub(rf"\b{b}\b", a, swapped)
    swapped = re.sub(r"\b_TMP\b", b, swapped)
    lines = swapped.splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if line.strip().startswith(f"{a} = "))
    j = next(n for n, line in enumerate(lines) if line.strip().startswith(f"{b} = "))
    lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


def test_hoisted_constants_in_the_other_order_give_the_same_archive() -> None:
    module = _frozen()
    raw = io.BytesIO()
    torch.jit.save(module, raw)
    reader = torch._C.PyTorchFileReader(io.BytesIO(raw.getvalue()))
    names = reader.get_all_records()
    [code_name] = [n for n in names if n.startswith("code/") and n.endswith(".py")]
    code = reader.get_record(code_name).decode()
    hoisted = re.findall(r"^    (_\d+) = \"", code, flags=re.M)
    assert len(hoisted) >= 2, code
    assert canonical_code(code) == code  # the printer's own order is already canonical
    flipped = _swap_hoisted(code, hoisted[0], hoisted[1])
    assert flipped != code and canonical_code(flipped) == code

    variant = io.BytesIO()  # the whole archive as the rare process would have written it
    writer = torch._C.PyTorchFileWriter(variant)
    for name in names:
        if name == ".data/serialization_id":
            continue
        data = flipped.encode() if name == code_name else reader.get_record(name)
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(torch.jit.load(io.BytesIO(variant.getvalue()))(x)["out"],
                           module(x)["out"])
    out = io.BytesIO()
    canonicalize(variant.getvalue(), out)
    assert out.getvalue() == _save(module)


def test_code_that_does_not_parse_is_left_alone() -> None:
    assert canonical_code("def f(:\n  _1 = 'a'\n") == "def f(:\n  _1 = 'a'\n"
    plain = "def f(x):\n    _0 = 'a'\n    _1 = 'b'\n    return g(_0, _1)\n"
    assert canonical_code(plain) == plain


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "lite"])
def test_zoo_fetch_flagship_is_byte_identical_in_ten_fresh_processes(
    fmt: str, tmp_path: Path
) -> None:
    """`zoo fetch deeplabv3_resnet50 --format F --weights none` ten times, two at a time, each
    with its own cache, output folder, working folder and hash seed; then `zoo verify`."""
    runs = 10
    suffix = ".pt" if fmt == "torchscript" else ".ptl"
    outs = [tmp_path / f"run{i}" / ("deep" * (i % 3)) / "out" for i in range(runs)]
    for start in range(0, runs, 2):
        procs = []
        for i in range(start, min(start + 2, runs)):
            cwd = tmp_path / f"cwd{i}"
            cwd.mkdir()
            env = {**os.environ, "ZOO_HOME": str(tmp_path / f"home{i}"),
                   "PYTHONHASHSEED": str(i + 1)}
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "zoo", "fetch", FLAGSHIP, "--format", fmt, "--weights",
                 "none", "--input-size", f"{SIZE}x{SIZE}", "-o", str(outs[i]), "--quiet"],
                cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for proc in procs:
            _, err = proc.communicate(timeout=900)
            assert proc.returncode == 0, err
    artifacts = [out / f"{FLAGSHIP}{suffix}" for out in outs]
    first = artifacts[0].read_bytes()
    assert all(a.read_bytes() == first for a in artifacts[1:])
    manifests = {(a.parent / f"{a.name}.manifest.json").read_bytes() for a in artifacts}
    assert len(manifests) == 1
    verify = run_zoo(["verify", str(artifacts[-1])])
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "VERIFIED" in verify.stdout


@pytest.mark.parametrize("fmt", ["torchscript", "lite", "lite-v6"])
def test_presave_then_save_gives_the_bytes_of_save_and_of_torchs_own_extra_files(
    fmt: str, tmp_path: Path
) -> None:
    """The pipeline serialises ahead (``presave``) while the golden inputs run, then adds the
    manifest: the archive must be the one a plain ``save`` writes, and the one torch writes
    with the extra file itself (then made canonical)."""
    from zoo.export.base import Prepared
    from zoo_plugins.formats.torchscript import LiteExporter, TorchScriptExporter

    exporter = TorchScriptExporter() if fmt == "torchscript" else LiteExporter()
    extra = {"manifest.json": '{"zoo": "manifest"}'}
    module = _frozen()
    version = 6 if fmt == "lite-v6" else None  # a backported archive
    plain = Prepared(module=module, method="script", optimizations={}, bytecode_version=version)
    ahead = Prepared(module=module, method="script", optimizations={}, bytecode_version=version)
    exporter.presave(ahead)
    assert ahead.presaved is not None
    exporter.save(plain, tmp_path / "plain", extra)
    exporter.save(ahead, tmp_path / "ahead", extra)
    assert (tmp_path / "plain").read_bytes() == (tmp_path / "ahead").read_bytes()

    raw = io.BytesIO()
    if fmt == "torchscript":
        torch.jit.save(module, raw, _extra_files=extra)
    else:
        raw.write(bytes(module._save_to_buffer_for_lite_interpreter(_extra_files=extra)))
    if version is not None:
        from torch.jit.mobile import _backport_for_mobile_to_buffer, _get_model_bytecode_version

        raw = io.BytesIO(bytes(_backport_for_mobile_to_buffer(io.BytesIO(raw.getvalue()),
                                                              version)))
        assert _get_model_bytecode_version(tmp_path / "ahead") == version
    by_torch = io.BytesIO()
    canonicalize(raw.getvalue(), by_torch)
    assert (tmp_path / "plain").read_bytes() == by_torch.getvalue()
    with zipfile.ZipFile(tmp_path / "ahead") as archive:
        assert archive.namelist()[0] == "archive/extra/manifest.json"
        assert archive.read("archive/extra/manifest.json").decode() == extra["manifest.json"]
