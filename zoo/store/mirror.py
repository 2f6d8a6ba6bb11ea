"""The store as a mirror of the cards' weights URLs: ``weights/sha256/<hex>``."""

from __future__ import annotations

from pathlib import Path

from zoo.store.base import (
    WEIGHTS,
    Progress,
    StoreBase,
    _counter,
)
from zoo.store.errors import StoreConfigError, StoreRefusedError
from zoo.store.record import (
    HEX64,
)
from zoo.store.transport import SizeMismatch


class WeightsMixin(StoreBase):
    """Weights by sha256, checked like any mirror."""

    def publish_weights(self, path: Path, sha256: str, size: int, *,
                        progress: Progress | None = None) -> bool:
        """Upload the weights file at ``path`` as ``weights/sha256/<sha256>`` unless the store
        has it (same size); True when it was sent. ``sha256`` must be the file's (the weights
        cache's verified entries are); a reader checks it again on every pull."""
        if not HEX64.fullmatch(sha256):
            raise StoreConfigError(f"{sha256[:80]!r} is not a sha256 (64 hex)")
        key = WEIGHTS + sha256
        if self.transport.size(key) == size:
            return False
        step = _counter(progress, f"weights {sha256[:12]}", size)
        self.transport.put(Path(path), key, size, step)
        return True

    def pull_weights(self, sha256: str, dest: Path, *, max_size: int | None = None,
                     progress: Progress | None = None) -> str | None:
        """Download ``weights/sha256/<sha256>`` into ``dest`` and return its sha256, or None
        when the store does not have it (or only a file larger than ``max_size``).

        The store is a mirror here, trusted no more than the card's URLs: the bytes must hash
        to their name, which must be the card's full pin (an 8-hex prefix is not asked for:
        anyone who may write to the store could make bytes that match 32 bits). Raises
        StoreRefusedError when the object's bytes are other than its name (``dest`` is then
        removed), StoreUnavailableError when the store cannot be reached.
        """
        if not HEX64.fullmatch(sha256):
            raise StoreConfigError(f"{sha256[:80]!r} is not a full sha256 (64 hex)")
        key = WEIGHTS + sha256
        size = self.transport.size(key)
        if size is None or (max_size is not None and size > max_size):
            return None
        try:
            got = self.transport.get(key, Path(dest), size,
                                     _counter(progress, f"weights {sha256[:12]}", size))
        except (FileNotFoundError, SizeMismatch):
            Path(dest).unlink(missing_ok=True)
            return None
        if got != sha256:
            Path(dest).unlink(missing_ok=True)
            raise StoreRefusedError(f"store {self.url}: {key}: its bytes hash to {got[:16]}… "
                                    "(corrupted or tampered)", [key])
        return got
