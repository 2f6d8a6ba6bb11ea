"""Redaction, written once: secrets never reach a printed line, a record or a manifest.

``redact_url`` for a URL that is stored (user info and every query value masked, fragment
dropped); ``redact_text`` for free text that is shown (each URL's user info and the value of
every secret-named parameter masked, other values kept readable). Standard library only.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_QUERY_NAME = re.compile(r"^[A-Za-z0-9_.\-\[\]]{1,64}$")
#: a URL inside free text: scheme://, then anything up to white space or a quote
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,15}://[^\s'\"<>`]+")
#: ``name=value`` pairs whose value is a secret (signed URLs, tokens, passwords), anywhere
_SECRET_PARAM = re.compile(
    r"(?i)(?<![A-Za-z0-9_\-])((?:x-amz-(?:signature|security-token|credential)|x-goog-"
    r"(?:signature|credential)|signature|sig|token|access_token|id_token|refresh_token|"
    r"session_token|security_token|api_key|apikey|secret|secret_key|secret_access_key|"
    r"aws_secret_access_key|client_secret|password|passwd|awsaccesskeyid)\s*=\s*)"
    r"(?!\*\*\*)([^&\s'\",;)\]}]+)")



def redact_url(url: str) -> str:
    """``url`` without secrets: user info becomes ``***@``, every query value ``***``, and
    the fragment is dropped. Safe to log and to write into records and manifests."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(_redact_param(p) for p in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str) -> str:
    """``text`` (an error message, a warning, a table cell) with every secret a URL can carry
    masked: the user info of each URL in it (``s3://user:secret@host`` -> ``s3://***@host``)
    and the value of every secret-named parameter (``X-Amz-Signature=``, ``token=``,
    ``password=`` ..., in a URL's query or on its own). Other query values stay readable."""
    if "=" not in text and "@" not in text and ":" not in text:
        return text  # the common case, answered fast
    text = _URL_IN_TEXT.sub(lambda m: _mask_userinfo(m.group()), text)
    return _SECRET_PARAM.sub(lambda m: m.group(1) + "***", text)


def _mask_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc = rest[:end]
    if "@" not in netloc:
        return url
    return f"{scheme}{sep}***@{netloc.rpartition('@')[2]}{rest[end:]}"


def _redact_param(param: str) -> str:
    name, eq, _value = param.partition("=")
    return f"{name}=***" if eq and _QUERY_NAME.match(name) else "***"
