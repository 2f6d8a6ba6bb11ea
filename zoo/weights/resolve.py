"""Resolve ``--weights`` into a verified file: the public entry point of the fetch pipeline.

A spec is, in this order: ``none`` (random init, loudly untrained); the name of one of the
card's weights; an ``http(s)://`` URL, optionally pinned with pip's ``#sha256=HEX`` fragment;
a ``file://`` URL or a local path, pinned the same way (write ``./NAME`` for a file that
shares a weights name). ``None`` means the card's ``default_weights``. A pin is checked for
every kind of source: a local file that does not match is refused (and left alone).

Downloads land in the content-addressed cache (:mod:`zoo.weights.cache`), so a second resolution of
the same weights costs a ``stat``, not the network. A *local file* is hashed where it lies and
not copied into the cache (the hash is memoised on path, size and mtime). An *unpinned URL* is
fetched once and then served from the cache by URL; pin it (``#sha256=``) to be sure of its
bytes. ``ResolvedWeights.url`` is the card's own URL even when a mirror served the bytes, so
manifests do not depend on which mirror a machine used; it and ``source`` are redacted (no
user info, no query values), since they flow into manifests.

With a team store (``store``, :class:`WeightsMirror`), card weights missing from the cache are
asked of the store first and of the card's URLs after: the store is a mirror, its bytes are
checked against the card's pin exactly like a download's. Only cards with a full sha256 pin
are asked: an 8-hex prefix is 32 bits, which anyone who may write to the store could match.

Bounds: ``timeout`` is the stall window, ``deadline`` covers everything one resolution does
(waiting for another process's download, every attempt and retry), ``max_size`` caps a
download whose size nobody announced in advance. Nothing here imports torch.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

from zoo._core.fs import DISK_ERRNOS, disk_error_message
from zoo.catalog.schema import ModelCard, WeightsSource
from zoo.errors import DownloadError, HashMismatchError, UsageError
from zoo.weights.cache import CacheEntry, WeightsCache, body_problem
from zoo.weights.policy import DEFAULT_DEADLINE, PROGRESS_MODES, DownloadPolicy
from zoo.weights.urls import (
    hash_matches,
    parse_pin,
    redact_url,
    size_limit,
    split_path_pin,
    url_problem,
)

MIRROR_ENV = "ZOO_MIRROR"
OFFLINE_ENV = "ZOO_OFFLINE"
UNTRAINED_SOURCE = "none (untrained)"
__all__ = ["DEFAULT_DEADLINE", "PROGRESS_MODES", "UNTRAINED", "DownloadPolicy",
           "ResolvedWeights", "WeightsMirror", "apply_mirror", "env_mirror", "env_offline",
           "resolve_weights", "ways_out"]


@dataclass(frozen=True)
class ResolvedWeights:
    """Where the weights for one build come from, verified."""

    path: Path | None  # None when untrained
    sha256: str | None  # full sha256 of the file (None when untrained)
    source: str  # "NAME (https://...)", a URL, a local path, or "none (untrained)"; redacted
    url: str | None  # redacted
    untrained: bool

    @property
    def shareable_source(self) -> str:
        """``source`` as artifacts record it: a local file by its file name only, so a
        manifest that ships inside an app does not carry this machine's folders."""
        if self.path is not None and self.url is None and self.source == str(self.path):
            return f"local file {self.path.name}"
        return self.source


UNTRAINED = ResolvedWeights(None, None, UNTRAINED_SOURCE, None, True)


class WeightsMirror(Protocol):
    """A place that may hold card weights by hash (the team store's ``weights/sha256/``)."""

    url: str

    def fetch_weights(self, sha256: str, dest: Path, max_size: int | None) -> str | None:
        """Write the weights whose sha256 is ``sha256`` (64 hex) to ``dest`` and return the
        sha256 of what was written, or return None (a miss, a file over ``max_size``, an
        unusable store or bytes that failed their hash: already reported)."""


def env_offline() -> bool:
    """``ZOO_OFFLINE``: 1/true/yes/on is offline; 0/false/no/off/empty or unset is online.

    Anything else is a UsageError (exit 2) naming the variable (one grammar:
    :mod:`zoo._core.settings`).
    """
    from zoo._core.settings import env_bool

    return env_bool(OFFLINE_ENV, meaning="1 uses the cache only; 0 allows downloads")


def env_mirror() -> str | None:
    """``ZOO_MIRROR``, or None when unset or empty."""
    return os.environ.get(MIRROR_ENV, "").strip() or None


def _mirror_problem(mirror: str) -> str | None:
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in mirror):
        return "contains spaces or control characters"
    try:
        base = urlsplit(mirror)
        _ = base.port
    except ValueError:
        return "is not a valid URL"
    if base.scheme.lower() not in ("http", "https") or not base.hostname:
        return "is not an http(s) base URL"
    return None


def apply_mirror(url: str, mirror: str | None) -> str:
    """Swap the scheme and host of ``url`` for the mirror's, keep the path (after the
    mirror's own path, if it has one): ``https://a.org/m/x.pth`` + ``http://127.0.0.1:8000``
    -> ``http://127.0.0.1:8000/m/x.pth``. A URL that cannot be parsed is returned as it is
    (the downloader refuses it)."""
    if not mirror:
        return url
    problem = _mirror_problem(mirror)
    if problem is not None:
        raise UsageError(f"mirror {redact_url(mirror)!r} {problem}; use e.g. --mirror "
                         "https://host[:port]")
    base = urlsplit(mirror)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
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
    policy: DownloadPolicy | None = None,
    *,
    store: WeightsMirror | None = None,
    **options: Any,
) -> ResolvedWeights:
    """Turn a ``--weights`` spec into a verified local file (downloading into the cache).

    ``policy`` says how to fetch (:class:`~zoo.weights.policy.DownloadPolicy`: mirror,
    offline, stall window ``timeout`` and ``min_rate``, ``retries``, ``deadline`` over the
    whole resolution, waiting for another process's download included, ``max_size`` of an
    unpinned download, progress); keyword ``options`` (the same names) change single fields
    of it, as older callers pass them. Raises UsageError (exit 2) for a spec that names
    nothing, a bad policy or a bad ``ZOO_OFFLINE`` / mirror, DownloadError for network,
    disk, offline and refusal failures (message names the URL and the ways out),
    HashMismatchError when bytes do not match their pin. ``store``: asked for card weights
    before their URLs (offline too: only a store that works offline should be passed then).
    """
    policy = DownloadPolicy.of(policy, **options)
    mirror, origin = policy.mirror, "--mirror"
    if mirror is None:
        mirror, origin = env_mirror(), MIRROR_ENV
    if mirror and (problem := _mirror_problem(mirror)) is not None:
        raise UsageError(f"{origin} {redact_url(mirror)!r} {problem}; use an http(s) base URL "
                         "such as https://host[:port]")
    offline = env_offline() if policy.offline is None else policy.offline
    ends = None if policy.deadline is None else time.monotonic() + policy.deadline
    ctx = _Context(card, policy, mirror, offline, ends, store)
    if spec is None:
        if card.default_weights is None:
            raise UsageError(
                f"model {card.name!r} has no published weights; pass --weights PATH|URL "
                "with your own, or --weights none for an untrained model"
            )
        spec = card.default_weights
    spec = spec.strip()
    if not spec:
        raise UsageError("--weights needs a value: NAME, URL, PATH or none")
    if spec.lower() == "none":
        return UNTRAINED
    cache = ctx.cache
    try:
        return ctx.dispatch(spec)
    except OSError as exc:  # the cache folder itself: full, read-only, not a folder...
        raise DownloadError(_cache_failure(exc, cache)) from None


def _cache_failure(exc: OSError, cache: WeightsCache) -> str:
    hint = f"set ZOO_HOME to another folder (the weights cache is {cache.root})"
    where = Path(exc.filename) if isinstance(exc.filename, str) else cache.root
    if exc.errno in DISK_ERRNOS:
        return disk_error_message(exc, where, home_hint=hint)
    return f"cannot use {where}: {exc.strerror or exc}; {hint}"


@dataclass
class _Context:
    card: ModelCard
    policy: DownloadPolicy
    mirror: str | None  # the policy's, else ZOO_MIRROR's
    offline: bool  # the policy's, else ZOO_OFFLINE's
    ends: float | None  # time.monotonic() deadline
    store: WeightsMirror | None = None

    @property
    def cache(self) -> WeightsCache:
        return WeightsCache()

    @property
    def home_hint(self) -> str:
        return "set ZOO_HOME to a folder on another disk"

    def remaining(self) -> float | None:
        """Seconds left of the deadline; a DownloadError once it is over."""
        if self.ends is None:
            return None
        left = self.ends - time.monotonic()
        if left <= 0:
            raise DownloadError(f"the --deadline of {self.policy.deadline:g} s is over; "
                                f"{ways_out(self.card)}")
        return left

    def _note(self, message: str) -> None:
        if self.policy.progress != "never":
            print(f"zoo: {message}", file=sys.stderr)

    def dispatch(self, spec: str) -> ResolvedWeights:
        named = self.card.weights_named(spec)
        if named is not None:
            return self.card_weights(named)
        lowered = spec.lower()
        if lowered.startswith(("http://", "https://")):
            return self.url_weights(spec)
        if lowered.startswith("file:"):
            return self.file_url_weights(spec)
        base, expected = split_path_pin(spec)
        try:
            path = Path(base).expanduser()
        except RuntimeError:  # ~user that does not exist
            path = Path(base)
        try:
            is_file, exists = path.is_file(), path.exists()
        except (OSError, ValueError) as exc:
            raise UsageError(f"--weights {spec!r}: not a usable path ({_short_reason(exc)})") \
                from None
        if is_file:
            return self.local_weights(path, spec, expected)
        if exists:
            raise UsageError(f"--weights {spec}: is not a file")
        if expected is not None or "/" in base or os.sep in base or path.suffix:
            raise UsageError(f"--weights {spec}: no such file; check the path")
        raise UsageError(
            f"model {self.card.name!r} has no weights named {spec!r} and no file {spec!r} "
            f"exists; choose from {_names(self.card)}, or pass a URL or a file path"
        )

    def card_weights(self, src: WeightsSource) -> ResolvedWeights:
        expected = src.expected_hash
        shown = redact_url(src.urls[0])
        source = f"{src.name} ({shown})"
        ref = (self.card.name, src.name)
        cache = self.cache
        entry = self._hit(cache, expected, src)
        if entry is None:
            if self.offline and self.store is None:
                raise self._offline_miss(src, expected, cache)
            urls = [apply_mirror(u, self.mirror) for u in src.urls]
            what = f"{self.card.name} weights {src.name}"
            with cache.lock(expected, on_wait=lambda who: self._wait(what, who),
                            timeout=self.remaining(), what=what):
                entry = self._hit(cache, expected, src) or \
                    self._from_store(cache, expected, src, ref)
                if entry is None and self.offline:
                    raise self._offline_miss(src, expected, cache)
                if entry is None:
                    entry = self._download(cache, urls, expected, src.size, src.size_exact,
                                           key=expected, ref=ref, label=src.name)
        cache.note_use(entry, url=src.urls[0], ref=ref)
        return ResolvedWeights(entry.path, entry.sha256, source, shown, False)

    def _offline_miss(self, src: WeightsSource, expected: str, cache: WeightsCache
                      ) -> DownloadError:
        store = f" nor in the store {redact_url(self.store.url)}" if self.store else ""
        return DownloadError(
            f"offline ({OFFLINE_ENV}=1 or --offline) and {self.card.name} weights "
            f"{src.name!r} ({_hash_label(expected)}) are not in the cache {cache.root}{store}; "
            f"run `zoo fetch {self.card.name}` once online, or use --weights PATH "
            "or --weights none"
        )

    def _from_store(self, cache: WeightsCache, expected: str, src: WeightsSource,
                    ref: tuple[str, str | None]) -> CacheEntry | None:
        """The weights from the team store, checked against the card's pin, or None."""
        if self.store is None:
            return None
        if len(expected) != 64:
            self._note(f"{self.card.name} weights {src.name} pin only a sha256 prefix: not "
                       "taken from the team store (pin the card's full sha256 to use the store)")
            return None
        part = cache.part_path(f"store-{expected}")
        limit = size_limit(src.size, src.size_exact) or self.policy.max_size
        try:
            sha = self.store.fetch_weights(expected, part, limit)
            if sha != expected or (src.size is not None and src.size_exact
                                   and part.stat().st_size != src.size):
                part.unlink(missing_ok=True)
                return None
            self._note(f"{self.card.name} weights {src.name}: from the team store "
                       f"{redact_url(self.store.url)} (sha256 checked)")
            return cache.add(part, sha, url=f"{self.store.url.rstrip('/')}/weights/sha256/{sha}",
                             ref=ref)
        finally:
            part.unlink(missing_ok=True)

    def _hit(self, cache: WeightsCache, expected: str, src: WeightsSource) -> CacheEntry | None:
        entry = cache.find(expected)
        if entry is not None and src.size is not None and src.size_exact and \
                entry.size != src.size:
            return None
        return entry

    def url_weights(self, spec: str) -> ResolvedWeights:
        url, _, fragment = spec.partition("#")
        expected = parse_pin(fragment, spec) if fragment else None
        problem = url_problem(url)
        if problem is not None:
            raise UsageError(f"--weights {redact_url(url)!r}: {problem}")
        shown = redact_url(url)
        cache = self.cache
        ref = (self.card.name, None)
        entry = cache.find(expected) if expected else cache.find(url=url)
        if entry is None:
            if self.offline:
                raise DownloadError(
                    f"offline ({OFFLINE_ENV}=1 or --offline) and {shown} is not in the cache "
                    f"{cache.root}; fetch it once online, or use --weights PATH or --weights none"
                )
            key = expected or cache.url_key(url)
            with cache.lock(key, on_wait=lambda who: self._wait(shown, who),
                            timeout=self.remaining(), what=shown):
                entry = cache.find(expected) if expected else cache.find(url=url)
                if entry is None:
                    entry = self._download(cache, [url], expected, None, True, key=key,
                                           ref=ref, label=urlsplit(url).path.rsplit("/", 1)[-1])
        cache.note_use(entry, url=url, ref=ref)
        return ResolvedWeights(entry.path, entry.sha256, shown, shown, False)

    def file_url_weights(self, spec: str) -> ResolvedWeights:
        try:
            parts = urlsplit(spec)
        except ValueError as exc:
            raise UsageError(f"--weights {spec!r}: not a valid file URL ({exc})") from None
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"--weights {spec}: a file URL names a local path: file:///PATH")
        expected = parse_pin(parts.fragment, spec) if parts.fragment else None
        raw = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            path = Path(url2pathname(unquote(raw)))
            is_file = path.is_file()
        except (OSError, ValueError) as exc:
            raise UsageError(f"--weights {spec!r}: not a usable path ({_short_reason(exc)})") \
                from None
        if not is_file:
            raise UsageError(f"--weights {spec}: no such file {path}")
        return self.local_weights(path, spec, expected)

    def local_weights(self, path: Path, spec: str, expected: str | None) -> ResolvedWeights:
        try:
            resolved = path.resolve()
            sha = self.cache.hash_local(resolved)
        except (OSError, RuntimeError) as exc:
            raise UsageError(f"--weights {spec}: cannot read {path}: "
                             f"{_short_reason(exc)}") from None
        if not hash_matches(sha, expected):
            kind = "sha256" if expected and len(expected) == 64 else "sha256 prefix"
            raise HashMismatchError(
                f"{kind} mismatch for local file {resolved}: expected {expected}, got {sha}; "
                "the file was left as it is: check that it is the file you meant, or fix "
                "the #sha256= pin"
            )
        return ResolvedWeights(resolved, sha, str(resolved), None, False)

    def _wait(self, what: str, holder: str) -> None:
        self._note(f"waiting for another zoo process that is downloading {what}: {holder}")

    def _download(self, cache: WeightsCache, urls: list[str], expected: str | None,
                  size: int | None, size_exact: bool, *, key: str,
                  ref: tuple[str, str | None], label: str) -> CacheEntry:
        from zoo.weights.download import download  # imports requests: only to download

        errors: list[DownloadError] = []
        for url in urls:
            try:
                result = download(
                    url, cache.part_path(key), expected_sha256=expected, expected_size=size,
                    size_exact=size_exact, label=f"{self.card.name} {label}", log=self._note,
                    home_hint=self.home_hint,
                    **self.policy.transfer_options(deadline=self.remaining()),
                )
            except HashMismatchError as exc:
                raise HashMismatchError(
                    f"{exc}; the server sent other bytes than the card pins: try another "
                    "--mirror, or --weights PATH with a file you trust"
                ) from exc
            except DownloadError as exc:
                errors.append(exc)
                if self.ends is not None and time.monotonic() >= self.ends:
                    break
                continue
            problem = body_problem(result.path)
            if problem is not None:  # a 200 with a bad body never enters the cache
                result.path.unlink(missing_ok=True)
                errors.append(DownloadError(
                    f"{redact_url(url)} answered with {problem}; nothing was cached"))
                continue
            return cache.add(result.path, result.sha256, url=url, ref=ref)
        detail = "; ".join(str(e) for e in errors)
        raise DownloadError(f"{detail}; {ways_out(self.card)}")


def _short_reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:120]
