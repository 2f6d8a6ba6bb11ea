"""``zoo bench --publish``: a real bench of the tiny single_conv (weights from the tests' HTTP
server) sent to moto's S3 server, signed with an openssl-made key, then shown by
``zoo site --store`` with its numbers and signer; the refusals of --publish/--sign without a
store are one line, exit 2, before any measuring."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from tests.bench.test_bench_cli import bench
from tests.conftest import run_zoo
from tests.support.export_helpers import make_weights, sha256_file
from tests.support.httpserver import HTTPTestServer, http_server  # noqa: F401
from tests.support.s3server import Keys, S3Store
from zoo.bench import read_record
from zoo.store.keys import load_public_key


def test_publish_then_site_shows_the_numbers_and_the_signer(
        tmp_path: Path, s3_store: S3Store, keys: Keys,
        http_server: HTTPTestServer) -> None:  # noqa: F811
    weights = make_weights("single_conv", tmp_path)
    url = http_server.serve(f"/{weights.name}", weights) + f"#sha256={sha256_file(weights)}"
    home, out = tmp_path / "home", tmp_path / "out"
    store = ["--store", s3_store.url, *s3_store.server.store_options()]
    proc = bench(["single_conv", "--weights", url, "--formats", "onnx:fp32", "--runs", "2",
                  "--size", "32", "-o", str(out), *store, "--publish", "--sign",
                  str(keys.team)], home, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fingerprint = load_public_key(keys.team_pub).short
    match = re.search(r"bench record published in \S+ as (bench/single_conv/[0-9a-f]{64}\.json) "
                      rf"\(signed by {fingerprint}\)", proc.stderr)
    assert match, proc.stderr
    record = read_record(out / "single_conv.bench.json")
    row = record["rows"][0]
    assert row["status"] == "ok" and row["ratio"] is not None

    site = tmp_path / "site"
    built = run_zoo(["site", "-o", str(site), "--no-overlays", *store, "--trusted-key",
                     str(keys.team_pub)], env={"ZOO_HOME": str(home)})
    assert built.returncode == 0, built.stderr[-3000:]
    assert "1 bench record (see store.html)" in built.stdout
    page = (site / "models" / "single_conv.html").read_text(encoding="utf-8")
    groups = re.findall(r'<section class="bench-group".*?</section>', page, re.S)
    assert len(groups) == 1
    shown = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", groups[0])).split())
    assert f"the team store, signed by {fingerprint} (a trusted key)" in shown
    assert record["machine"]["cpu"] in shown and record["created"] in shown
    assert f"onnx fp32 ok {row['ratio']['median']:.2f}" in shown
    assert f"{row['latency_ms']['median']:.1f}" in shown


@pytest.mark.parametrize(("args", "said"), [
    (["--sign", "{key}"], "--sign only makes sense with --publish"),
    (["--publish"], "no team store: pass --store URL or set ZOO_STORE"),
    (["--publish", "--sign", "{key}"], "no team store"),
    (["--publish", "--no-store", "--store", "file:///x"], "--publish needs a store"),
    (["--publish", "--store", "file:///x", "--sign", "{pub}"], "that is a public key"),
])
def test_publish_and_sign_refusals_are_one_line_exit_2(tmp_path: Path, keys: Keys,
                                                       args: list[str], said: str) -> None:
    args = [a.replace("{key}", str(keys.team)).replace("{pub}", str(keys.team_pub))
            for a in args]
    proc = run_zoo(["bench", "single_conv", "--weights", "none", "--formats", "onnx:fp32",
                    *args], cwd=tmp_path, env={"ZOO_STORE": ""})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], proc.stderr
    assert not list(tmp_path.glob("*.bench.json")) and not list(tmp_path.glob("*.onnx"))


def test_a_store_that_cannot_take_the_record_is_exit_1_and_the_record_is_kept(
        tmp_path: Path) -> None:
    gone = (tmp_path / "no-store").as_uri()
    proc = run_zoo(["bench", "single_conv", "--weights", "none", "--formats", "onnx:fp32",
                    "--runs", "1", "--size", "32", "--store", gone, "--publish", "-o",
                    str(tmp_path / "out")], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "no-store" in last and f"kept in {tmp_path / 'out' / 'single_conv.bench.json'}" \
        in last, proc.stderr
    assert "Traceback" not in proc.stderr
    read_record(tmp_path / "out" / "single_conv.bench.json")
