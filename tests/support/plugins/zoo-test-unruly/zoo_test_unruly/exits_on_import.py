"""Calls sys.exit(0) when imported: zoo must disable it, not exit 0 with no output."""

import sys

sys.exit(0)
