"""The team store: signed, content-addressed artifacts at an fsspec URL (S3, file://, ...).

The API the export pipeline and the CLI use (see docs/store.md)::

    from zoo.store import open_store, store_config

    store = open_store("s3://team-zoo/prod", {"endpoint_url": "https://minio.example"})
    result = store.publish(Path("models"), sign_key=load_signing_key(Path("team.key")))
    hit = store.pull(identity, staging_dir, trusted_keys=[load_public_key(Path("team.pub"))])
    # hit is None on a miss; StoreUnavailableError / StoreRefusedError (both StoreError)
    # when the store cannot be reached or nothing it holds passes verification.

Importing this package is cheap: fsspec, s3fs and cryptography load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zoo.store.config import StoreConfig, store_config
from zoo.store.errors import (
    StoreConfigError,
    StoreError,
    StoreRefusedError,
    StoreUnavailableError,
)

if TYPE_CHECKING:
    from zoo.store.keys import PublicKey, SigningKey, load_public_key, load_signing_key
    from zoo.store.store import Listed, PublishResult, PullResult, Store, VerifyReport, open_store

_LAZY = {
    "open_store": "zoo.store.store", "Store": "zoo.store.store",
    "PublishResult": "zoo.store.store", "PullResult": "zoo.store.store",
    "Listed": "zoo.store.store", "VerifyReport": "zoo.store.store",
    "PublicKey": "zoo.store.keys", "SigningKey": "zoo.store.keys",
    "load_public_key": "zoo.store.keys", "load_signing_key": "zoo.store.keys",
}

__all__ = [
    "Listed", "PublicKey", "PublishResult", "PullResult", "SigningKey", "Store", "StoreConfig",
    "StoreConfigError", "StoreError", "StoreRefusedError", "StoreUnavailableError",
    "VerifyReport", "load_public_key", "load_signing_key", "open_store", "store_config",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zoo.store' has no attribute {name!r}")
