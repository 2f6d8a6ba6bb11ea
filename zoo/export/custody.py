"""Chain of custody: which artifact bytes a run may serve, pull and sign.

Every export-cache entry records where its bytes came from (its *provenance*, see
:func:`zoo.export.cache.read_provenance`): built on this machine, or pulled from a team-store
record signed by some key or by none. A cache hit is served only under the rules a fresh pull
would face, and a signature is only ever made over bytes this machine built or bytes a trusted
key already signed. One policy object carries those rules from the command line to the
pipeline; nothing here imports torch or the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REQUIRE_SIGNED_ENV = "ZOO_REQUIRE_SIGNED"


def env_require_signed() -> bool:
    """``ZOO_REQUIRE_SIGNED`` as yes/no (a usage error otherwise)."""
    from zoo._core.settings import env_bool

    return env_bool(REQUIRE_SIGNED_ENV,
                    meaning="1 accepts only artifacts signed by a trusted key")


@dataclass(frozen=True)
class Custody:
    """The trust rules of one run.

    ``trusted``: fingerprints of the keys the user trusts (``--trusted-key``,
    ``ZOO_TRUSTED_KEYS``). ``require_signed``: only bytes signed by one of them are installed
    (no local export, no unsigned cache entry). ``signing``: the result will be signed with a
    team key, so it must be bytes this machine builds or bytes a trusted key signed.
    """

    trusted: frozenset[str] = frozenset()
    require_signed: bool = False
    signing: bool = False

    @property
    def strict(self) -> bool:
        """Whether anything but built-here or trusted-signed bytes is refused."""
        return bool(self.trusted) or self.require_signed or self.signing

    @property
    def may_pull(self) -> bool:
        """Whether a store pull can give acceptable bytes (signing with no trusted key: a
        pulled record could never be signed, so the artifact is built here instead)."""
        return not (self.signing and not self.trusted)

    def signed_by_trusted(self, provenance: dict[str, Any]) -> bool:
        return provenance.get("kind") == "pulled" and provenance.get("signer") in self.trusted

    def refusal(self, provenance: dict[str, Any]) -> str | None:
        """Why a cache entry with ``provenance`` may not be served in this run (None: it
        may)."""
        kind = provenance.get("kind")
        if self.signed_by_trusted(provenance):
            return None
        if kind == "built":
            return "it was exported on this machine, not signed by a trusted key " \
                "(--require-signed)" if self.require_signed else None
        if not self.strict:
            return None
        return describe(provenance)

    def may_sign(self, provenance: dict[str, Any]) -> str | None:
        """Why bytes with ``provenance`` may not be signed with a team key (None: they may)."""
        if provenance.get("kind") == "built" or self.signed_by_trusted(provenance):
            return None
        return describe(provenance)


def describe(provenance: dict[str, Any]) -> str:
    """Where bytes came from, in words (for refusals and ``zoo cache list``)."""
    kind = provenance.get("kind")
    if kind == "built":
        return f"exported on this machine (weights: {provenance.get('weights_from')})"
    if kind == "pulled":
        store = provenance.get("store")
        record = str(provenance.get("record", ""))[:16]
        signer = provenance.get("signer")
        who = f"signed by {str(signer)[:16]}…, not a trusted key" if signer else "unsigned"
        return f"pulled from the store {store} (record {record}…, {who})"
    return "its origin is unknown (cached by an older zoo)"
