"""Name rules and text limits shared by cards, the registry and the CLI."""

from __future__ import annotations

import re

MODEL_NAME_CLASS = "[a-z0-9_]"  # the characters of a model name (a regex class)
MODEL_NAME_RE = re.compile(rf"^{MODEL_NAME_CLASS}+$")
SHA256_HEX = "[0-9a-f]{64}"  # a sha256 in lowercase hex, for composing patterns
SHA256_RE = re.compile(rf"^{SHA256_HEX}$")
HEX64 = re.compile(SHA256_HEX)  # use with .fullmatch (``$`` would let a trailing newline in)
SIDECAR_SUFFIX = ".manifest.json"  # <artifact>.manifest.json beside every artifact
SUMS_LINE = re.compile(rf"^({SHA256_HEX}) [ *](.+)$")  # a line of SHA256SUMS (sha256sum -c)
SHA256_PREFIX_RE = re.compile(r"^[0-9a-f]{8}$")
#: a builder key a plugin registers with ``zoo_builders``: a name, never an import path
ARCHITECTURE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

MAX_NAME = 100  # model, weights, palette, family, architecture, plugin names
MAX_TEXT = 200  # labels, titles, licences, data set names, output keys
MAX_DESCRIPTION = 4000
MAX_URL = 2048
MAX_SIDE = 8192  # input sizes and resize targets, in pixels
MAX_CLASSES = 10_000
MAX_ITEMS = 64  # links, weights sources, URLs, metrics, named palettes, optional keys
MAX_PARAMS = 10**13
MAX_BYTES = 2**42  # 4 TiB: a weights file size
MAX_VALUE = 1e6  # mean, std, scale divisor, GFLOPs
MAX_MANIFEST_BYTES = 16 << 20  # a sidecar or embedded manifest
MAX_SUMS_BYTES = 16 << 20  # a SHA256SUMS file

# C0/C1 controls (tab and newline kept), DEL, line/paragraph separators and the bidirectional
# overrides that can reorder what a terminal shows ("Trojan Source").
_UNPRINTABLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def printable(text: str) -> str:
    """``text`` with every terminal control character shown as an escape (``\\x1b``), so
    card data printed to a terminal is seen, never obeyed."""
    if text.isprintable():  # no Cc/Cf/Zl/Zp at all: the common case, answered fast
        return text
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


def inside(path: str) -> bool:
    """Whether ``path`` (``/``-separated, from a file someone else wrote) stays inside the
    folder it is relative to: not absolute, no ``..`` part, no backslash, no NUL."""
    return not path.startswith("/") and "\\" not in path and "\x00" not in path and \
        ".." not in path.split("/")
