"""`zoo sync --ray`: Ray's own prints go to stderr, the caller's prints between artifacts stay on
stdout (the real cluster runs in test_sync_ray.py; this pins where the redirect begins and
ends, which a cluster run cannot show reliably)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zoo.sets import on_ray


@pytest.fixture
def ray_that_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    def run_tasks(ray: Any, todo: list[Any], *rest: Any) -> Iterator[Any]:
        try:
            for item in todo:
                print(f"raylet: {item} retried")
                yield item
        finally:
            print("raylet: shutting down")

    monkeypatch.setattr(on_ray, "_import_ray", lambda: None)
    monkeypatch.setattr(on_ray, "_run_tasks", run_tasks)


@pytest.mark.usefixtures("ray_that_prints")
def test_ray_prints_on_stderr_and_the_caller_prints_on_stdout(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for artifact in on_ray.realize_on_ray(["a", "b"], tmp_path, None, None):  # type: ignore[arg-type]
        print(f'{{"done": "{artifact}"}}')
    out, err = capsys.readouterr()
    assert out.splitlines() == ['{"done": "a"}', '{"done": "b"}']
    assert err.splitlines() == ["raylet: a retried", "raylet: b retried",
                                "raylet: shutting down"]


@pytest.mark.usefixtures("ray_that_prints")
def test_a_caller_that_stops_early_still_shuts_down_on_stderr(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    results = on_ray.realize_on_ray(["a", "b"], tmp_path, None, None)  # type: ignore[arg-type]
    assert next(results) == "a"
    print("caller")
    results.close()
    out, err = capsys.readouterr()
    assert out == "caller\n"
    assert err.splitlines() == ["raylet: a retried", "raylet: shutting down"]
