"""Weights are data, bounded: sizes are checked before anything is inflated, unusual tensors
are the weights' problem (never cast, never blamed on the plugin), and a download that fails
its checks never stays in the cache as if it were good.

Weight files are written by torch.save (then re-zipped where an attacker would); downloads
come from the real HTTP test server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_zoo
from tests.support.httpserver import HTTPTestServer, state_dict_bytes
from zoo.catalog.registry import Registry
from zoo.errors import DownloadError, PluginError
from zoo.export.build import WeightsError, build_model, weights_budget
from zoo.weights.cache import WeightsCache
from zoo.weights.resolve import ResolvedWeights, resolve_weights

CARD = Registry().get("single_conv")
WEIGHTS = state_dict_bytes("single_conv")
KEY = "conv_layer1.0.weight"


def _resolved(path: Path, url: str | None = None) -> ResolvedWeights:
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return ResolvedWeights(path, sha, url or str(path), url, False)


def _state() -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(WEIGHTS), weights_only=True)


def _bomb(path: Path, mib: int) -> Path:
    """single_conv's state dict plus a ``mib`` MiB tensor of zeros, re-zipped with deflate:
    a small file that expands to ``mib`` MiB."""
    state = _state()
    state["padding"] = torch.zeros(mib << 18)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    del state
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    path.write_bytes(out.getvalue())
    return path


# Loads PATH the way `zoo fetch` does and prints the peak RSS growth (MiB) and the error.
PEAK = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import torch
    from zoo.export.build import WeightsError, load_state_dict, weights_budget
    from zoo.catalog.registry import Registry
    budget = weights_budget(Registry().get("single_conv"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_state_dict(Path(sys.argv[1]), budget)
        error = None
    except WeightsError as exc:
        error = str(exc)
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({"grew_mib": grew, "error": error}))
""")


def test_a_deflated_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "bomb.pth", 512)
    assert bomb.stat().st_size < 2 << 20  # 512 MiB of tensor in under 2 MiB of file
    proc = subprocess.run([sys.executable, "-c", PEAK, str(bomb)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"] and f"weights file {bomb}" in result["error"]
    assert "declares 512.0 MiB, more than the 16.0 MiB allowed" in result["error"]
    assert result["grew_mib"] < 64, result  # nothing was inflated


def test_declared_sizes_are_bounded_by_the_card(tmp_path: Path) -> None:
    budget = weights_budget(CARD)
    assert 4 * CARD.num_params < budget <= 2 * 4 * CARD.num_params + (16 << 20)
    state = _state()
    state["extra"] = torch.zeros((budget // 4) + 1)  # stored, not compressed: just too big
    path = tmp_path / "big.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"declares .* MiB, more than the"):
        build_model(CARD, _resolved(path))


def _saved(tmp_path: Path, change: Callable[[torch.Tensor], torch.Tensor]) -> Path:
    state = _state()
    state[KEY] = change(state[KEY])
    path = tmp_path / "w.pth"
    torch.save(state, path)
    return path


def _nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: torch.empty(t.shape, device="meta"), "is on the meta device"),
    (lambda t: t.to(torch.complex64), "is complex64; expected floating point"),
    (lambda t: t.to(torch.int32), "is int32; expected floating point"),
    (lambda t: t.to_sparse(), "is sparse_coo; expected a dense tensor"),
    (lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8), "is quantized (qint8)"),
    (_nan, "holds 1 NaN or infinite value"),
    (lambda t: t.clone().fill_(float("inf")), "NaN or infinite values"),
], ids=["meta", "complex", "int", "sparse", "quantized", "nan", "inf"])
def test_unusual_tensors_are_the_weights_problem(change: Callable[[torch.Tensor], torch.Tensor],
                                                  message: str, tmp_path: Path) -> None:
    path = _saved(tmp_path, change)
    with pytest.raises(WeightsError) as caught:
        build_model(CARD, _resolved(path))
    assert not isinstance(caught.value, PluginError)
    text = str(caught.value)
    assert text.startswith(f"weights file {path}: tensor {KEY!r}") and message in text, text


def test_fp16_weights_are_still_accepted(tmp_path: Path) -> None:
    path = _saved(tmp_path, lambda t: t.half())
    model = build_model(CARD, _resolved(path))
    assert model.state_dict()[KEY].dtype == torch.float32


@pytest.mark.parametrize(("body", "problem"), [
    (b"", "an empty body"),
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "an HTML page"),
    (WEIGHTS[: len(WEIGHTS) // 2], "a damaged ZIP"),
], ids=["empty", "html", "truncated"])
def test_a_bad_body_is_not_cached_and_the_fixed_server_is_used(
        body: bytes, problem: str, http_server: HTTPTestServer) -> None:
    url = http_server.serve("/w.pth", body)
    with pytest.raises(DownloadError, match=problem) as caught:
        resolve_weights(CARD, url, progress="never")
    assert "nothing was cached" in str(caught.value)
    cache = WeightsCache()
    assert cache.find(url=url) is None and cache.entries() == []
    http_server.serve("/w.pth", WEIGHTS)  # the server is fixed
    resolved = resolve_weights(CARD, url, progress="never")
    assert resolved.path is not None and resolved.path.read_bytes() == WEIGHTS


def test_a_cached_download_that_fails_to_load_is_removed(http_server: HTTPTestServer) -> None:
    url = http_server.serve("/w.pth", b"Service temporarily unavailable, try later\n")
    first = resolve_weights(CARD, url, progress="never")  # not recognisably bad: cached
    with pytest.raises(WeightsError, match="removed from the weights cache"):
        build_model(CARD, first)
    assert first.path is not None and not first.path.exists()
    http_server.serve("/w.pth", WEIGHTS)
    second = resolve_weights(CARD, url, progress="never")
    assert second.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    build_model(CARD, second)  # loads
    assert http_server.stats("/w.pth").requests == 1  # downloaded again (stats reset by serve)


def test_a_local_file_that_fails_is_left_alone(tmp_path: Path) -> None:
    path = _saved(tmp_path, lambda t: t.to(torch.complex64))
    with pytest.raises(WeightsError) as caught:
        build_model(CARD, _resolved(path))
    assert path.exists() and "removed" not in str(caught.value)


def test_cache_verify_finds_a_planted_bad_entry() -> None:
    cache = WeightsCache()
    for body in (b"<html><body>502 Bad Gateway</body></html>", b"", WEIGHTS):
        part = cache.part_path("planted")
        part.write_bytes(body)
        cache.add(part, hashlib.sha256(body).hexdigest(), url="https://example.com/w.pth")
    proc = run_zoo(["cache", "verify", "--json"])
    assert proc.returncode == 1, proc.stderr
    files = {f["sha256"]: f for f in json.loads(proc.stdout)["files"]}
    html = files[hashlib.sha256(b"<html><body>502 Bad Gateway</body></html>").hexdigest()]
    empty = files[hashlib.sha256(b"").hexdigest()]
    good = files[hashlib.sha256(WEIGHTS).hexdigest()]
    assert not html["ok"] and "HTML" in html["problem"] and html["removed"]
    assert not empty["ok"] and empty["problem"] == "an empty body"
    assert good["ok"] and good["problem"] is None
    assert [e.sha256 for e in cache.entries()] == [good["sha256"]]
    text = run_zoo(["cache", "verify"])
    assert text.returncode == 0 and "1 ok, 0 bad" in text.stdout
