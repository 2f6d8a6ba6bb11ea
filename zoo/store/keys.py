"""Ed25519 keys as the ``openssl`` CLI writes them, and signatures over record statements.

Make a key pair::

    openssl genpkey -algorithm ed25519 -out team.key          # private, PKCS#8 PEM
    openssl pkey -in team.key -pubout -out team.pub           # public, SubjectPublicKeyInfo PEM

A key's *fingerprint* is the sha256 of its 32 raw public-key bytes, in hex; the same value as
``openssl pkey -pubin -in team.pub -outform DER | tail -c 32 | sha256sum``. Signing and
verification are plain Ed25519 (RFC 8032) through ``cryptography``; what is signed is the
record's canonical statement (see :mod:`zoo.store.record`), prefixed by a domain tag.
An encrypted private key is read with the passphrase in ``ZOO_KEY_PASSPHRASE``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.store.errors import StoreConfigError

TRUSTED_KEYS_ENV = "ZOO_TRUSTED_KEYS"
PASSPHRASE_ENV = "ZOO_KEY_PASSPHRASE"
SCHEME = "ed25519"
MAX_KEY_FILE = 64 * 1024
MAKE_KEY = ("make one with `openssl genpkey -algorithm ed25519 -out KEY` and "
            "`openssl pkey -in KEY -pubout -out KEY.pub`")


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key: 32 raw bytes, and where it came from (for messages)."""

    raw: bytes
    source: str = ""

    @property
    def fingerprint(self) -> str:
        """sha256 of the raw key, 64 hex."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def short(self) -> str:
        """``ed25519:`` and the first 16 hex of the fingerprint, for tables and messages."""
        return f"{SCHEME}:{self.fingerprint[:16]}"

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` is this key's Ed25519 signature of ``message``."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def b64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key loaded from a PEM file."""

    private: Any  # cryptography's Ed25519PrivateKey
    public: PublicKey
    source: str

    def sign(self, message: bytes) -> bytes:
        return bytes(self.private.sign(message))


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_KEY_FILE:
            raise StoreConfigError(f"{what} {path}: {size} bytes is too large for a PEM key")
        return path.read_bytes()
    except FileNotFoundError:
        raise StoreConfigError(f"{what} {path}: no such file; {MAKE_KEY}") from None
    except IsADirectoryError:
        raise StoreConfigError(f"{what} {path}: is a folder, not a PEM key file") from None
    except OSError as exc:
        raise StoreConfigError(f"{what} {path}: cannot read it: {exc.strerror or exc}") from None


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def load_signing_key(path: Path) -> SigningKey:
    """The Ed25519 private key in PEM file ``path`` (StoreConfigError saying why not)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path, "--sign")
    if b"PRIVATE KEY-----" not in data:
        hint = " (that is a public key; sign with the private one)" if \
            b"PUBLIC KEY-----" in data else ""
        raise StoreConfigError(f"--sign {path}: not a PEM private key{hint}; {MAKE_KEY}")
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(
            data, password=passphrase.encode() if passphrase else None)
    except TypeError:
        raise StoreConfigError(
            f"--sign {path}: the key is encrypted; set {PASSPHRASE_ENV} to its passphrase"
            if not passphrase else f"--sign {path}: the key is not encrypted; unset "
            f"{PASSPHRASE_ENV}") from None
    except ValueError as exc:
        raise StoreConfigError(f"--sign {path}: cannot read the key "
                               f"({str(exc).splitlines()[0]}); {MAKE_KEY}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise StoreConfigError(f"--sign {path}: a {type(key).__name__.removesuffix('PrivateKey')}"
                               f" key; zoo signs with Ed25519 keys: {MAKE_KEY}")
    return SigningKey(key, PublicKey(_raw_public(key.public_key()), str(path)), str(path))


def load_public_key(path: Path) -> PublicKey:
    """The Ed25519 public key in PEM file ``path`` (StoreConfigError saying why not)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(path, "--trusted-key")
    if b"PRIVATE KEY-----" in data:
        raise StoreConfigError(
            f"--trusted-key {path}: that is a private key; trust its public half, written by "
            f"`openssl pkey -in {path} -pubout -out {path}.pub`")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise StoreConfigError(f"--trusted-key {path}: not a PEM public key "
                               f"({str(exc).splitlines()[0]}); {MAKE_KEY}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise StoreConfigError(f"--trusted-key {path}: not an Ed25519 key; {MAKE_KEY}")
    return PublicKey(_raw_public(key), str(path))


def load_trusted_keys(paths: list[Path] | tuple[Path, ...]) -> list[PublicKey]:
    """Load every trusted public key; duplicates (same fingerprint) are kept once."""
    keys: dict[str, PublicKey] = {}
    for path in paths:
        key = load_public_key(Path(path))
        keys.setdefault(key.fingerprint, key)
    return list(keys.values())


def trusted_key_paths_from_env() -> list[Path]:
    """``ZOO_TRUSTED_KEYS``: public-key files separated by the OS path separator."""
    value = os.environ.get(TRUSTED_KEYS_ENV, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]
