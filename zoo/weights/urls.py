"""URL rules for downloads: which URLs and redirects are allowed, pins, and redaction.

Every hop of a download (the URL the user typed, a mirror's URL, each redirect) passes
:func:`check_url_allowed`: https, or plain http to a loopback host (or anywhere with
``--allow-http``); a redirect may not leave http(s) or go from https down to http
(:func:`follow_redirect`). URLs are written into records, manifests and messages only as
:func:`redact_url` leaves them: no user info (``user:pass@``) and no query values
(``?token=``, ``X-Amz-Signature=``), which is where secrets live in URLs. Records that need
to recognise a URL again key it by :func:`url_digest` of the full URL. Free text that may hold
URLs or signed-request parameters (exception texts from botocore, s3fs, aiohttp) passes
:func:`redact_text` before it is printed. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from urllib.parse import urljoin, urlsplit

from zoo._core.redact import redact_text, redact_url  # noqa: F401 (their public home)
from zoo.errors import DownloadError, UsageError

MAX_REDIRECTS = 10
_HEX_PIN = re.compile(r"^([0-9a-fA-F]{64}|[0-9a-fA-F]{8})$")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_digest(url: str) -> str:
    """sha256 of the full URL (secrets included), for keying records without storing it."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as a download URL (syntax, scheme, host), or None."""
    if _CONTROL.search(url):
        return "the URL contains spaces or control characters"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return "only http(s) URLs are supported"
    if not parts.hostname:
        return "the URL names no host"
    return None


def check_url_allowed(url: str, allow_http: bool = False) -> None:
    """Refuse anything but https, or http to a loopback host, unless ``allow_http``.

    Raises DownloadError naming the (redacted) URL and the way out.
    """
    problem = url_problem(url)
    if problem is not None:
        raise DownloadError(f"cannot download {redact_url(url)!r}: {problem}")
    parts = urlsplit(url)
    if parts.scheme.lower() == "http" and not (allow_http or is_loopback(parts.hostname)):
        raise DownloadError(
            f"refusing plain http:// URL {redact_url(url)}: its bytes can be altered in transit; "
            "use https, or pass --allow-http if you trust the network"
        )


def follow_redirect(current: str, location: str, allow_http: bool = False) -> str:
    """The absolute URL a redirect from ``current`` to ``location`` leads to, if allowed.

    The target must pass :func:`check_url_allowed` like the URL the user typed, may not
    leave http(s), and may not go from https down to plain http (even with ``allow_http``).
    """
    try:
        target = urljoin(current, location.strip())
        scheme = urlsplit(target).scheme.lower()
    except ValueError:
        raise DownloadError(
            f"{redact_url(current)} redirected to an invalid URL ({location[:80]!r}); refused"
        ) from None
    if scheme not in ("http", "https"):
        raise DownloadError(
            f"{redact_url(current)} redirected to a {scheme or 'relative'}: URL "
            f"({redact_url(target)}); refused: downloads follow http(s) redirects only"
        )
    if scheme == "http" and urlsplit(current).scheme.lower() == "https":
        raise DownloadError(
            f"{redact_url(current)} redirected from https to plain http ({redact_url(target)}); "
            "refused: that would drop the transport's protection"
        )
    try:
        check_url_allowed(target, allow_http)
    except DownloadError as exc:
        raise DownloadError(f"{redact_url(current)} redirected to a refused URL: {exc}") from None
    return target


def parse_pin(fragment: str, spec: str) -> str:
    """The hash of a ``sha256=HEX`` fragment (64 hex, or the 8-hex prefix), lowercased.

    Raises UsageError (exit 2) for anything else, naming ``spec``.
    """
    name, eq, value = fragment.partition("=")
    if name.lower() != "sha256" or not eq or not _HEX_PIN.match(value):
        raise UsageError(
            f"--weights {redact_url(spec) if '://' in spec else spec}: the fragment must be "
            "#sha256=HEX (64 hex digits, or the 8-hex prefix)"
        )
    return value.lower()


def split_path_pin(spec: str) -> tuple[str, str | None]:
    """``PATH#sha256=HEX`` -> (PATH, HEX); a path whose ``#`` starts no ``sha256=`` pin is
    returned whole. A malformed ``#sha256=`` pin is a UsageError."""
    base, sep, fragment = spec.rpartition("#")
    if not sep or not fragment.lower().startswith("sha256"):
        return spec, None
    return base, parse_pin(fragment, spec)


def hash_matches(digest: str, expected: str | None) -> bool:
    """True when ``expected`` (full sha256 or a prefix of it) agrees with ``digest``."""
    return expected is None or digest.startswith(expected.lower())


def size_limit(size: int | None, exact: bool = True) -> int | None:
    """Most bytes accepted for a file published as ``size`` (approximate sizes get 5% + 1 MiB)."""
    if size is None:
        return None
    return size if exact else size + size // 20 + (1 << 20)
