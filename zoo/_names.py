"""Name rules shared by cards, the registry and the CLI."""

from __future__ import annotations

import re

MODEL_NAME_RE = re.compile(r"^[a-z0-9_]+$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
SHA256_PREFIX_RE = re.compile(r"^[0-9a-f]{8}$")
