"""Provider answers -> what to do. Pure: (HTTP status, body) in, a policy-bearing error out.

Texts come from the catalogue of real provider behaviour; each class maps to one policy:
RateLimited -> wait and retry; RangeTooLarge -> split the range (use the suggestion when given);
Transient -> retry with backoff, maybe on another endpoint; Fatal -> fail the call.
"""

from __future__ import annotations

import re
from typing import Any

from backfill.errors import RpcError


class Transient(RpcError):
    """5xx, timeouts, truncated or non-JSON bodies, lagging nodes: retry, preferably elsewhere."""


class RateLimited(Transient):
    def __init__(self, message: str, retry_after_s: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class RangeTooLarge(RpcError):
    """The node refuses the block range or the result size; split the range."""

    def __init__(self, message: str, suggested: tuple[int, int] | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.suggested = suggested


class NodeBehind(Transient):
    """The node's head is below the blocks asked for, or its answer is short: never trust it; go elsewhere."""

    def __init__(self, message: str, head: int | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.head = head


class QuotaExhausted(RpcError):
    """402 / monthly or daily cap / disabled key: this endpoint is done for a while; park it, use the others."""


class Fatal(RpcError):
    """Will not get better by retrying: bad params, method missing."""


class NoEndpoint(RpcError):
    """Every endpoint is parked (quota) or none can serve the blocks asked for."""


# One table: each error class -> what the caller does. The RPC client applies wait / switch / park with
# bounded retries; the worker splits; fail ends the window (a day failure, FAILED at the limit).
POLICY: dict[type, str] = {
    RateLimited: "wait",
    NodeBehind: "switch",
    Transient: "switch",
    QuotaExhausted: "park",
    RangeTooLarge: "split",
    Fatal: "fail",
    NoEndpoint: "fail",
}


def policy(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        if cls in POLICY:
            return POLICY[cls]
    return "fail"


_RANGE_TEXT = re.compile(
    r"(more than \d+ results|block range|range too large|too many logs|max results|response size|"
    r"exceeds? (the )?(max|limit)|is limited to|blocks distance|response too large|too wide|Requested range exceeds)",
    re.IGNORECASE,
)
_SUGGESTED_HEX = re.compile(r"\[\s*(0x[0-9a-fA-F]+)\s*,\s*(0x[0-9a-fA-F]+)\s*\]")
_SUGGESTED_DEC = re.compile(r"retry with the range (\d+)-(\d+)")
_RATE_TEXT = re.compile(r"(rate limit|too many requests|exceeded its compute units|request rate exceeded|"
                        r"requests per second|/second request limit|credits limited|capacity)", re.IGNORECASE)
_QUOTA_TEXT = re.compile(r"(monthly capacity|daily credit limit|payment required|api key disabled|"
                         r"tenant disabled|upgrade your plan)", re.IGNORECASE)
_TRANSIENT_TEXT = re.compile(r"(header not found|timeout|timed out|canceled|unknown block|internal error)", re.IGNORECASE)


def suggested_range(message: str) -> tuple[int, int] | None:
    m = _SUGGESTED_HEX.search(message)
    if m:
        return int(m.group(1), 16), int(m.group(2), 16)
    m = _SUGGESTED_DEC.search(message)
    if m:
        return int(m.group(1)), int(m.group(2))
    return None


def classify_error(error: Any, http_status: int = 200, retry_after_s: float | None = None) -> RpcError:
    """A JSON-RPC `error` object (or bare error body) -> the exception that carries the policy."""
    if not isinstance(error, dict):
        return Transient(f"malformed error object: {str(error)[:200]}", http_status=http_status)
    code = error.get("code")
    message = str(error.get("message") or error.get("error") or "")
    details = str(error.get("details") or "")
    text = f"code={code} {message} {details}".strip()[:300]
    if http_status == 402 or code == 402 or _QUOTA_TEXT.search(message) or _QUOTA_TEXT.search(details):
        return QuotaExhausted(text, code=code, http_status=http_status)
    if http_status == 429 or code in (429, -32007, -32012) or _RATE_TEXT.search(message):
        data = error.get("data") if isinstance(error.get("data"), dict) else {}
        backoff = (data.get("rate") or {}).get("backoff_seconds") if isinstance(data.get("rate"), dict) else None
        return RateLimited(text, retry_after_s if retry_after_s is not None else backoff, code=code, http_status=http_status)
    if _RANGE_TEXT.search(message) or code in (-32614, -32047):
        return RangeTooLarge(text, suggested_range(message), code=code, http_status=http_status)
    if http_status in (401, 403):
        return QuotaExhausted(text, code=code, http_status=http_status)
    if code == -32601:
        return Fatal(text, code=code, http_status=http_status)
    if http_status >= 500 or code in (-32603, -32000, -32002, -32003, -32005, -32016) or _TRANSIENT_TEXT.search(message):
        return Transient(text, code=code, http_status=http_status)
    return Fatal(text, code=code, http_status=http_status)


def classify_http(http_status: int, body: bytes, retry_after_s: float | None = None) -> RpcError:
    """A response that is not a usable JSON-RPC envelope (HTML 502 page, 413, plain text)."""
    snippet = body[:120].decode("utf-8", "replace").replace("\n", " ").strip()
    if http_status == 429:
        return RateLimited(f"HTTP 429 {snippet}", retry_after_s, http_status=http_status)
    if http_status == 413:
        return RangeTooLarge(f"HTTP 413 {snippet}", http_status=http_status)
    if http_status in (401, 402, 403):
        return QuotaExhausted(f"HTTP {http_status} {snippet}", http_status=http_status)
    if snippet.startswith("{") and _QUOTA_TEXT.search(snippet):
        return QuotaExhausted(f"HTTP {http_status} {snippet}", http_status=http_status)
    return Transient(f"HTTP {http_status} {snippet}", http_status=http_status)
