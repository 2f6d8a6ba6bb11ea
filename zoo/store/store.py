"""The team store: publish, pull, list and audit artifacts at an fsspec URL.

Layout under the store URL (nothing else is read; nothing is ever rewritten)::

    objects/sha256/<hex>                 every file, named by its sha256 (content-addressed)
    records/<identity>/<hex>.json        one record per publish, named by its own sha256
    weights/sha256/<hex>                 model weights, named by their sha256: a mirror of
                                         the cards' weights URLs, checked like any mirror
    index/                               snapshots of records/ and a journal of publishes
                                         (zoo.store.index): how readers list a big store
    tmp/                                 file:// stores only: half-written files before rename

A publish uploads the objects the store lacks, then writes the record, last: a reader lists
``records/<identity>/`` and so never sees an artifact whose objects are not all there; a
killed publish leaves only objects, which no record names (``zoo store verify`` lists them as
unreferenced). Records are immutable and uniquely named, so concurrent publishers never lose
each other's work. The index (``index/``) is only added to: snapshot heads and parts are named
by their own sha256, journal entries by time and record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zoo.store.audit import AuditMixin
from zoo.store.base import (
    OBJECT_KEY,
    OBJECTS,
    RECORD_KEY,
    RECORDS,
    WEIGHTS,
    WEIGHTS_KEY,
    Listed,
    Progress,
    PublishResult,
    PullResult,
    VerifyReport,
)
from zoo.store.mirror import WeightsMixin
from zoo.store.publishing import PublishMixin
from zoo.store.pulling import PullMixin
from zoo.store.transport import open_filesystem

__all__ = ["OBJECTS", "OBJECT_KEY", "RECORDS", "RECORD_KEY", "WEIGHTS", "WEIGHTS_KEY", "Listed",
           "Progress", "PublishResult", "PullResult", "Store", "VerifyReport", "open_store"]


class Store(PublishMixin, PullMixin, AuditMixin, WeightsMixin):
    """A store at one URL. Build it with :func:`open_store`."""


def open_store(url: str | os.PathLike[str], options: dict[str, Any] | None = None, *,
               attempts: int | None = None, backoff: float | None = None,
               part_size: int | None = None, record_cache: Path | bool | None = True) -> Store:
    """The store at ``url`` (``s3://bucket/prefix``, ``file:///path``, a plain path, or any
    fsspec URL). ``options`` go to the fsspec file system (for S3: ``endpoint_url``, ``key``,
    ``secret``, ``anon``, ``client_kwargs``, ...). Nothing is contacted until first use.

    ``attempts``/``backoff`` bound the retries of transient failures; ``record_cache`` keeps
    verified record files under ``ZOO_HOME/store/records`` (True) or a given folder.
    """
    from zoo.store import transport as tr

    url = os.fspath(url)
    fs, root = open_filesystem(url, options or {})
    kwargs: dict[str, Any] = {}
    if attempts is not None:
        kwargs["attempts"] = attempts
    if backoff is not None:
        kwargs["backoff"] = backoff
    if part_size is not None:
        kwargs["part_size"] = part_size
        kwargs["multipart_threshold"] = 2 * part_size
    transport = tr.Transport(url, fs, root, **kwargs)
    cache: Path | None
    if record_cache is True:
        from zoo.paths import zoo_home

        cache = zoo_home() / "store" / "records"
    else:
        cache = record_cache or None
    return Store(transport, record_cache=cache)
