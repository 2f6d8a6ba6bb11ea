"""Prints to stdout and calls sys.exit(0) when imported."""

import sys

print("BROKEN-EXPORTER: imported")
sys.exit(0)
