"""The golden runs of an export: input shapes, and runs on background threads."""

from __future__ import annotations

import contextlib

import pytest

import zoo
from zoo.errors import PluginError
from zoo.export.golden_runs import BackgroundCases, golden_specs, run_cases


def test_the_noise_input_is_half_the_scene_unless_the_artifact_is_shape_specialised() -> None:
    card = zoo.get("deeplabv3_resnet50")
    dynamic = golden_specs(card, (520, 520), static=False)
    assert dynamic["scene"].shape == [1, 3, 256, 256]
    assert dynamic["noise"].shape == [1, 3, 128, 128]
    static = golden_specs(card, (520, 480), static=True)
    assert static["scene"].shape == static["noise"].shape == [1, 3, 520, 480]
    small = golden_specs(card, (40, 40), static=False)
    assert small["scene"].shape == [1, 3, 40, 40]
    assert small["noise"].shape == [1, 3, 32, 32]  # never below 32 pixels a side


def test_background_runs_give_the_bytes_of_runs_here() -> None:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 4, 3, padding=1)).eval()
    specs = golden_specs(zoo.get("deeplabv3_resnet50"), (96, 96), static=False)
    here = run_cases(model, specs)
    there = BackgroundCases(model, specs, contextlib.nullcontext).result()
    assert list(there) == list(specs)
    for name in specs:
        assert torch.equal(here[name][0], there[name][0])
        assert torch.equal(here[name][1], there[name][1])


def test_a_model_that_fails_on_a_background_thread_is_named_by_result() -> None:
    from zoo.catalog.plugins import plugin_code

    def broken(_x: object) -> None:
        raise ValueError("no forward today")

    specs = golden_specs(zoo.get("deeplabv3_resnet50"), (64, 64), static=False)
    runs = BackgroundCases(broken, specs, lambda: plugin_code("p", "running model 'm'"))
    with pytest.raises(PluginError, match="plugin 'p' failed in running model 'm': "
                                          "ValueError: no forward today"):
        runs.result()


def test_the_gil_switch_interval_comes_back_on_every_way_out() -> None:
    """Short GIL turns last while golden runs do: restored after result(), after close()
    when prepare failed (result never called), and only when the last of two overlapping
    runs (exports on two threads of one process) ends."""
    import sys

    import torch

    from zoo.export.golden_runs import SWITCH_INTERVAL

    before = sys.getswitchinterval()
    assert before != SWITCH_INTERVAL
    model = torch.nn.Conv2d(3, 2, 1).eval()
    specs = golden_specs(zoo.get("deeplabv3_resnet50"), (64, 64), static=False)

    runs = BackgroundCases(model, specs, contextlib.nullcontext)
    assert sys.getswitchinterval() == SWITCH_INTERVAL
    runs.result()
    assert sys.getswitchinterval() == before

    failed = BackgroundCases(model, specs, contextlib.nullcontext)
    failed.close()  # what _produce's finally does when prepare raised
    failed.close()  # idempotent
    assert sys.getswitchinterval() == before

    first = BackgroundCases(model, specs, contextlib.nullcontext)
    second = BackgroundCases(model, specs, contextlib.nullcontext)
    first.result()
    assert sys.getswitchinterval() == SWITCH_INTERVAL  # the second still runs
    second.result()
    assert sys.getswitchinterval() == before
