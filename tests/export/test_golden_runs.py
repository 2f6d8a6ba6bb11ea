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
