"""The team store's command-line options, at the CLI's edge.

``add_store_options(parser)`` adds ``--store URL``, ``--store-option KEY=VALUE``,
``--no-store``, ``--publish``, ``--sign KEY``, ``--trusted-key PUB`` and ``--require-signed``;
``store_from_args(args)`` and ``custody_from_args(args, store)`` turn them into
:class:`zoo.store.config.StoreConfig` and :class:`zoo.export.custody.Custody` objects, so
nothing below the CLI sees argparse.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.store.config import STORE_ENV

if TYPE_CHECKING:
    from zoo.export.custody import Custody
    from zoo.store.config import StoreConfig


def add_store_options(parser: argparse.ArgumentParser, *, publish: bool = True,
                      sign: bool = True, no_store: bool = True, trusted: bool = True,
                      require: bool = True, publish_help: str | None = None) -> None:
    """Add the team-store options to ``parser`` (``publish``/``sign``/``no_store``/``trusted``/
    ``require`` False leave those out, for commands where they mean nothing; ``publish_help``
    says what ``--publish`` sends, where that is not an artifact)."""
    g = parser.add_argument_group("team store")
    g.add_argument("--store", metavar="URL", default=None,
                   help="team store: s3://bucket/prefix, file:///shared/zoo or any fsspec URL "
                   f"(env {STORE_ENV})")
    g.add_argument("--store-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option for the store's file system, e.g. endpoint_url=https://... or "
                   "client_kwargs.region_name=eu-west-1 (repeatable)")
    if no_store:
        g.add_argument("--no-store", action="store_true",
                       help=f"do not use the team store (ignore {STORE_ENV})")
    if publish:
        g.add_argument("--publish", action="store_true",
                       help=publish_help or "publish to the store: the artifact after a local "
                       "export, and the weights it came from (without --format: the weights "
                       "alone)")
    if sign:
        g.add_argument("--sign", type=Path, metavar="KEY",
                       help="sign what is published with this Ed25519 private key (PEM)")
    if not trusted:
        return
    g.add_argument("--trusted-key", action="append", type=Path, default=[], metavar="PUB",
                   help="accept only artifacts signed by this Ed25519 public key (PEM; "
                   "repeatable; env ZOO_TRUSTED_KEYS, separated by "
                   f"{os.pathsep!r}); cached artifacts must be built here or signed by it too")
    if not require:
        return
    g.add_argument("--require-signed", action="store_true", default=None,
                   help="install only artifacts signed by a trusted key: never export locally, "
                   "never serve an unsigned cache entry (env ZOO_REQUIRE_SIGNED=1; for app "
                   "builds and CI jobs that consume the team store)")


def store_from_args(args: argparse.Namespace, *, required: bool = False,
                    signatures: bool = True) -> StoreConfig | None:
    """:func:`zoo.store.config.store_config` with the values of the parsed options."""
    from zoo.store.config import store_config

    trusted = list(getattr(args, "trusted_key", None) or []) \
        if hasattr(args, "trusted_key") else None
    return store_config(
        getattr(args, "store", None), options=list(getattr(args, "store_option", None) or []),
        no_store=bool(getattr(args, "no_store", False)),
        publish=bool(getattr(args, "publish", False)), sign=getattr(args, "sign", None),
        trusted_keys=trusted, offline=getattr(args, "offline", None), required=required,
        signatures=signatures)


def custody_from_args(args: argparse.Namespace, store: StoreConfig | None) -> Custody:
    """:func:`zoo.store.config.custody_for` with the values of the parsed options."""
    from zoo.store.config import custody_for

    return custody_for(store, trusted_keys=list(getattr(args, "trusted_key", None) or []),
                       require_signed=bool(getattr(args, "require_signed", None)))
