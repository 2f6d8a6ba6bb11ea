"""zoo.bench.measure: interleaved pairs with an idle gap before every call, the steady
allocator, and fidelity."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from zoo.bench.measure import SETTLE_S, argmax_agreement, interleaved, sqnr_db
from zoo.bench.record import SQNR_CAP_DB


def test_pairs_alternate_and_every_call_starts_after_the_idle_gap() -> None:
    events: list[str] = []
    now = [0.0]
    cost = {"eager": 0.050, "candidate": 0.020}

    def call(name: str):  # a call advances the fake clock by its cost
        def run(x: object) -> None:
            events.append(name)
            now[0] += cost[name]
        return run

    def sleep(seconds: float) -> None:
        events.append(f"sleep {seconds}")
        now[0] += seconds  # idle time passes too, but is never counted

    timing = interleaved(call("eager"), call("candidate"), None, runs=3, warmup=1,
                         clock=lambda: now[0], sleep=sleep)
    gap = f"sleep {SETTLE_S}"
    assert events == [gap, "eager", gap, "candidate"] * 4  # 1 warm-up pair, 3 timed
    assert timing.eager_ms == pytest.approx([50.0] * 3)
    assert timing.candidate_ms == pytest.approx([20.0] * 3)
    assert timing.ratios == pytest.approx([0.4] * 3)


def test_a_zero_length_call_counts_one_tick_and_runs_must_be_positive() -> None:
    timing = interleaved(lambda x: None, lambda x: None, None, runs=2, warmup=0,
                         clock=lambda: 1.0, settle_s=0.0)
    assert timing.eager_ms == [pytest.approx(1e-3)] * 2 and timing.ratios == [1.0, 1.0]
    with pytest.raises(ValueError):
        interleaved(lambda x: None, lambda x: None, None, runs=0)


def test_fidelity_numbers() -> None:
    reference = torch.zeros(1, 3, 2, 2)
    reference[:, 1] = 1.0
    assert sqnr_db(reference, reference) == SQNR_CAP_DB
    noisy = reference + 0.1
    assert sqnr_db(reference, noisy) == pytest.approx(10 * torch.log10(
        torch.tensor(4.0 / (12 * 0.01))).item(), rel=1e-6)
    flipped = reference.clone()
    flipped[0, 2, 0, 0] = 2.0  # one pixel of four now argmaxes to class 2
    assert argmax_agreement(reference, flipped) == 0.75


ALLOCATIONS = r"""
import ctypes, json, resource, sys
sys.path.insert(0, sys.argv[1])
steady = sys.argv[2] == "steady"
if steady:
    from zoo.bench.measure import steady_allocator
    assert steady_allocator()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(4):  # a forward pass's buffer: taken, written, given back
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(16 << 20)
    ctypes.memset(block, 1, 16 << 20)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_steady_allocator_reuses_freed_blocks_from_the_second_call_on() -> None:
    def faults(mode: str) -> list[int]:
        env = {k: v for k, v in os.environ.items()  # glibc's own defaults, no tunables
               if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))}
        proc = subprocess.run([sys.executable, "-c", ALLOCATIONS, str(ROOT), mode],
                              capture_output=True, text=True, timeout=60, check=True, env=env)
        return json.loads(proc.stdout)

    default, steady = faults("default"), faults("steady")
    pages = (16 << 20) // 4096
    # glibc's default maps the first block, then grows the heap for the second: fresh pages
    # twice; with the thresholds fixed only the first call faults its pages in.
    assert default[1] > pages // 2, default
    assert max(steady[1:]) < pages // 10, steady
