"""The one place that turns URLs into printable text: keys and passwords never leave it."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# Path segments or query values that look like API keys (long hex / base62 / uuid-ish tokens).
_KEYISH = re.compile(r"^[A-Za-z0-9_\-]{16,}$")


def redact_url(url: str) -> str:
    """`https://user:pw@eth.example.com/v2/abcdef0123456789abcd?key=x` -> `https://***@eth.example.com/v2/***?***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    if port:
        host = f"{host}:{port}"
    auth = "***@" if (parts.username or parts.password) else ""
    path = "/".join("***" if _KEYISH.match(seg) else seg for seg in parts.path.split("/"))
    query = "?***" if parts.query else ""
    scheme = f"{parts.scheme}://" if parts.scheme else ""
    return f"{scheme}{auth}{host}{path}{query}"


def endpoint_label(url: str, index: int) -> str:
    """Short, secret-free name for logs: `eth.example.com#2`."""
    try:
        host = urlsplit(url).hostname or "endpoint"
    except ValueError:
        host = "endpoint"
    return f"{host}#{index}"


def scrub(text: str, secrets: list[str]) -> str:
    """Remove every known secret (whole URLs and their key parts) from free text, e.g. an exception message."""
    for url in secrets:
        if not url:
            continue
        text = text.replace(url, redact_url(url))
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        for secret in (parts.password, parts.username, parts.query):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        for seg in parts.path.split("/"):
            if _KEYISH.match(seg):
                text = text.replace(seg, "***")
    return text
