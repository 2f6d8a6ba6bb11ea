"""A team store as configured: the URL, its file-system options, the keys, and what to do.

:func:`store_config` turns plain values (from the CLI's edge, :mod:`zoo.cli.store_options`,
or from Python) and the environment (``ZOO_STORE``, ``ZOO_TRUSTED_KEYS``, ``ZOO_OFFLINE``)
into a :class:`StoreConfig`, or None when no store is in use; :func:`custody_for` gives the
chain-of-custody rules of a run. Nothing here sees argparse. Importing it is cheap; the
store's libraries load when a store is opened.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.export.custody import Custody
    from zoo.store.export_folder import LocalExport
    from zoo.store.keys import PublicKey, SigningKey
    from zoo.store.store import Progress, PublishResult, PullResult, Store

STORE_ENV = "ZOO_STORE"
OFFLINE_ENV = "ZOO_OFFLINE"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_LOCAL_SCHEMES = ("file://", "local://")


def parse_store_options(items: list[str]) -> dict[str, Any]:
    """``["endpoint_url=http://x", "client_kwargs.region_name=eu"]`` -> nested dict; the
    values ``true``/``false``/``none`` and integers are converted."""
    from zoo.store.errors import StoreConfigError

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise StoreConfigError(f"--store-option {item!r}: expected KEY=VALUE, e.g. "
                                   "endpoint_url=https://s3.example.com")
        node = options
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise StoreConfigError(f"--store-option {item!r}: {part} is already a value")
            node = child
        node[leaf] = _value(value)
    return options


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null"):
        return None
    if re.fullmatch(r"-?\d{1,18}", text.strip()):
        return int(text)
    return text


def is_local_url(url: str) -> bool:
    """A ``file://`` URL or a plain path (works offline)."""
    return "://" not in url or url.lower().startswith(_LOCAL_SCHEMES)


def _offline(offline: bool | None) -> bool:
    if offline:
        return True
    from zoo._core.settings import env_bool

    return env_bool(OFFLINE_ENV, meaning="use the cache only")


def store_config(url: str | None = None, *, options: list[str] | None = None,
                 no_store: bool = False, publish: bool = False, sign: Path | None = None,
                 trusted_keys: list[Path] | None = None, offline: bool | None = None,
                 required: bool = False, signatures: bool = True) -> StoreConfig | None:
    """The store ``url`` (else ``ZOO_STORE``) names, or None (no store, ``no_store``, or a
    remote store while offline). ``required`` makes a missing store a usage error;
    ``signatures`` False skips loading trusted keys (weights-only use: weights are checked
    against their card's pin, not signatures); ``trusted_keys`` empty: ``ZOO_TRUSTED_KEYS``.

    Raises StoreConfigError (exit 2) for contradictions (``no_store`` with ``publish``,
    ``sign`` without ``publish``), bad options and unreadable keys.
    """
    from zoo.store.errors import StoreConfigError

    if sign is not None and not publish and not required:
        raise StoreConfigError("--sign only makes sense with --publish (or `zoo publish`)")
    if no_store:
        if publish:
            raise StoreConfigError("--publish needs a store; drop --no-store")
        return None
    url = (url or os.environ.get(STORE_ENV, "")).strip()
    if not url:
        if publish or required:
            raise StoreConfigError(f"no team store: pass --store URL or set {STORE_ENV} "
                                   "(e.g. s3://team-bucket/zoo or file:///shared/zoo)")
        return None
    if _offline(offline) and not is_local_url(url):
        if publish or required:
            raise StoreConfigError(f"the store {url} is remote and zoo is offline "
                                   f"({OFFLINE_ENV} / --offline)")
        return None
    from zoo.store.keys import load_signing_key, load_trusted_keys, trusted_key_paths_from_env

    paths: list[Path] = []
    if signatures and trusted_keys is not None:  # None: no signatures are checked
        paths = list(trusted_keys) or trusted_key_paths_from_env()
    return StoreConfig(
        url=url, options=parse_store_options(list(options or [])),
        trusted_keys=load_trusted_keys(paths),
        sign_key=load_signing_key(sign) if sign is not None else None,
        publish_after=publish)


def custody_for(store: StoreConfig | None, *, trusted_keys: list[Path] | None = None,
                require_signed: bool = False) -> Custody:
    """The chain-of-custody rules of an exporting run: the trusted keys (the store's, or
    ``trusted_keys``/``ZOO_TRUSTED_KEYS`` when no store is used: they still govern the
    cache), ``require_signed`` or ``ZOO_REQUIRE_SIGNED``, and whether the result is signed.
    Requiring signatures without any trusted key is a usage error."""
    from zoo.export.custody import Custody, env_require_signed
    from zoo.store.errors import StoreConfigError

    require = require_signed or env_require_signed()
    if store is not None:
        keys = list(store.trusted_keys)
    else:
        from zoo.store.keys import load_trusted_keys, trusted_key_paths_from_env

        paths = list(trusted_keys or []) or trusted_key_paths_from_env()
        keys = load_trusted_keys(paths) if paths else []
    if require and not keys:
        raise StoreConfigError("--require-signed (ZOO_REQUIRE_SIGNED) needs a trusted key: "
                               "pass --trusted-key team.pub or set ZOO_TRUSTED_KEYS")
    signing = store is not None and store.sign_key is not None and store.publish_after
    if require and signing:
        raise StoreConfigError("--require-signed installs what others signed; --publish --sign "
                               "signs what this machine built: use one or the other")
    return Custody(trusted=frozenset(k.fingerprint for k in keys), require_signed=require,
                   signing=signing)


def _warn(message: str) -> None:
    from zoo._core.log import warn

    warn(message, once=False)


@dataclass
class StoreConfig:
    """A store chosen on the command line or in the environment, with its keys.

    The pipeline calls :meth:`pull_into` (a ``pull(identity, staging) -> bool`` callback)
    before exporting, and :meth:`publish` after a local export when ``publish`` is set.
    """

    url: str
    options: dict[str, Any] = field(default_factory=dict)
    trusted_keys: list[PublicKey] = field(default_factory=list)
    sign_key: SigningKey | None = None
    publish_after: bool = False
    warn: Callable[[str], None] = _warn
    _store: Store | None = None

    def open(self) -> Store:
        """The store (opened once)."""
        if self._store is None:
            from zoo.store.store import open_store

            self._store = open_store(self.url, self.options)
        return self._store

    def pull(self, identity: str, dest_dir: Path, *, progress: Progress | None = None,
             include_sums: bool = True) -> PullResult | None:
        """:meth:`Store.pull` with this configuration's trusted keys, and the embedded-manifest
        check (raises StoreError)."""
        from zoo.store.embedded import embedded_problems

        return self.open().pull(identity, dest_dir, self.trusted_keys or None,
                                progress=progress, include_sums=include_sums,
                                check=embedded_problems)

    def pull_for_export(self, identity: str, staging: Path) -> dict[str, Any] | None:
        """The export pipeline's ``pull`` callback: the provenance of the verified artifact
        the store put into ``staging`` (``{"kind": "pulled", "store", "record", "signer"}``),
        or None (see :meth:`pull_into` for what is reported)."""
        from zoo.store.errors import StoreError
        from zoo.weights.urls import redact_url

        try:
            result = self.pull(identity, staging, include_sums=False)
        except StoreError as exc:
            self.warn(f"{exc}; exporting locally")
            return None
        if result is None:
            return None
        if result.skipped:
            self.warn("skipped store records that failed verification: "
                      + "; ".join(result.skipped))
        sig = result.record.signature
        return {"kind": "pulled", "store": redact_url(self.url), "record": result.record.digest,
                "signer": sig.public_key.fingerprint if sig is not None else None}

    def pull_into(self, identity: str, staging: Path) -> bool:
        """The export pipeline's ``pull`` callback: True when the store filled ``staging``
        with a verified artifact. A miss returns False quietly; an unreachable store or a
        refused record warns (one line, naming what failed) and returns False, so the caller
        exports locally. ``staging`` receives the artifact, its manifest and its operators
        list (no SHA256SUMS: the install step writes that)."""
        return self.pull_for_export(identity, staging) is not None

    def publish(self, path: Path | LocalExport, *, progress: Progress | None = None,
                custody_checked: bool = False) -> PublishResult:
        """Publish the artifact at ``path``, signed with ``sign_key`` when there is one.

        A signature is made only over bytes this machine built (the export cache holds them
        with provenance ``built``) or bytes a record signed by one of ``trusted_keys`` lists;
        anything else raises :class:`StoreRefusedError` before anything is uploaded.
        ``custody_checked``: the caller has already proved that (``zoo fetch --publish``).
        """
        from zoo.store.export_folder import collected

        local = collected(path)  # hashed once for the custody check and the upload
        if self.sign_key is not None and not custody_checked:
            why = self.signing_refusal(local)
            if why is not None:
                from zoo.store.errors import StoreRefusedError

                raise StoreRefusedError(f"refusing to sign {local.folder / local.artifact}: "
                                        f"{why}; nothing was published")
        from zoo.store.embedded import embedded_problems

        return self.open().publish(local, sign_key=self.sign_key, progress=progress,
                                   check=embedded_problems)

    def signing_refusal(self, path: Path | LocalExport) -> str | None:
        """Why the export at ``path`` may not be signed here (None: it may)."""
        from zoo.export.cache import ArtifactCache
        from zoo.export.custody import Custody, describe
        from zoo.store.export_folder import SIDECAR, collected
        from zoo.store.provenance import check_provenance

        local = collected(path)
        identity = local.facts.identity
        custody = Custody(trusted=frozenset(k.fingerprint for k in self.trusted_keys),
                          signing=True)
        mine = {f.path: f.sha256 for f in local.files if f.source is not None}
        entry = ArtifactCache(budget=None).lookup(identity) if identity else None
        if entry is not None and all(entry.files.get(p) == sha for p, sha in mine.items()):
            why = custody.may_sign(entry.provenance)
            if why is None:
                return None
            reason = f"these bytes were {describe(entry.provenance)}"
        elif entry is not None:
            reason = "the export cache holds other bytes for its identity (edited after export?)"
        else:
            reason = "this machine's export cache does not hold these bytes (not exported here," \
                " or evicted since)"
        if self.trusted_keys and identity:
            artifact = local.folder / local.artifact
            ok, _detail = check_provenance(artifact, local.folder / (local.artifact + SIDECAR),
                                           identity, self.trusted_keys, self.open())
            if ok:
                return None
        hint = " or pass --trusted-key for a key that signed them" if not self.trusted_keys \
            else ""
        return (f"{reason}, and no record signed by a trusted key lists them; export them here "
                f"(`zoo fetch NAME --format F --publish --sign KEY`){hint}")

    def publish_weights_of(self, result: PublishResult, *,
                           progress: Progress | None = None) -> dict[str, Any] | None:
        """Upload the weights a published artifact was exported from, when this machine's
        weights cache holds them; None for an untrained artifact. Returns what happened:
        ``{"sha256", "size", "uploaded"}``, or ``{"sha256", "skipped": reason}``."""
        sha = result.weights_sha256
        if sha is None:
            return None
        from zoo.weights.cache import WeightsCache

        entry = WeightsCache().find(sha)
        if entry is None:
            return {"sha256": sha, "skipped": "not in this machine's weights cache"}
        sent = self.open().publish_weights(entry.path, sha, entry.size, progress=progress)
        return {"sha256": sha, "size": entry.size, "uploaded": sent}

    def fetch_weights(self, sha256: str, dest: Path, max_size: int | None) -> str | None:
        """The weights pipeline's store callback (:class:`zoo.weights.resolve.WeightsMirror`): the
        sha256 of the weights written to ``dest``, or None. A store that cannot be used
        (unreachable, a bad URL or option, a missing fsspec driver) or bytes that fail their
        hash warn (one line) and count as a miss: the card's URLs come next."""
        from zoo.store.errors import StoreConfigError, StoreError

        try:
            return self.open().pull_weights(sha256, dest, max_size=max_size,
                                            progress=progress_printer())
        except (StoreError, StoreConfigError) as exc:
            self.warn(f"{exc}; fetching the weights from the card's URLs")
            return None


def weights_store(url: str | None, offline: bool | None) -> StoreConfig | None:
    """The team store the Python API and ``zoo run`` ask for card weights (a
    :class:`zoo.weights.resolve.WeightsMirror`): ``url``, else ``ZOO_STORE``; None for ``""``,
    or for a remote store while offline (``offline`` None: ``ZOO_OFFLINE`` decides)."""
    from zoo.weights.resolve import env_offline

    url = (os.environ.get(STORE_ENV, "") if url is None else url).strip()
    if not url:
        return None
    if (env_offline() if offline is None else offline) and not is_local_url(url):
        return None
    return StoreConfig(url=url)


def progress_printer(enabled: bool | None = None) -> Callable[[str, int, int], None] | None:
    """A progress callback drawing one line on stderr (a TTY, or ``enabled``), else None."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from zoo._core.settings import format_size as human_bytes

    state = {"last": -1.0, "ended": False}

    def show(what: str, done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if total <= 0 or state["ended"] or (done < total and now - state["last"] < 0.1):
            return
        state["last"] = now
        state["ended"] = done >= total
        pct = f"{100 * done / total:5.1f}%" if total else "  100%"
        line = f"\r{pct} {human_bytes(done)} / {human_bytes(total)}  {what[:40]}"
        sys.stderr.write(line.ljust(80)[:100])
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
