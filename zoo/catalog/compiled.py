"""The compiled registry: each registry source parsed and validated once, then read back fast.

A *source* is one registry file (the built-in ``registry.yaml``, a ``ZOO_REGISTRY`` or
``--registry`` file, a YAML file a plugin names) or the card dicts one plugin returns.
Compiling a source validates every card and writes one entry, ``ZOO_HOME/registry/*.zrc``::

    ZOOREG <format> <header length> <sha256 of the header>\\n
    <header: JSON>\\n
    <summaries: JSON><card JSON><card JSON>...

The header holds the *stamp* (entry format, zoo version, a digest of the code that parses and
validates cards, pydantic and PyYAML versions), the source's identity (a file's path, size,
mtime, ctime, inode, device and sha256; a plugin's data: the sha256 of its canonical JSON),
every card's name, the length and blake2b digest of each card's JSON, the length and sha256
of the *summaries* (one row per card of the columns ``zoo list`` shows) and the *broken* cards
of a plugin's source: the cards that failed validation, each with its name and the reason (a
plugin's bad card disables only itself, and the reason is a function of the source's bytes and
the stamped code, so it is cached like a good card). Looking a card up
reads the header (names, for clash detection across sources) and that card's bytes, which are
validated again before a :class:`~zoo.catalog.schema.ModelCard` is returned; ``zoo list`` reads the
header and the summaries, never a card.

Trust. An entry is used only if its header hashes to the recorded digest, its stamp is this
process's, and its source is unchanged: the file's bytes are hashed on every use and must
match the sha256 the entry records (a stat is never trusted: whoever can write an entry can
copy a stat); a card's bytes must hash to their digest. Under a ``ZOO_HOME`` that other users
can write to (:func:`zoo.paths.home_problem`) no entry is read or written. Anything else is
a miss, and the source is compiled again. Entries are written to a temporary file and
renamed, so concurrent compilers leave one valid entry, and a read-only or missing
``ZOO_HOME`` costs speed, never correctness. A registry file the user named that holds an
invalid card gets no entry: its error comes from the parse, naming file, line and field, every
time. What is *not* in an entry: anything that depends on other sources or on which plugins are
installed (name clashes, whether a card's ``architecture`` has a builder); the registry decides
those on every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from zoo.errors import CardError

if TYPE_CHECKING:
    from zoo.catalog.schema import ModelCard

FORMAT = 3
MAGIC = b"ZOOREG"
MAX_ENTRIES = 256  # entries kept; the least recently written go first
#: the modules whose code decides what a compiled card is
#: the code that decides a compiled entry, relative to the zoo package
_CODE = ("catalog/schema.py", "_core/names.py", "catalog/yamlio.py", "catalog/registry.py",
         "catalog/parsing.py", "catalog/compiled.py")


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


class Broken(NamedTuple):
    """A card of a plugin's source that failed validation: its name (None when it has no
    usable one) and the one-line reason, naming where (file and line, or the plugin), the
    model and the field."""

    name: str | None
    reason: str


#: what parsing a source gives: its valid cards and its broken ones
Parsed = tuple[list["ModelCard"], list[Broken]]


def _split(parsed: list[ModelCard] | Parsed) -> Parsed:
    """A parse's result as (cards, broken): a strict parse returns the cards alone."""
    return parsed if isinstance(parsed, tuple) else (parsed, [])


class _Digests(Sequence[str]):
    """The card digests of an entry, sliced from one string as they are asked for."""

    def __init__(self, joined: str) -> None:
        self._joined = joined

    def __len__(self) -> int:
        return len(self._joined) // _DIGEST_HEX

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._joined[index * _DIGEST_HEX:(index + 1) * _DIGEST_HEX]


class StaleEntry(Exception):
    """A compiled card whose bytes no longer prove themselves: compile the source again."""


class Compiled:
    """One compiled source: each card's name, summary and validated JSON."""

    def __init__(self, names: list[str], summaries: list[Summary] | Callable[[], list[Summary]],
                 read: Callable[[int], bytes], digests: Sequence[str] | None = None,
                 cards: Sequence[ModelCard | None] | None = None,
                 broken: Sequence[Broken] = ()) -> None:
        self.names = names
        self.broken = list(broken)  # the source's cards that failed validation
        self._summaries = summaries
        self._read = read
        self._digests = digests
        self._cards = cards

    @property
    def summaries(self) -> list[Summary]:
        """One :class:`Summary` per card, in card order (read on first use); :class:`StaleEntry`
        if the stored summaries are damaged."""
        if callable(self._summaries):
            self._summaries = self._summaries()
        return self._summaries

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


_DIGEST_HEX = 32  # hex characters of a card digest


def _digest(blob: bytes) -> str:
    return hashlib.blake2b(blob, digest_size=_DIGEST_HEX // 2).hexdigest()


# -- the stamp -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def stamp() -> dict[str, Any]:
    """What, besides its source, decides an entry: format, zoo's version and card code,
    and the versions of the libraries that parse and validate."""
    from zoo import __version__
    from zoo.catalog.distributions import versions

    code = hashlib.sha256()
    here = Path(__file__).parent.parent
    for name in _CODE:
        with contextlib.suppress(OSError):
            code.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    libs = versions("pydantic", "pydantic-core", "PyYAML")
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
    """The entry at ``path`` if it is whole and has this process's stamp; None otherwise
    (always None under a ``ZOO_HOME`` other users can write to)."""
    from zoo.paths import home_problem

    if home_problem() is not None:
        return None
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
    names, lengths, digests = header.get("names"), header.get("lengths"), header.get("digests")
    summaries, body = header.get("summaries"), header.get("body")
    if not (isinstance(names, list) and isinstance(lengths, list) and isinstance(digests, str)
            and isinstance(header.get("source"), dict) and type(body) is int):
        return False
    broken = header.get("broken")
    if not (isinstance(broken, list) and all(
            isinstance(b, list) and len(b) == 2 and (b[0] is None or isinstance(b[0], str))
            and isinstance(b[1], str) for b in broken)):
        return False
    if not (isinstance(summaries, list) and len(summaries) == 2
            and type(summaries[0]) is int and summaries[0] >= 0 and isinstance(summaries[1], str)):
        return False
    return (len(lengths) == len(names) and len(digests) == _DIGEST_HEX * len(names)
            and all(isinstance(n, str) for n in names)
            and all(type(n) is int and n >= 0 for n in lengths)
            and summaries[0] + sum(lengths) == body)


def _row_ok(row: Any) -> bool:
    if not isinstance(row, list) or len(row) != len(Summary._fields):
        return False
    name, family, classes, output, params, size, arch, plugin = row
    return (isinstance(name, str) and isinstance(family, str) and type(classes) is int
            and isinstance(output, str) and type(params) is int
            and (size is None or type(size) is int) and isinstance(arch, str)
            and (plugin is None or isinstance(plugin, str)))


def _compiled_from(entry: _Entry) -> Compiled:
    header, path = entry.header, entry.path
    names: list[str] = header["names"]
    summaries_length, summaries_sha256 = header["summaries"]
    digests = _Digests(header["digests"])
    offsets = list(accumulate(header["lengths"], initial=entry.body_offset + summaries_length))

    def read(index: int) -> bytes:
        with open(path, "rb") as fh:
            fh.seek(offsets[index])
            return fh.read(offsets[index + 1] - offsets[index])

    def summaries() -> list[Summary]:
        try:
            with open(path, "rb") as fh:
                fh.seek(entry.body_offset)
                blob = fh.read(summaries_length)
        except OSError as exc:
            raise StaleEntry(str(exc)) from exc
        if hashlib.sha256(blob).hexdigest() != summaries_sha256:
            raise StaleEntry("summaries do not match their digest")
        try:
            rows = json.loads(blob)
        except ValueError as exc:
            raise StaleEntry(str(exc)) from exc
        if not isinstance(rows, list) or len(rows) != len(names) or not all(map(_row_ok, rows)):
            raise StaleEntry("summaries are not one row per card")
        found = [Summary(*row) for row in rows]
        if [s.name for s in found] != names:
            raise StaleEntry("summaries name other cards")
        return found

    broken = [Broken(name, reason) for name, reason in header["broken"]]
    return Compiled(names, summaries, read, digests, broken=broken)


# -- writing entries -------------------------------------------------------------------------


def _build(cards: Sequence[ModelCard]) -> tuple[list[Summary], list[bytes]]:
    summaries, blobs = [], []
    for card in cards:
        summaries.append(summarize(card))
        blobs.append(card.model_dump_json().encode())
    return summaries, blobs


def _in_memory(summaries: list[Summary], blobs: list[bytes], broken: list[Broken]) -> Compiled:
    return Compiled([s.name for s in summaries], summaries, blobs.__getitem__, broken=broken)


def _write_entry(path: Path, source: dict[str, Any], summaries: list[Summary],
                 blobs: list[bytes], broken: Sequence[Broken] = ()) -> None:
    """Write an entry for ``blobs`` (the cards' JSON, in order), their summaries and the
    source's broken cards."""
    table = json.dumps([list(s) for s in summaries], separators=(",", ":")).encode()
    lengths = [len(blob) for blob in blobs]
    header = {"stamp": stamp(), "source": source, "body": len(table) + sum(lengths),
              "names": [s.name for s in summaries], "lengths": lengths,
              "digests": "".join(map(_digest, blobs)),
              "summaries": [len(table), hashlib.sha256(table).hexdigest()],
              "broken": [list(b) for b in broken]}
    _write(path, header, lambda fh: (fh.write(table), fh.writelines(blobs)))


def _write(path: Path, header: dict[str, Any], body: Callable[[Any], object]) -> None:
    """Write an entry atomically (temporary file ``.tmp-*`` beside the entries, then rename);
    any failure (read-only or missing ZOO_HOME, full disk) is ignored: a cache that cannot be
    written is only slower."""
    import tempfile

    from zoo.paths import home_problem

    if home_problem() is not None:
        return
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


def compile_file(path: Path, parse: Callable[[bytes, Path], list[ModelCard] | Parsed],
                 fresh: bool = False, kind: str = "file") -> Compiled:
    """Registry file ``path`` compiled: from its entry when up to date (and not ``fresh``),
    else parsed by ``parse`` (which raises :class:`CardError` naming file, line and field,
    or returns the broken cards beside the valid ones) and stored. ``kind`` keeps the entries
    of different parses of one file apart (a user's file is strict, a plugin's card by card)."""
    path = Path(path)
    where = os.path.abspath(path)
    entry_path = _entry_path(kind, where)
    checked_ns = time.time_ns()
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CardError(f"cannot read registry file {path}: {exc.strerror or exc}") from exc
    entry = None if fresh else _read_entry(entry_path)
    data = _read(path)
    digest = hashlib.sha256(data).hexdigest()
    if entry is not None and entry.header["source"].get("path") == where and \
            entry.header["source"].get("sha256") == digest:
        # The source's bytes are hashed every time (a registry file is small): an entry never
        # stands in for bytes whose digest it does not record, whatever their stat says.
        return _compiled_from(entry)
    cards, broken = _split(parse(data, path))
    summaries, blobs = _build(cards)
    source = {"kind": kind, "path": where, **_stat_key(st), "checked_ns": checked_ns,
              "sha256": digest}
    _write_entry(entry_path, source, summaries, blobs, broken)
    return _in_memory(summaries, blobs, broken)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CardError(f"cannot read registry file {path}: {exc.strerror or exc}") from exc


def compile_data(ident: str, items: list[Any],
                 parse: Callable[[list[Any]], list[ModelCard] | Parsed],
                 fresh: bool = False) -> Compiled:
    """Card dicts a plugin returned, compiled: keyed by ``ident`` (the plugin) and the sha256
    of their canonical JSON. Data that is not plain JSON is validated every time."""
    try:
        canonical = json.dumps(items, sort_keys=True, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError):
        cards, broken = _split(parse(items))
        summaries, blobs = _build(cards)
        return _in_memory(summaries, blobs, broken)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    entry_path = _entry_path("data", ident)
    entry = None if fresh else _read_entry(entry_path)
    if entry is not None and entry.header["source"] == {"kind": "data", "ident": ident,
                                                        "sha256": digest}:
        return _compiled_from(entry)
    cards, broken = _split(parse(items))
    summaries, blobs = _build(cards)
    _write_entry(entry_path, {"kind": "data", "ident": ident, "sha256": digest}, summaries, blobs,
                 broken)
    return _in_memory(summaries, blobs, broken)


def compile_cards(cards: list[ModelCard], broken: Sequence[Broken] = ()) -> Compiled:
    """Card objects a plugin handed over: summarized, kept as they are (``broken``: the items
    beside them that were no cards)."""
    summaries = [summarize(card) for card in cards]
    return Compiled([s.name for s in summaries], summaries,
                    lambda i: cards[i].model_dump_json().encode(), cards=cards, broken=broken)
