"""The compiled registry: each registry source parsed and validated once, then read back fast.

A *source* is one registry file (the built-in ``registry.yaml``, a ``ZOO_REGISTRY`` or
``--registry`` file, a YAML file a plugin names) or the card dicts one plugin returns.
Compiling a source validates every card and writes one entry, ``ZOO_HOME/registry/*.zrc``::

    ZOOREG <format> <header length> <sha256 of the header>\\n
    <header: JSON>\\n
    <card JSON><card JSON>...

The header holds the *stamp* (entry format, zoo version, a digest of the code that parses and
validates cards, pydantic and PyYAML versions), the source's identity (a file's path, size,
mtime, ctime, inode, device and sha256; a plugin's data: the sha256 of its canonical JSON) and
one row per card: its name, the columns ``zoo list`` shows, and the offset, length and
blake2b digest of its JSON. ``zoo list`` reads the header only; ``zoo.get(NAME)`` reads one
card's bytes and validates them again before returning a :class:`~zoo.schema.ModelCard`.

Trust. An entry is used only if its header hashes to the recorded digest, its stamp is this
process's, and its source is unchanged: a file whose ``stat`` matches and had not been touched
for :data:`RACY_NS` before it was last read (otherwise its bytes are hashed and compared, git's
"racy" rule); a card's bytes must hash to their digest. Anything else is a miss, and the
source is compiled again. Entries are written to a temporary file and renamed, so concurrent
compilers leave one valid entry, and a read-only or missing ``ZOO_HOME`` costs speed, never
correctness. A source with an invalid card gets no entry: its error comes from the parse,
naming file, line and field, every time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from zoo.errors import CardError

if TYPE_CHECKING:
    from zoo.schema import ModelCard

FORMAT = 1
MAGIC = b"ZOOREG"
RACY_NS = 2_000_000_000  # a file touched this recently is hashed, not trusted by its stat
MAX_ENTRIES = 256  # entries kept; the least recently written go first
#: the modules whose code decides what a compiled card is
_CODE = ("schema.py", "_names.py", "yamlio.py", "registry.py", "registry_cache.py")


class Summary(NamedTuple):
    """What ``zoo list`` shows of a card (and what clash detection needs), without the card."""

    name: str
    family: str
    classes: int
    output: str
    params: int
    weights_size: int | None
    architecture: str
    plugin: str | None


def summarize(card: ModelCard) -> Summary:
    """The :class:`Summary` of a validated card."""
    out = card.output
    if out.kind == "tensor":
        contract = "tensor"
    else:
        contract = "dict[" + ",".join([out.key or "", *(f"{k}?" for k in out.optional_keys)]) + "]"
    default = card.weights_named(card.default_weights) if card.default_weights else None
    return Summary(card.name, card.family, card.num_classes, contract, card.num_params,
                   default.size if default else None, card.architecture, card.plugin)


class StaleEntry(Exception):
    """A compiled card whose bytes no longer prove themselves: compile the source again."""


class Compiled:
    """One compiled source: a summary per card, and each card's validated JSON."""

    def __init__(self, summaries: list[Summary], read: Callable[[int], bytes],
                 digests: Sequence[str] | None = None,
                 cards: Sequence[ModelCard | None] | None = None) -> None:
        self.summaries = summaries
        self._read = read
        self._digests = digests
        self._cards = cards

    def card_data(self, index: int) -> Any:
        """The JSON data of card ``index``; :class:`StaleEntry` if its bytes are not as recorded."""
        try:
            blob = self._read(index)
        except OSError as exc:
            raise StaleEntry(str(exc)) from exc
        if self._digests is not None and _digest(blob) != self._digests[index]:
            raise StaleEntry("card bytes do not match their digest")
        try:
            return json.loads(blob)
        except ValueError as exc:
            raise StaleEntry(str(exc)) from exc

    def live_card(self, index: int) -> ModelCard | None:
        """The card object itself when the source handed one over (a plugin's ModelCard)."""
        return self._cards[index] if self._cards is not None else None


def _digest(blob: bytes) -> str:
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


# -- the stamp -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def stamp() -> dict[str, Any]:
    """What, besides its source, decides an entry: format, zoo's version and card code,
    and the versions of the libraries that parse and validate."""
    from importlib.metadata import PackageNotFoundError, version

    from zoo import __version__

    code = hashlib.sha256()
    here = Path(__file__).parent
    for name in _CODE:
        with contextlib.suppress(OSError):
            code.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    libs = {}
    for dist in ("pydantic", "pydantic-core", "PyYAML"):
        try:
            libs[dist] = version(dist)
        except PackageNotFoundError:
            libs[dist] = None
    return {"format": FORMAT, "zoo": __version__, "code": code.hexdigest(), "libs": libs}


def cache_dir() -> Path:
    """Where compiled entries live: ``ZOO_HOME/registry``."""
    from zoo.paths import zoo_home

    return zoo_home() / "registry"


def _entry_path(kind: str, ident: str) -> Path:
    name = hashlib.blake2b(f"{kind}\0{ident}".encode(), digest_size=16).hexdigest()
    return cache_dir() / f"{name}.zrc"


# -- reading entries -------------------------------------------------------------------------


class _Entry(NamedTuple):
    path: Path
    header: dict[str, Any]
    body_offset: int


def _read_entry(path: Path) -> _Entry | None:
    """The entry at ``path`` if it is whole and has this process's stamp; None otherwise."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(200)
            parts = first.split()
            if len(parts) != 4 or parts[0] != MAGIC or parts[1] != str(FORMAT).encode():
                return None
            size = int(parts[2])
            raw = fh.read(size + 1)
            file_size = os.fstat(fh.fileno()).st_size
    except (OSError, ValueError):
        return None
    if len(raw) != size + 1 or raw[-1:] != b"\n":
        return None
    raw = raw[:-1]
    if hashlib.sha256(raw).hexdigest().encode() != parts[3]:
        return None
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("stamp") != stamp():
        return None
    body_offset = len(first) + size + 1
    if not _well_formed(header) or header.get("body") != file_size - body_offset:
        return None  # truncated or padded
    return _Entry(path, header, body_offset)


def _well_formed(header: dict[str, Any]) -> bool:
    cards, source = header.get("cards"), header.get("source")
    if not isinstance(cards, list) or not isinstance(source, dict):
        return False
    return all(isinstance(row, list) and len(row) == 11 for row in cards)


def _row_ok(row: list[Any]) -> bool:
    name, family, classes, output, params, size, arch, plugin, offset, length, digest = row
    return (isinstance(name, str) and isinstance(family, str) and type(classes) is int
            and isinstance(output, str) and type(params) is int
            and (size is None or type(size) is int) and isinstance(arch, str)
            and (plugin is None or isinstance(plugin, str)) and type(offset) is int
            and type(length) is int and offset >= 0 and length >= 0
            and isinstance(digest, str))


def _compiled_from(entry: _Entry) -> Compiled | None:
    rows = entry.header["cards"]
    if not all(map(_row_ok, rows)):
        return None
    summaries = [Summary(*row[:8]) for row in rows]
    spans = [(row[8], row[9]) for row in rows]
    digests = [row[10] for row in rows]
    start, path = entry.body_offset, entry.path

    def read(index: int) -> bytes:
        offset, length = spans[index]
        with open(path, "rb") as fh:
            fh.seek(start + offset)
            return fh.read(length)

    return Compiled(summaries, read, digests)


# -- writing entries -------------------------------------------------------------------------


def _build(cards: Sequence[ModelCard]) -> tuple[list[Summary], list[bytes]]:
    summaries, blobs = [], []
    for card in cards:
        summaries.append(summarize(card))
        blobs.append(card.model_dump_json().encode())
    return summaries, blobs


def _in_memory(summaries: list[Summary], blobs: list[bytes]) -> Compiled:
    return Compiled(summaries, blobs.__getitem__)


def _write_entry(path: Path, source: dict[str, Any], summaries: list[Summary],
                 blobs: list[bytes]) -> None:
    """Write an entry for ``blobs`` (the cards' JSON, in order)."""
    rows, offset = [], 0
    for summary, blob in zip(summaries, blobs, strict=True):
        rows.append([*summary, offset, len(blob), _digest(blob)])
        offset += len(blob)
    _write(path, {"stamp": stamp(), "source": source, "body": offset, "cards": rows},
           lambda fh: fh.writelines(blobs))


def _write(path: Path, header: dict[str, Any], body: Callable[[Any], object]) -> None:
    """Write an entry atomically (temporary file ``.tmp-*`` beside the entries, then rename);
    any failure (read-only or missing ZOO_HOME, full disk) is ignored: a cache that cannot be
    written is only slower."""
    import tempfile

    raw = json.dumps(header, separators=(",", ":")).encode()
    first = b"%s %d %d %s\n" % (MAGIC, FORMAT, len(raw), hashlib.sha256(raw).hexdigest().encode())
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(first)
            fh.write(raw)
            fh.write(b"\n")
            body(fh)
        os.replace(tmp, path)
        tmp = None
        _prune(path.parent)
    except OSError:
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _prune(folder: Path) -> None:
    """Drop leftovers of killed writers and the oldest entries beyond :data:`MAX_ENTRIES`."""
    now = time.time()
    entries = []
    for child in folder.iterdir():
        with contextlib.suppress(OSError):
            mtime = child.stat().st_mtime
            if child.name.startswith(".tmp-"):
                if now - mtime > 600:
                    child.unlink()
            elif child.suffix == ".zrc":
                entries.append((mtime, child))
    for _, child in sorted(entries)[: max(0, len(entries) - MAX_ENTRIES)]:
        with contextlib.suppress(OSError):
            child.unlink()


# -- sources ---------------------------------------------------------------------------------


def _stat_key(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino, "dev": st.st_dev}


def compile_file(path: Path, parse: Callable[[bytes, Path], list[ModelCard]],
                 fresh: bool = False) -> Compiled:
    """Registry file ``path`` compiled: from its entry when up to date (and not ``fresh``),
    else parsed by ``parse`` (which raises :class:`CardError` naming file, line and field)
    and stored."""
    path = Path(path)
    where = os.path.abspath(path)
    entry_path = _entry_path("file", where)
    checked_ns = time.time_ns()
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CardError(f"cannot read registry file {path}: {exc.strerror or exc}") from exc
    entry = None if fresh else _read_entry(entry_path)
    data: bytes | None = None
    if entry is not None and entry.header["source"].get("path") == where:
        source = entry.header["source"]
        same_stat = all(source.get(k) == v for k, v in _stat_key(st).items())
        settled = max(st.st_mtime_ns, st.st_ctime_ns) + RACY_NS < source.get("checked_ns", 0)
        if same_stat and settled:
            compiled = _compiled_from(entry)
            if compiled is not None:
                return compiled
        data = _read(path)
        if hashlib.sha256(data).hexdigest() == source.get("sha256"):
            compiled = _compiled_from(entry)
            if compiled is not None:
                if max(st.st_mtime_ns, st.st_ctime_ns) + RACY_NS < checked_ns:
                    _refresh(entry, {**source, **_stat_key(st), "checked_ns": checked_ns})
                return compiled
    if data is None:
        data = _read(path)
    cards = parse(data, path)
    summaries, blobs = _build(cards)
    source = {"kind": "file", "path": where, **_stat_key(st), "checked_ns": checked_ns,
              "sha256": hashlib.sha256(data).hexdigest()}
    _write_entry(entry_path, source, summaries, blobs)
    return _in_memory(summaries, blobs)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CardError(f"cannot read registry file {path}: {exc.strerror or exc}") from exc


def _refresh(entry: _Entry, source: dict[str, Any]) -> None:
    """Rewrite an entry whose file was proved unchanged by its hash, with the new stat and
    check time, so that later runs trust the stat again. The body is copied as it is (each
    card is still checked against its digest when read)."""
    import shutil

    def copy_body(out: Any) -> None:
        with open(entry.path, "rb") as old:
            old.seek(entry.body_offset)
            shutil.copyfileobj(old, out)

    _write(entry.path, {**entry.header, "source": source}, copy_body)


def compile_data(ident: str, items: list[Any],
                 parse: Callable[[list[Any]], list[ModelCard]], fresh: bool = False) -> Compiled:
    """Card dicts a plugin returned, compiled: keyed by ``ident`` (the plugin) and the sha256
    of their canonical JSON. Data that is not plain JSON is validated every time."""
    try:
        canonical = json.dumps(items, sort_keys=True, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError):
        summaries, blobs = _build(parse(items))
        return _in_memory(summaries, blobs)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    entry_path = _entry_path("data", ident)
    entry = None if fresh else _read_entry(entry_path)
    if entry is not None and entry.header["source"] == {"kind": "data", "ident": ident,
                                                        "sha256": digest}:
        compiled = _compiled_from(entry)
        if compiled is not None:
            return compiled
    summaries, blobs = _build(parse(items))
    _write_entry(entry_path, {"kind": "data", "ident": ident, "sha256": digest}, summaries, blobs)
    return _in_memory(summaries, blobs)


def compile_cards(cards: list[ModelCard]) -> Compiled:
    """Card objects a plugin handed over: summarized, kept as they are."""
    summaries = [summarize(card) for card in cards]
    return Compiled(summaries, lambda i: cards[i].model_dump_json().encode(), cards=cards)
