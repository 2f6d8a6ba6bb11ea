"""What the team store reports. Every error names the store and the way out.

* :class:`StoreUnavailableError` — the store could not be reached (connection refused,
  timeouts, 5xx / throttling) after bounded retries. ``zoo fetch`` then exports locally.
* :class:`StoreRefusedError` — the store answered, but what it holds failed a check (a hash,
  a signature, an untrusted or missing signer, a malformed record). Nothing is installed.
* :class:`StoreConfigError` — bad usage: an unknown URL scheme, a bad ``--store-option``, a
  key file that is not an Ed25519 PEM key (exit 2).
"""

from __future__ import annotations

from zoo.errors import UsageError, ZooError


class StoreError(ZooError):
    """Root of the store's runtime errors (exit 1)."""


class StoreUnavailableError(StoreError):
    """The store did not answer usefully after the allowed attempts."""


class StoreRefusedError(StoreError):
    """Records exist for what was asked, but none passed verification.

    ``reasons`` holds one line per refused record (record name: what failed).
    """

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = list(reasons or [])


class StoreConfigError(UsageError):
    """The store, its options or a key were specified in a way that cannot work (exit 2)."""
