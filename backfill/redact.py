"""The one place that turns URLs and free text into printable text: keys and passwords never leave it.

Redaction goes by structure, not by substring. A URL is parsed and its secret parts replaced by `***`: the
password and the user beside it, path segments that are keys, the values of secret query parameters; the
scheme, host, port and the other parts stay readable. A known secret (a part of a configured URL) is replaced
only where it stands whole: as a component of a URL, or outside URLs as a whole token of at least
MIN_TOKEN_CHARS characters. So a one-letter password, or a user name that is also a word, leaves the rest of
the text as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

MASK = "***"
MIN_TOKEN_CHARS = 4  # a shorter secret is replaced inside URLs only: outside them it would hit ordinary words

# A path segment, query value or bare user of this shape is a key whatever the provider (hex, base62, uuids).
_KEYISH = re.compile(r"[A-Za-z0-9_\-]{16,}")
# Path segments after one of these are keys (alchemy /v2/<key>, infura /v3/<key>, nodereal /v1/<key>, /rpc/<key>).
KEY_MARKERS = frozenset({"v1", "v2", "v3", "rpc"})
# Query parameters whose values are secrets (names compared lower-case, `-` read as `_`), and name endings.
SECRET_PARAMS = frozenset(
    {
        "key",
        "apikey",
        "api_key",
        "token",
        "access_token",
        "auth",
        "authorization",
        "password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "dkey",
        "project_id",
    }
)
_SECRET_PARAM_ENDINGS = ("key", "token", "secret", "password")
# Hosted RPC providers put the key in the path, sometimes short or after a network name (ankr /eth/<key>,
# quicknode /<token>/, chainstack /<key>): on their hosts every path segment but a marker is hidden.
PROVIDER_DOMAINS = (
    "infura.io",
    "alchemy.com",
    "alchemyapi.io",
    "quiknode.pro",
    "quicknode.com",
    "ankr.com",
    "blastapi.io",
    "p2pify.com",
    "chainstack.com",
    "getblock.io",
    "drpc.org",
    "nodereal.io",
    "chainnodes.org",
    "blockpi.network",
    "tenderly.co",
    "onfinality.io",
    "allthatnode.com",
    "moralis-nodes.com",
    "nownodes.io",
    "1rpc.io",
    "llamarpc.com",
)

# A URL in free text: scheme://…, up to whitespace, quotes or brackets, without trailing punctuation.
_URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\],]+(?<![.:;!?])")
_TOKEN_CHAR = r"A-Za-z0-9_\-"


def _is_provider(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in PROVIDER_DOMAINS)


def _secret_param(name: str) -> bool:
    name = unquote(name).lower().replace("-", "_")
    return name in SECRET_PARAMS or name.endswith(_SECRET_PARAM_ENDINGS)


def _known(value: str, known: frozenset[str]) -> bool:
    return bool(value) and (value in known or unquote(value) in known)


def _redact(parts: SplitResult, known: frozenset[str] = frozenset()) -> tuple[str, list[str], list[str]]:
    """(the URL with its secret parts masked, the secrets masked, the user names masked)."""
    secrets: list[str] = []
    users: list[str] = []
    userinfo, at, hostport = parts.netloc.rpartition("@")
    auth = ""
    if at and userinfo:
        user, colon, password = userinfo.partition(":")
        if colon:  # a password: it and the user beside it are credentials
            auth = f"{MASK}:{MASK}@"
            secrets.append(password)
            users.append(user)
        elif _KEYISH.fullmatch(user) or _known(user, known):  # a key passed as the user (https://<key>@host)
            auth = f"{MASK}@"
            secrets.append(user)
        else:
            auth = f"{user}@"
    provider = _is_provider(parts.hostname or "")
    path, after_marker = [], False
    for seg in parts.path.split("/"):
        marker = seg.lower() in KEY_MARKERS
        if seg and (after_marker or _KEYISH.fullmatch(seg) or _known(seg, known) or (provider and not marker)):
            secrets.append(seg)
            seg = MASK
        after_marker = after_marker or marker
        path.append(seg)
    query = []
    for pair in parts.query.split("&") if parts.query else []:
        name, eq, value = pair.partition("=")
        if eq and value and (_secret_param(name) or _KEYISH.fullmatch(value) or _known(value, known)):
            secrets.append(value)
            value = MASK
        elif not eq and (_KEYISH.fullmatch(name) or _known(name, known)):  # `?<key>`
            secrets.append(name)
            name = MASK
        query.append(f"{name}{eq}{value}")
    fragment = MASK if parts.fragment else ""
    if parts.fragment:
        secrets.append(parts.fragment)
    shown = urlunsplit((parts.scheme, auth + hostport, "/".join(path), "&".join(query), fragment))
    return shown, secrets, users


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:  # e.g. a broken IPv6 host
        return None


def redact_url(url: str, known: Iterable[str] = ()) -> str:
    """`https://user:pw@eth.example.com:8443/v2/KEY?apikey=x&network=main` ->
    `https://***:***@eth.example.com:8443/v2/***?apikey=***&network=main`; `known` secrets are hidden too where
    they are a whole component (user, path segment, query value)."""
    parts = _split(url)
    return "<unparseable url>" if parts is None else _redact(parts, frozenset(known))[0]


def endpoint_label(url: str, index: int) -> str:
    """Short, secret-free name for logs: `eth.example.com#2`."""
    parts = _split(url)
    return f"{(parts.hostname if parts else None) or 'endpoint'}#{index}"


@lru_cache(maxsize=64)
def _secrets_of(configured: tuple[str, ...]) -> tuple[frozenset[str], re.Pattern[str]]:
    """What the configured values hide: (components hidden inside URLs, one pattern for the text). The pattern's
    groups, tried in this order at each place: `whole` a configured URL written out (it may hold a character
    that ends a URL in text early, e.g. a `(` in a password), `url` any URL, `token` a known secret standing
    whole outside URLs. A configured value that is no URL is a bare secret (a password, a key)."""
    in_urls: set[str] = set()
    in_text: set[str] = set()
    whole: list[str] = []
    for value in configured:
        parts = _split(value) if "://" in value else None
        if parts is None:
            in_urls.add(value)
            in_text.add(value)
            continue
        whole.append(value)
        _, secrets, users = _redact(parts)
        for s in secrets:
            in_urls.update({s, unquote(s)})
            in_text.update({s, unquote(s)})
        for u in users:  # a user name is hidden in URLs only: outside them it is as likely an ordinary word
            in_urls.update({u, unquote(u)})
    in_urls.discard("")
    tokens = sorted((s for s in in_text if len(s) >= MIN_TOKEN_CHARS), key=len, reverse=True)
    groups = []
    if whole:
        groups.append("(?P<whole>" + "|".join(re.escape(u) for u in sorted(whole, key=len, reverse=True)) + ")")
    groups.append(f"(?P<url>{_URL_RE.pattern})")
    if tokens:
        groups.append(
            rf"(?<![{_TOKEN_CHAR}])(?P<token>" + "|".join(re.escape(t) for t in tokens) + rf")(?![{_TOKEN_CHAR}])"
        )
    return frozenset(in_urls), re.compile("|".join(groups))


def _rewrite(text: str, secrets: Iterable[str], show_url: Callable[[str, Iterable[str]], str]) -> str:
    """Every URL of the text through `show_url(url, known)`; known secret tokens outside URLs masked."""
    in_urls, pattern = _secrets_of(tuple(s for s in secrets if s))
    return pattern.sub(lambda m: MASK if m.lastgroup == "token" else show_url(m[0], in_urls), text)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Free text (an exception message, a log line) made safe to print: every URL in it redacted by structure
    (`redact_url`, the configured secrets hidden where they are a whole component) and the secrets of the
    configured URLs `secrets` masked where they stand as a whole token outside URLs (never user names, never
    values shorter than MIN_TOKEN_CHARS)."""
    return _rewrite(text, secrets, redact_url)


def url_shown(url: str, known: Iterable[str] = ()) -> str:
    """A URL by scheme and host only (its path and query as `/***`): for text whose secrets may not be known,
    such as another process's log lines, where a key may be a path segment too short to look like one."""
    parts = _split(url)
    if parts is None:
        return "<url>"
    base = redact_url(urlunsplit((parts.scheme, parts.netloc, "", "", "")), known)
    return base + (f"/{MASK}" if parts.path.strip("/") or parts.query else "")


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text made safe to print: known secrets scrubbed, every URL shown by scheme and host only."""
    return _rewrite(text, secrets, url_shown)
