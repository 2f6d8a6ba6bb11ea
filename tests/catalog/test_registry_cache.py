"""The compiled registry (``ZOO_HOME/registry``): fresh when its source changes, ignored when
damaged or foreign, optional when ``ZOO_HOME`` cannot be written, safe under concurrency, and
never a hiding place for a source's errors.

Compilation is observed directly: ``compile_file``/``compile_data`` take the parse function,
so a test counts how often a source was really parsed.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from zoo.catalog import compiled as registry_cache
from zoo.catalog.compiled import compile_file, summarize
from zoo.catalog.plugins import PluginHost, hookimpl
from zoo.catalog.registry import Registry, builtin_registry_path, parse_registry_bytes
from zoo.catalog.yamlio import load_yaml
from zoo.errors import CardError, UnknownModelError


def card_data(name: str, **changes: Any) -> dict[str, Any]:
    models = load_yaml(builtin_registry_path())["models"]
    raw = next(c for c in models if c["name"] == "single_conv")
    return {**copy.deepcopy(raw), "name": name, **changes}


def write_registry(path: Path, *names: str, **changes: Any) -> Path:
    cards = [card_data(n, **changes) for n in names]
    path.write_text(yaml.safe_dump({"version": 1, "models": cards}, sort_keys=False))
    return path


class Counting:
    """parse_registry_bytes, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: bytes, path: Path) -> Any:
        self.calls += 1
        return parse_registry_bytes(data, path)


def entry_of(path: Path) -> Path:
    return registry_cache._entry_path("file", os.path.abspath(path))


def names(compiled: registry_cache.Compiled) -> list[str]:
    return [s.name for s in compiled.summaries]


def settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept for the tests below: sources are now hashed on every use, nothing settles."""


# -- hits, misses and changes ------------------------------------------------------------------


def test_an_unchanged_file_is_served_from_its_entry_without_parsing(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "a.yaml", "a_one", "a_two")
    parse = Counting()
    assert names(compile_file(path, parse)) == ["a_one", "a_two"]
    assert parse.calls == 1 and entry_of(path).is_file()
    warm = compile_file(path, parse)
    assert names(warm) == ["a_one", "a_two"] and parse.calls == 1
    assert warm.card_data(1)["name"] == "a_two"


def test_a_forged_entry_with_the_sources_stat_never_stands_in_for_it(tmp_path: Path) -> None:
    """Whoever can write an entry can copy the source's stat; only its bytes' digest counts."""
    path = write_registry(tmp_path / "a.yaml", "genuine")
    parse = Counting()
    compile_file(path, parse)
    forged_src = write_registry(tmp_path / "forged.yaml", "forged")
    compile_file(forged_src, parse)
    forged = registry_cache._read_entry(entry_of(forged_src))
    assert forged is not None
    st = os.stat(path)
    header = {**forged.header, "source": {**forged.header["source"], "path": str(path),
                                          **registry_cache._stat_key(st),
                                          "checked_ns": time.time_ns() + 10**12}}

    def body(out: object) -> None:
        with open(forged.path, "rb") as old:
            old.seek(forged.body_offset)
            out.write(old.read())  # type: ignore[attr-defined]

    registry_cache._write(entry_of(path), header, body)
    assert names(compile_file(path, parse)) == ["genuine"]


def test_an_entry_under_a_zoo_home_others_can_write_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zoo import paths

    home = tmp_path / "shared-home"
    home.mkdir()
    home.chmod(0o777)
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.setattr(paths, "_home_checked", {})
    path = write_registry(tmp_path / "a.yaml", "a_one")
    parse = Counting()
    compile_file(path, parse)
    compile_file(path, parse)
    assert parse.calls == 2 and not entry_of(path).exists()


def test_a_recently_touched_file_is_proved_by_its_hash(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "a.yaml", "first")
    parse = Counting()
    compile_file(path, parse)
    compile_file(path, parse)  # same bytes, file too fresh to trust its stat: hashed, a hit
    assert parse.calls == 1
    # same size, same second: only the hash can tell
    path.write_text(path.read_text().replace("name: first", "name: secnd"))
    assert names(compile_file(path, parse)) == ["secnd"] and parse.calls == 2


def test_changed_added_and_removed_sources_are_seen_on_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settle(monkeypatch)
    a = write_registry(tmp_path / "a.yaml", "from_a")
    b = write_registry(tmp_path / "b.yaml", "from_b")
    monkeypatch.setenv("ZOO_REGISTRY", str(a))
    assert "from_a" in Registry().names()

    monkeypatch.setenv("ZOO_REGISTRY", os.pathsep.join([str(a), str(b)]))  # added
    assert {"from_a", "from_b"} <= set(Registry().names())

    write_registry(a, "from_a", "from_a_too")  # changed
    assert {"from_a", "from_a_too", "from_b"} <= set(Registry().names())

    monkeypatch.setenv("ZOO_REGISTRY", str(b))  # removed
    reg = Registry()
    assert "from_a" not in reg.names() and "from_a_too" not in reg.names()
    assert reg.get("from_b").num_classes == 23

    b.unlink()  # named but gone: an error, not a stale answer
    with pytest.raises(CardError, match=r"ZOO_REGISTRY names .*b\.yaml, which is not a file"):
        Registry()


def test_plugin_card_data_is_compiled_once_and_recompiled_when_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry_module = importlib.import_module("zoo.catalog.registry")
    calls: list[str] = []
    real = registry_module.parse_card

    def counting(data: Any, where: str) -> Any:
        calls.append(where)
        return real(data, where)

    monkeypatch.setattr(registry_module, "parse_card", counting)

    class Cards:
        def __init__(self, *names: str) -> None:
            self.cards = [card_data(n) for n in names]

        @hookimpl
        def zoo_models(self) -> Any:
            return self.cards

    def registry_with(plugin: object) -> Registry:
        host = PluginHost()
        host.register(plugin, "mine")
        return Registry(host=host)

    assert {"p_one", "p_two"} <= set(registry_with(Cards("p_one", "p_two")).names())
    compiled = len(calls)
    reg = registry_with(Cards("p_one", "p_two"))
    assert len(calls) == compiled  # a hit: nothing validated while loading
    assert reg.get("p_two").plugin == "mine"
    assert len(calls) == compiled + 1  # the one card asked for
    assert "p_three" in registry_with(Cards("p_one", "p_three")).names()


# -- damaged, foreign and forged entries -------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: b"",
        lambda raw: b"garbage\n" * 10,
        lambda raw: raw[: len(raw) // 2],
        lambda raw: raw[:20] + bytes([raw[20] ^ 1]) + raw[21:],  # header digest
        lambda raw: raw.replace(b'"a_two"', b'"a_2wo"', 1),
        lambda raw: raw + b"{}",
    ],
    ids=["empty", "garbage", "truncated", "first-line", "header", "padded"],
)
def test_a_damaged_entry_is_ignored_and_rebuilt(tmp_path: Path, damage: Any) -> None:
    path = write_registry(tmp_path / "a.yaml", "a_one", "a_two")
    parse = Counting()
    compile_file(path, parse)
    entry = entry_of(path)
    entry.write_bytes(damage(entry.read_bytes()))
    compiled = compile_file(path, parse)
    assert parse.calls == 2
    assert names(compiled) == ["a_one", "a_two"]
    assert [s.family for s in compiled.summaries] == ["single_conv"] * 2
    assert compile_file(path, parse) and parse.calls == 2  # rebuilt: a hit again


def test_damaged_card_bytes_are_caught_when_the_card_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settle(monkeypatch)
    path = write_registry(tmp_path / "a.yaml", "a_one")
    Registry(extra_files=[path])
    entry = entry_of(path)
    raw = entry.read_bytes()
    at = raw.rindex(b'"num_classes":23')
    entry.write_bytes(raw[:at] + b'"num_classes":24' + raw[at + 16:])  # header still whole
    reg = Registry(extra_files=[path])
    assert reg.get("a_one").num_classes == 23  # the digest failed: compiled again from the file


def test_damaged_summaries_are_caught_when_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summaries section is read only by listing; damage there (header intact) is caught by
    its digest and the source compiled again, and looking a card up never reads it."""
    settle(monkeypatch)
    path = write_registry(tmp_path / "a.yaml", "a_one", "a_two")
    Registry(extra_files=[path])
    entry = entry_of(path)
    raw = entry.read_bytes()
    body = raw.index(b"\n", raw.index(b"\n") + 1) + 1  # after the header line
    assert raw[body:body + 2] == b"[["  # the summaries come first
    at = raw.index(b'"single_conv"', body)
    damaged = raw[:at] + b'"single_cxnv"' + raw[at + 13:]
    entry.write_bytes(damaged)
    assert Registry(extra_files=[path]).get("a_two").family == "single_conv"
    assert entry.read_bytes() == damaged  # a lookup does not read the summaries
    rows = {s.name: s for s in Registry(extra_files=[path]).summaries("a_*")}
    assert [r.family for r in rows.values()] == ["single_conv", "single_conv"]
    assert entry.read_bytes() != damaged  # compiled again and stored


def _stamped(entry: Path, **changes: Any) -> None:
    """Rewrite ``entry``'s header with ``changes`` to its stamp, digest recomputed."""
    import hashlib

    raw = entry.read_bytes()
    first, rest = raw.split(b"\n", 1)
    size = int(first.split()[2])
    header = json.loads(rest[:size])
    header["stamp"] = {**header["stamp"], **changes}
    new = json.dumps(header, separators=(",", ":")).encode()
    line = b"ZOOREG %d %d %s\n" % (registry_cache.FORMAT, len(new),
                                  hashlib.sha256(new).hexdigest().encode())
    entry.write_bytes(line + new + rest[size:])


@pytest.mark.parametrize("changes", [{"zoo": "0.0.1"}, {"code": "0" * 64},
                                     {"libs": {"pydantic": "1.10.0"}}])
def test_an_entry_written_by_another_zoo_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any]
) -> None:
    settle(monkeypatch)
    path = write_registry(tmp_path / "a.yaml", "a_one")
    parse = Counting()
    compile_file(path, parse)
    _stamped(entry_of(path), **changes)
    assert names(compile_file(path, parse)) == ["a_one"] and parse.calls == 2
    assert compile_file(path, parse) and parse.calls == 2


def test_a_forged_entry_cannot_smuggle_an_invalid_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry with valid digests but a card the schema refuses: the card is validated when
    read, found wanting, and compiled again from its source."""
    settle(monkeypatch)
    path = write_registry(tmp_path / "a.yaml", "a_one")
    compiled = compile_file(path, parse_registry_bytes)
    entry = registry_cache._read_entry(entry_of(path))
    assert entry is not None
    blob = compiled.card_data(0)
    blob["preprocessing"]["mean"] = [1e300, 0, 0]
    blob["architecture"] = "os:system"
    registry_cache._write_entry(entry.path, entry.header["source"], compiled.summaries,
                                [json.dumps(blob).encode()])
    card = Registry(extra_files=[path]).get("a_one")
    assert card.preprocessing.mean == (0.0, 0.0, 0.0) and card.architecture == "single_conv"


# -- ZOO_HOME that cannot be written ------------------------------------------------------------


def test_an_unwritable_zoo_home_only_costs_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where ZOO_HOME's parent should be")
    monkeypatch.setenv("ZOO_HOME", str(blocker / "home"))  # mkdir fails: ENOTDIR
    path = write_registry(tmp_path / "a.yaml", "a_one")
    for _ in range(2):
        reg = Registry(extra_files=[path])
        assert "a_one" in reg.names() and "single_conv" in reg.names()
        assert reg.get("a_one").name == "a_one"
        assert reg.get("deeplabv3_resnet50").num_classes == 21
    assert blocker.read_text().startswith("a file")


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only for this process: ``chmod`` for a user, ``chattr +i`` for root
    (who ignores permissions)."""
    root = os.geteuid() == 0
    if root:
        subprocess.run(["chattr", "+i", str(folder)], check=False, capture_output=True)
    else:
        folder.chmod(0o555)
    try:
        try:
            (folder / "probe").touch()
        except OSError:
            pass
        else:
            (folder / "probe").unlink()
            pytest.skip("no way to make a folder read-only on this file system")
        yield
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(folder)], check=False, capture_output=True)
        else:
            folder.chmod(0o755)


def test_a_read_only_prewarmed_zoo_home_serves_hits_and_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settle(monkeypatch)
    path = write_registry(tmp_path / "a.yaml", "a_one")
    parse = Counting()
    compile_file(path, parse)
    Registry()  # the built-in catalogue compiled too
    with read_only(registry_cache.cache_dir()):
        assert names(compile_file(path, parse)) == ["a_one"] and parse.calls == 1  # a hit
        reg = Registry(extra_files=[path])
        assert reg.get("a_one").name == "a_one" and "single_conv" in reg.names()
        path.write_text(path.read_text().replace("a_one", "a_two"))
        assert names(compile_file(path, parse)) == ["a_two"]  # a miss still works
        assert parse.calls == 2


# -- concurrency and housekeeping ---------------------------------------------------------------

_COMPILE = """
import sys
from zoo.catalog.registry import Registry
reg = Registry(extra_files=[sys.argv[1]])
print(len(reg.names()), reg.get("many_0299").name)
"""


def test_two_processes_compiling_at_once_leave_one_valid_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_registry(tmp_path / "many.yaml", *(f"many_{i:04d}" for i in range(300)))
    procs = [
        subprocess.Popen([sys.executable, "-c", _COMPILE, str(path)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.split() == ["307", "many_0299"]
    folder = registry_cache.cache_dir()
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    assert len(list(folder.glob("*.zrc"))) == 2  # the built-in catalogue and many.yaml
    settle(monkeypatch)
    parse = Counting()
    compiled = compile_file(path, parse)
    assert parse.calls == 0 and len(compiled.summaries) == 300
    assert compiled.card_data(299)["name"] == "many_0299"


def test_old_leftovers_and_surplus_entries_are_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_cache, "MAX_ENTRIES", 2)
    folder = registry_cache.cache_dir()
    folder.mkdir(parents=True)
    leftover = folder / ".tmp-killed"
    leftover.write_bytes(b"half an entry")
    os.utime(leftover, (1, 1))
    fresh = folder / ".tmp-writing"
    fresh.write_bytes(b"another process, writing now")
    for i in range(4):
        compile_file(write_registry(tmp_path / f"r{i}.yaml", f"r_{i}"), parse_registry_bytes)
    assert len(list(folder.glob("*.zrc"))) == 2
    assert not leftover.exists() and fresh.exists()


# -- errors are never cached -------------------------------------------------------------------


def test_errors_still_name_file_line_and_field_after_a_good_compile(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "a.yaml", "a_one")
    good = path.read_text()
    Registry(extra_files=[path])
    entry = entry_of(path).read_bytes()

    path.write_text(good + "  family: [unclosed\n")
    with pytest.raises(CardError, match=rf"^{path}:\d+:\d+: YAML syntax error"):
        Registry(extra_files=[path])
    path.write_text(good.replace("num_classes: 23", "num_classes: 24"))
    for _ in range(2):  # every time, from the parse
        with pytest.raises(CardError) as info:
            Registry(extra_files=[path])
        assert str(info.value) == (
            f"{path}:3: model 'a_one': output.channels is 23 but num_classes is 24"
        )
    assert entry_of(path).read_bytes() == entry  # no entry for an invalid source
    path.write_text(good)
    assert Registry(extra_files=[path]).get("a_one").num_classes == 23


# -- pay for what you use ----------------------------------------------------------------------


def test_summaries_match_the_cards(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "a.yaml", "a_one")
    reg = Registry(extra_files=[path])
    for summary in reg.summaries():
        assert summarize(reg.get(summary.name)) == summary
    assert [s.name for s in reg.summaries("deeplab*")] == reg.names("deeplab*")


_LIST_ONLY = """
import json, sys
import zoo
print(json.dumps({"n": len(zoo.list_models()), "pydantic": "pydantic" in sys.modules,
                  "yaml": "yaml" in sys.modules, "torch": "torch" in sys.modules}))
"""


def test_listing_a_compiled_registry_needs_no_pydantic_and_no_yaml(zoo_home: Path) -> None:
    runs = [
        subprocess.run([sys.executable, "-c", _LIST_ONLY], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, check=True)
        for _ in range(2)
    ]
    cold, warm = (json.loads(r.stdout) for r in runs)
    assert cold == {"n": 7, "pydantic": True, "yaml": True, "torch": False}  # compiled
    assert warm == {"n": 7, "pydantic": False, "yaml": False, "torch": False}  # read back


def test_a_source_recompiled_by_another_process_keeps_every_name_reachable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process read a compiled source; then the file gained a card (first, so every
    position moved) and another process recompiled it. Every name this registry knows is
    still found, by name, with its own card; a removed card is a clear CardError."""
    settle(monkeypatch)
    path = write_registry(tmp_path / "a.yaml", "zz_a", "zz_b")
    reg = Registry(extra_files=[path])  # reads names and positions, no card yet
    write_registry(path, "zz_0", "zz_a", "zz_b")
    Registry(extra_files=[path])  # "another process": rewrites the entry
    assert reg.get("zz_b").name == "zz_b"
    assert reg.get("zz_a").name == "zz_a"
    assert [s.name for s in reg.summaries("zz_*")] == ["zz_a", "zz_b"]
    first, second = Registry(extra_files=[path]), Registry(extra_files=[path])
    write_registry(path, "zz_0", "zz_a")
    Registry(extra_files=[path])
    with pytest.raises(CardError, match="'zz_b' disappeared"):
        first.get("zz_b")  # the lookup that finds the source changed
    assert second.get("zz_a").name == "zz_a"
    with pytest.raises(UnknownModelError):
        second.get("zz_b")  # already known to be gone


def test_a_listing_skips_cards_whose_source_dropped_them_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settle(monkeypatch)
    path = write_registry(tmp_path / "a.yaml", "zz_a", "zz_b", "zz_c")
    Registry(extra_files=[path])  # compiles and stores the entry
    reg = Registry(extra_files=[path])  # reads it: names now, summaries when listing
    write_registry(path, "zz_a", "zz_c")
    Registry(extra_files=[path])  # another process recompiles: the summaries are stale
    assert [s.name for s in reg.summaries("zz_*")] == ["zz_a", "zz_c"]
