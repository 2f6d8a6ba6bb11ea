"""What `zoo sync` shows: on a terminal, a live line per running export under an overall bar;
in CI (or with --json) no animation, one line or one JSON object per finished artifact."""

from __future__ import annotations

import json

import pytest

from zoo.cli.sync_progress import SyncDisplay, interactive


def test_the_live_display_follows_each_export(capsys: pytest.CaptureFixture[str]) -> None:
    with SyncDisplay(enabled=True) as show:
        for key in ("m/lite", "m/onnx", "m/pte"):
            show.watch(key, "queued")
        show.watch("m/lite", "running")
        show.watch("m/onnx", "running")
        assert sorted(show.running) == ["m/lite", "m/onnx"]
        lines = {t.description.strip() for t in show._progress.tasks}
        assert {"m/lite", "m/onnx"} <= lines
        show.watch("m/lite", "done")
        show.finished({"key": "m/lite", "action": "export", "size": 10})
        show.watch("m/pte", "running")
        show.watch("m/onnx", "failed")
        overall = show._progress.tasks[0]
        assert overall.description == "zoo sync: 1 done, 1 running, 1 failed"
        assert (overall.completed, overall.total) == (2, 3)
    err = capsys.readouterr().err
    assert "m/lite" in err and "failed" in err  # finished lines stay above the live area


def test_json_is_one_object_per_finished_artifact_and_ci_is_not_animated(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert not interactive()
    with SyncDisplay(as_json=True) as show:
        assert show._progress is None
        show.watch("m/lite", "queued")
        show.watch("m/lite", "running")
        show.finished({"key": "m/lite", "action": "cache", "size": 3})
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["key"] for line in out] == ["m/lite"]
