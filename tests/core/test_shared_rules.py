"""One home for each rule (issue 20): settings grammars, size printing and the warning channel
are written once, and the places that used to disagree now agree."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pytest

from tests.conftest import run_zoo
from zoo._core import settings
from zoo._core.log import warn


@pytest.mark.parametrize("value", ["off", "OFF", "0", "no", "false", ""])
def test_an_online_zoo_offline_value_keeps_a_remote_store(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """ZOO_OFFLINE=off used to keep weights online but drop an s3:// store silently."""
    from zoo.cli.store_options import store_from_args
    from zoo.weights.resolve import env_offline

    monkeypatch.setenv("ZOO_OFFLINE", value)
    args = argparse.Namespace(store="s3://bucket/prefix", store_option=[], publish=False,
                              sign=None, no_store=False)
    assert env_offline() is False
    config = store_from_args(args)
    assert config is not None and config.url == "s3://bucket/prefix"


def test_a_bad_zoo_offline_value_is_the_same_error_everywhere(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.cli.store_options import store_from_args
    from zoo.errors import UsageError
    from zoo.weights.resolve import env_offline

    monkeypatch.setenv("ZOO_OFFLINE", "sometimes")
    args = argparse.Namespace(store="s3://bucket/prefix", store_option=[], publish=False,
                              sign=None, no_store=False)
    with pytest.raises(UsageError, match="ZOO_OFFLINE='sometimes' is not a yes/no") as a:
        env_offline()
    with pytest.raises(UsageError, match="ZOO_OFFLINE='sometimes' is not a yes/no") as b:
        store_from_args(args)
    assert a.value.exit_code == b.value.exit_code == 2


@pytest.mark.parametrize("text, expected", [
    ("500MB", 500_000_000), ("500mb", 500_000_000), ("500MiB", 500 << 20),
    ("500M", 500 << 20), ("20G", 20 << 30), ("1.5GB", 1_500_000_000), ("4096", 4096),
    ("2TB", 2 * 10**12), ("1TiB", 1 << 40), ("10 KB", 10_000), ("7B", 7),
])
def test_one_size_grammar_for_fetch_cache_prune_and_the_budget(
        text: str, expected: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """--max-size 500MB meant 500,000,000 bytes in fetch and 524,288,000 in the cache."""
    from zoo.cli.fetch import _size
    from zoo.export.cache import cache_budget, parse_size

    assert settings.parse_size(text) == expected
    assert _size(text) == expected
    assert parse_size(text) == expected
    monkeypatch.setenv("ZOO_CACHE_MAX", text)
    assert cache_budget() == expected


@pytest.mark.parametrize("text", ["-1", "1XB", "lots", "1e3", ""])
def test_bad_sizes_are_refused_with_the_grammar(text: str) -> None:
    with pytest.raises(ValueError, match="KB/MB/GB/TB"):
        settings.parse_size(text)


def test_sizes_print_one_way() -> None:
    from zoo.cli.output import human_bytes
    from zoo.export.cache import _human

    for n, text in ((0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (168312177, "160.5 MiB"),
                    (5 << 40, "5.0 TiB"), (5 << 30, "5.0 GiB")):
        assert settings.format_size(n) == human_bytes(n) == _human(n) == text


def test_warnings_take_one_channel_and_are_escaped(
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    from zoo._core.fs import warn_once
    from zoo._core.log import cli_handler, use_logging
    from zoo.export.cache.base import _warn_stderr

    warn("evil \x1b[31mred\x1b[0m\r\nsecond line", once=False)
    _warn_stderr("from the export cache \x07")
    warn_once("k-shared-rules", "from the weights cache \x1b]0;title\x07")
    err = capsys.readouterr().err.splitlines()
    assert err == ["zoo: warning: evil \\x1b[31mred\\x1b[0m second line",
                   "zoo: warning: from the export cache \\x07",
                   "zoo: warning: from the weights cache \\x1b]0;title\\x07"]
    use_logging()
    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="zoo"):
            warn("to the application's logging", once=False)
        assert capsys.readouterr().err == ""
        assert {r.getMessage() for r in caplog.records} == {"to the application's logging"}
    finally:
        cli_handler()


def test_library_code_does_not_print_warnings_itself() -> None:
    """Only the channel writes 'zoo: warning:' (the CLI's error printer aside)."""
    root = Path(__file__).resolve().parents[2] / "zoo"
    printers = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("_core/", "cli/")):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "zoo: warning:" in line and ("write(" in line or "print(" in line):
                printers.append(f"{rel}:{number}")
    assert printers == []


def test_an_untrusted_zoo_home_warns_through_the_channel(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o777)
    proc = run_zoo(["list"], env={"ZOO_HOME": str(home)})
    assert proc.returncode == 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("zoo: warning:")]
    assert len(lines) == 1 and "ZOO_HOME is not trusted" in lines[0]
