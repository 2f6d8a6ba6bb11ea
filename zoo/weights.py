"""Resolve ``--weights`` into a verified file: the public entry point of the fetch pipeline.

A spec is, in this order: ``none`` (random init, loudly untrained); the name of one of the
card's weights; an ``http(s)://`` URL, optionally pinned with pip's ``#sha256=HEX`` fragment;
a ``file://`` URL or a local path (write ``./NAME`` for a file that shares a weights name).
``None`` means the card's ``default_weights``.

Downloads land in the content-addressed cache (:mod:`zoo.cache`), so a second resolution of
the same weights costs a ``stat``, not the network. A *local file* is hashed where it lies and
not copied into the cache (the hash is memoised on path, size and mtime). An *unpinned URL* is
fetched once and then served from the cache by URL; pin it (``#sha256=``) to be sure of its
bytes. ``ResolvedWeights.url`` is the card's own URL even when a mirror served the bytes, so
manifests do not depend on which mirror a machine used. Nothing here imports torch.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

from zoo.cache import CacheEntry, WeightsCache
from zoo.download import download
from zoo.errors import DownloadError, HashMismatchError, UsageError
from zoo.schema import ModelCard, WeightsSource

MIRROR_ENV = "ZOO_MIRROR"
OFFLINE_ENV = "ZOO_OFFLINE"
UNTRAINED_SOURCE = "none (untrained)"
PROGRESS_MODES = ("auto", "always", "never")
_HASH_FRAGMENT = re.compile(r"^sha256=([0-9a-fA-F]{64}|[0-9a-fA-F]{8})$")


@dataclass(frozen=True)
class ResolvedWeights:
    """Where the weights for one build come from, verified."""

    path: Path | None  # None when untrained
    sha256: str | None  # full sha256 of the file (None when untrained)
    source: str  # "NAME (https://...)", a URL, a local path, or "none (untrained)"
    url: str | None
    untrained: bool


UNTRAINED = ResolvedWeights(None, None, UNTRAINED_SOURCE, None, True)


def env_offline() -> bool:
    """``ZOO_OFFLINE`` set to 1/true/yes/on."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def env_mirror() -> str | None:
    """``ZOO_MIRROR``, or None when unset or empty."""
    return os.environ.get(MIRROR_ENV, "").strip() or None


def apply_mirror(url: str, mirror: str | None) -> str:
    """Swap the scheme and host of ``url`` for the mirror's, keep the path (after the
    mirror's own path, if it has one): ``https://a.org/m/x.pth`` + ``http://127.0.0.1:8000``
    -> ``http://127.0.0.1:8000/m/x.pth``."""
    if not mirror:
        return url
    base = urlsplit(mirror)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise UsageError(
            f"mirror {mirror!r} is not an http(s) base URL; use e.g. --mirror https://host[:port]"
        )
    parts = urlsplit(url)
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path,
                       parts.query, ""))


def ways_out(card: ModelCard) -> str:
    """The one-line hint every failed download ends with."""
    return (f"ways out: --mirror BASE (or {MIRROR_ENV}), --weights PATH with a file you have, "
            f"or --weights none for an untrained {card.name}")


def _names(card: ModelCard) -> str:
    if not card.weights:
        return "none (it has no published weights)"
    return ", ".join([w.name for w in card.weights] + ["none"])


def _hash_label(expected: str) -> str:
    return f"sha256 {expected}" if len(expected) == 64 else f"sha256 prefix {expected}"


def resolve_weights(
    card: ModelCard,
    spec: str | None = None,
    *,
    mirror: str | None = None,
    offline: bool | None = None,
    allow_http: bool = False,
    progress: str = "auto",
    timeout: float = 30.0,
    retries: int = 3,
) -> ResolvedWeights:
    """Turn a ``--weights`` spec into a verified local file (downloading into the cache).

    Raises UsageError (exit 2) for a spec that names nothing, DownloadError for network,
    offline and refusal failures (message names the URL and the ways out), HashMismatchError
    when bytes do not match their pin.
    """
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {PROGRESS_MODES}, not {progress!r}")
    ctx = _Context(card, mirror if mirror is not None else env_mirror(),
                   env_offline() if offline is None else offline, allow_http, progress,
                   timeout, retries)
    if spec is None:
        if card.default_weights is None:
            raise UsageError(
                f"model {card.name!r} has no published weights; pass --weights PATH|URL "
                "with your own, or --weights none for an untrained model"
            )
        spec = card.default_weights
    spec = spec.strip()
    if spec.lower() == "none":
        return UNTRAINED
    named = card.weights_named(spec)
    if named is not None:
        return ctx.card_weights(named)
    scheme = urlsplit(spec).scheme.lower()
    if scheme in ("http", "https"):
        return ctx.url_weights(spec)
    if scheme == "file":
        parts = urlsplit(spec)
        return ctx.local_weights(Path(url2pathname(unquote(parts.path))), spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return ctx.local_weights(path, spec)
    if path.exists():
        raise UsageError(f"--weights {spec}: is not a file")
    if "/" in spec or os.sep in spec or path.suffix:
        raise UsageError(f"--weights {spec}: no such file; check the path")
    raise UsageError(
        f"model {card.name!r} has no weights named {spec!r} and no file {spec!r} exists; "
        f"choose from {_names(card)}, or pass a URL or a file path"
    )


@dataclass
class _Context:
    card: ModelCard
    mirror: str | None
    offline: bool
    allow_http: bool
    progress: str
    timeout: float
    retries: int

    @property
    def cache(self) -> WeightsCache:
        return WeightsCache()

    def _note(self, message: str) -> None:
        if self.progress != "never":
            print(f"zoo: {message}", file=sys.stderr)

    def card_weights(self, src: WeightsSource) -> ResolvedWeights:
        expected = src.expected_hash
        source = f"{src.name} ({src.urls[0]})"
        ref = (self.card.name, src.name)
        cache = self.cache
        entry = self._hit(cache, expected, src)
        if entry is None:
            if self.offline:
                raise DownloadError(
                    f"offline ({OFFLINE_ENV}=1 or --offline) and {self.card.name} weights "
                    f"{src.name!r} ({_hash_label(expected)}) are not in the cache {cache.root}; "
                    f"run `zoo fetch {self.card.name}` once online, or use --weights PATH "
                    "or --weights none"
                )
            urls = [apply_mirror(u, self.mirror) for u in src.urls]
            with cache.lock(expected, on_wait=lambda: self._wait(src.name)):
                entry = self._hit(cache, expected, src)
                if entry is None:
                    entry = self._download(cache, urls, expected, src.size, src.size_exact,
                                           key=expected, ref=ref, label=src.name)
        cache.note_use(entry, url=src.urls[0], ref=ref)
        return ResolvedWeights(entry.path, entry.sha256, source, src.urls[0], False)

    def _hit(self, cache: WeightsCache, expected: str, src: WeightsSource) -> CacheEntry | None:
        entry = cache.find(expected)
        if entry is not None and src.size is not None and src.size_exact and \
                entry.size != src.size:
            return None
        return entry

    def url_weights(self, spec: str) -> ResolvedWeights:
        url, _, fragment = spec.partition("#")
        expected: str | None = None
        if fragment:
            match = _HASH_FRAGMENT.match(fragment)
            if match is None:
                raise UsageError(
                    f"--weights {spec}: the fragment must be #sha256=HEX (64 hex digits, or the "
                    "8-hex prefix)"
                )
            expected = match.group(1).lower()
        cache = self.cache
        ref = (self.card.name, None)
        entry = cache.find(expected) if expected else cache.find(url=url)
        if entry is None:
            if self.offline:
                raise DownloadError(
                    f"offline ({OFFLINE_ENV}=1 or --offline) and {url} is not in the cache "
                    f"{cache.root}; fetch it once online, or use --weights PATH or --weights none"
                )
            key = expected or cache.url_key(url)
            with cache.lock(key, on_wait=lambda: self._wait(url)):
                entry = cache.find(expected) if expected else cache.find(url=url)
                if entry is None:
                    entry = self._download(cache, [url], expected, None, True, key=key,
                                           ref=ref, label=url.rsplit("/", 1)[-1])
        cache.note_use(entry, url=url, ref=ref)
        return ResolvedWeights(entry.path, entry.sha256, url, url, False)

    def local_weights(self, path: Path, spec: str) -> ResolvedWeights:
        if not path.is_file():
            raise UsageError(f"--weights {spec}: no such file {path}")
        try:
            sha = self.cache.hash_local(path)
        except OSError as exc:
            raise UsageError(f"--weights {spec}: cannot read {path}: {exc.strerror}") from exc
        resolved = path.resolve()
        return ResolvedWeights(resolved, sha, str(resolved), None, False)

    def _wait(self, what: str) -> None:
        self._note(f"waiting for another zoo process that is downloading {what}")

    def _download(self, cache: WeightsCache, urls: list[str], expected: str | None,
                  size: int | None, size_exact: bool, *, key: str,
                  ref: tuple[str, str | None], label: str) -> CacheEntry:
        errors: list[DownloadError] = []
        for url in urls:
            try:
                result = download(
                    url, cache.part_path(key), expected_sha256=expected, expected_size=size,
                    size_exact=size_exact, allow_http=self.allow_http, timeout=self.timeout,
                    retries=self.retries, progress=self.progress,
                    label=f"{self.card.name} {label}", log=self._note,
                )
            except HashMismatchError as exc:
                raise HashMismatchError(
                    f"{exc}; the server sent other bytes than the card pins: try another "
                    "--mirror, or --weights PATH with a file you trust"
                ) from exc
            except DownloadError as exc:
                errors.append(exc)
                continue
            return cache.add(result.path, result.sha256, url=url, ref=ref)
        detail = "; ".join(str(e) for e in errors)
        raise DownloadError(f"{detail}; {ways_out(self.card)}")
