"""The site tests' browser fixture (tests/site/browser.py)."""

from tests.site.browser import browser

__all__ = ["browser"]
