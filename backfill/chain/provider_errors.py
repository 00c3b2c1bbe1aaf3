"""Provider answers -> what to do. Pure: (HTTP status, body) in, a policy-bearing error out.

Texts come from the catalogue of real provider behaviour (and tests/support/provider_texts.py); each class maps to
one policy: RateLimited -> wait and retry; RangeTooLarge -> split the range (use the suggestion when given,
never go above a stated limit); BatchTooLarge -> send the calls again in smaller batches (single calls when
batches are refused); Transient -> retry with backoff, maybe on another endpoint; Fatal -> fail the call.

How an error object is read, in order (the first that fits wins):

1. quota texts / 402 -> QuotaExhausted; a 429 or a rate-limit text -> RateLimited (a rate limit may come with
   -32005, which EIP-1474 also gives to size limits, so the text decides before the code);
2. a text about the batch (geth's "batch too large", besu's "... exceeds max batch size", "batch requests are
   not supported") -> BatchTooLarge;
3. a node behind the blocks asked for ("block range extends beyond current head block") -> NodeBehind;
4. a timeout -> Transient. A timeout is not a range complaint even when it says "consider reducing your block
   range": the same range may pass on a quieter node, and the caller shrinks after repeated timeouts itself;
5. a range or size complaint -> RangeTooLarge, whatever the code (-32000, -32005, -32012, -32602, -32600,
   -32614, -32047, ...) and HTTP status (200, 400, 413, 500): by a known wording, by a limit stated in the
   message or in `error.data`, or by the -32614 / -32047 codes;
6. then by code: 429 / -32007 / -32012 -> RateLimited, 401/403 -> QuotaExhausted, -32601 -> Fatal;
7. an unknown text that still reads like a size complaint (a noun such as range / blocks / logs / results /
   response with limit / exceed / too large / too many / maximum) -> RangeTooLarge with no limit, so the
   caller splits rather than fails. A bare "limit exceeded" is not enough: EIP-1474's -32005 "Limit exceeded"
   is also what rate limiters answer;
8. 5xx, -32000 / -32005 / -32603 ... -> Transient; anything else -> Fatal.
"""

from __future__ import annotations

import re
from typing import Any

from backfill.errors import RpcError


class Transient(RpcError):
    """5xx, timeouts, truncated or non-JSON bodies, lagging nodes: retry, preferably elsewhere."""


class DamagedAnswer(Transient):
    """An answer no node can give (a non-hex digit, a short hash, a fifth topic, a block outside the range asked
    for; backfill.chain.answer_check): damaged on the way. Never written; asked again elsewhere, and the endpoint
    that sent it cools down like any failing one."""


class RateLimited(Transient):
    def __init__(self, message: str, retry_after_s: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class RangeTooLarge(RpcError):
    """The node refuses the block range or the result size; split the range.

    suggested: a (from, to) range the provider proposed, if any.
    max_blocks: the widest range the provider says it serves, as it states it (providers differ on whether
    that counts to-from or to-from+1, so stay below it). max_results: the most logs it says one answer may
    carry. Either is None when the answer does not say; both can be set (Alchemy states both)."""

    def __init__(
        self,
        message: str,
        suggested: tuple[int, int] | None = None,
        max_blocks: int | None = None,
        max_results: int | None = None,
        **kw: Any,
    ):
        super().__init__(message, **kw)
        self.suggested = suggested
        self.max_blocks = max_blocks
        self.max_results = max_results


class BatchTooLarge(RpcError):
    """The endpoint refuses the batch itself: too many calls in it (max_items, when stated), or batches at all
    (max_items=1: send single calls). Send the calls again in smaller batches."""

    def __init__(self, message: str, max_items: int | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.max_items = max_items


class NodeBehind(Transient):
    """The node's head is below the blocks asked for, or its answer is short: never trust it; go elsewhere."""

    def __init__(self, message: str, head: int | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.head = head


class QuotaExhausted(RpcError):
    """402 / monthly or daily cap / disabled key: this endpoint is done for a while; park it, use others."""


class Fatal(RpcError):
    """Will not get better by retrying: bad params, method missing."""


class NoEndpoint(RpcError):
    """Every endpoint is parked (quota) or none can serve the blocks asked for."""


# One table: each error class -> what the caller does. The RPC client applies wait / switch / park / shrink
# with bounded retries; the worker splits; fail ends the window (a day failure, FAILED at the limit).
POLICY: dict[type, str] = {
    RateLimited: "wait",
    NodeBehind: "switch",
    Transient: "switch",
    QuotaExhausted: "park",
    RangeTooLarge: "split",
    BatchTooLarge: "shrink",
    Fatal: "fail",
    NoEndpoint: "fail",
}


def policy(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        if cls in POLICY:
            return POLICY[cls]
    return "fail"


# -- texts ---------------------------------------------------------------------------------------------------
_I = re.IGNORECASE

# Wordings that are a range or size complaint whatever their code.
_RANGE_TEXT = re.compile(
    r"more than \d[\d,]* (results|logs)|block range|range (is )?too (large|wide|big)|ranges? over \d|"
    r"too many logs|max results|response size|exceeds? (the )?(max|limit)|is limited to|limited to (an? )?\d|"
    r"blocks distance|response (is )?too (large|big)|too wide|requested range exceeds|"
    r"exceeded max allowed range|"
    r"range threshold exceeded|requested too many blocks|requested blocks is|logs matched by query|"
    r"at most \d[\d,]* blocks|smaller than size|max is \d+k? blocks|query spans|range allowed for your plan",
    _I,
)
# ... unless the complaint is about something a smaller range does not fix.
_NOT_RANGE = re.compile(r"addresses or topics|execution reverted|gas limit|intrinsic gas|nonce|insufficient funds", _I)
# Step 7: a size noun together with a size qualifier.
_SIZE_NOUN = re.compile(r"\b(ranges?|blocks|logs|results|response|span)\b", _I)
_SIZE_WORD = re.compile(r"limit|exceed|too (large|many|big|wide)|max(imum)?\b|greater than|at most", _I)

_RATE_TEXT = re.compile(
    r"(rate limit|too many requests|exceeded its compute units|request rate exceeded|"
    r"requests per second|/second request limit|credits limited|capacity)",
    _I,
)
_QUOTA_TEXT = re.compile(
    r"(monthly capacity|daily credit limit|payment required|api key disabled|"
    r"tenant disabled|upgrade your plan)",
    _I,
)
_TIMEOUT_TEXT = re.compile(r"timeout|timed out|canceled due to", _I)
_TRANSIENT_TEXT = re.compile(r"(header not found|unknown block|internal error)", _I)
_BEHIND_TEXT = re.compile(r"beyond (the )?current head", _I)
_HEAD_NUMBER = re.compile(r"\bhead:? (\d+)", _I)

# A refusal of the batch itself (not any text with "batch" in it: zkSync speaks of "L1 batch" numbers).
_BATCH_TEXT = re.compile(
    r"\bbatch(ed|ing)?\b.{0,60}?(too (large|big)|limit|exceed|max|not supported|disabled|not allowed|"
    r"unsupported|size)|(too many|number of requests|unsupported methods?)\b.{0,60}?\bbatch|"
    r"(does not|doesn't|do not) support batch",
    _I,
)
_BATCH_OFF = re.compile(
    r"batch(ed|ing)? (requests? |calls? )?(are |is )?(not supported|disabled|not allowed|unsupported)|"
    r"(does not|doesn't|do not) support batch|unsupported methods?\b.* in batch",
    _I,
)

# A number as providers write it: 10000, 10,000, 10_000, 2K / 10k.
_N = r"(?P<n>\d{1,3}(?:,\d{3})+|\d+(?:_\d{3})*)(?:\s?(?P<k>[kK])\b)?"


def _patterns(*texts: str) -> list[re.Pattern[str]]:
    return [re.compile(t.replace("{N}", _N), _I) for t in texts]


# Each names the provider's limit right before or after a wording that says which limit it is. Request ranges
# ("from 0 to 27842567", "range 1000000 exceeds ...", "(1 to 16777216)", "(49999 > 2000)") are never the
# group.
_BLOCK_LIMITS = _patterns(
    r"up to an? {N} blocks? range",  # Alchemy, Aurora
    r"limited to (?:an? )?{N}(?: blocks?)? range",  # QuickNode, Blast, Base, 1RPC, BlockPI
    r"max(?:imum)? range:? {N}",  # Cloudflare
    r"maximum is set to {N}",  # Avalanche
    r"maximum allowed number of requested blocks is {N}",  # thirdweb
    r"max(?:imum)? block range:? (?:is )?{N}",  # geth, PublicNode, Tron, reth, Hyperliquid
    r"blocks distance:? {N}",  # Ankr
    r"\brange \d[\d,_]* (?:exceeds|is bigger than) (?:the )?(?:range )?limit (?:of )?{N}",  # Infura, thirdweb
    r"block range exceeds server limit\b[^\d]{0,40}?{N}",  # erigon
    r"limit the query to at most {N} blocks",  # Coinbase
    r"block range greater than {N} max",  # op proxyd (Swell, Ink, alt.technology)
    r"block range exceeds {N}",  # Somnia
    r"block range \d[\d,_]* exceeds maximum of {N}",
    r"max is {N} blocks",  # Merkle
    r"must be smaller than size {N}",  # Harmony (GetLogs)
    r"too wide \(maximum {N}\)",  # Frontier (Moonbeam, Moonriver, Astar)
    r"allowed for your plan \(\d[\d,_]* > {N}\)",  # Blast (paid), through eRPC
    r"maximum allowed is {N} blocks",  # Sei
    r"ranges over {N} blocks",  # dRPC
    r"but only {N} (?:blocks )?are allowed",  # Arbitrum public node
)
_RESULT_LIMITS = _patterns(
    r"more than {N} (?:results|logs)",  # Infura, zkSync, zkEVM, thirdweb, HyperRPC
    r"max(?:imum)? results:? {N}",  # reth, llamarpc, dRPC, Ankr
    r"cap of {N} logs",  # Alchemy
    r"max logs per response is {N}",  # Nethermind
    r"too many logs,? narrow your filter:? {N}",  # erigon
    r"(?:logs|results)\b[\w ]{0,30}? exceeds? (?:the )?limit of {N}",  # Arbitrum
)
_BATCH_LIMITS = _patterns(
    r"batch limit (?:of )?{N}",  # erigon: "batch limit 100 exceeded: 142 requests given"
    r"batch size (?:exceeds? )?(?:the )?limit (?:of )?{N}",  # NodeReal: "batch size exceed limit 500"
    r"exceeds max(?:imum)? (?:batch size )?(?:of )?{N}",  # Hedera: "Batch request amount 150 exceeds max 100"
    r"max(?:imum)? (?:batch )?(?:size |limit )(?:is |of )?{N}",  # jsonrpsee data: "Exceeded max limit of 100"
    r"less than:? {N}",
)
# Keys of `error.data` dicts that hold a limit (Infura's {"from","limit","to"}; eRPC's details).
_DATA_RESULT_KEYS = ("limit", "maxResults", "max_results", "maxLogs", "max_logs")
_DATA_BLOCK_KEYS = ("maxAllowedRange", "maxBlockRange", "max_block_range", "maxRange", "blockRangeLimit")

_SUGGESTED_HEX = re.compile(r"\[\s*(0x[0-9a-fA-F]+)\s*,\s*(0x[0-9a-fA-F]+)\s*\]")
_SUGGESTED_DEC = [
    re.compile(r"(?:retry|try)(?: with)?(?: the| this)?(?: block)? range:?\s*(\d+)\s*-\s*(\d+)", _I),
    re.compile(r"(?:should work|try with this block range|block range)\W{0,3}\[\s*(\d+)\s*,\s*(\d+)\s*\]", _I),
]


def _number(m: re.Match[str]) -> int:
    value = int(m.group("n").replace(",", "").replace("_", ""))
    return value * 1000 if m.group("k") else value


def _first(patterns: list[re.Pattern[str]], text: str) -> int | None:
    for p in patterns:
        m = p.search(text)
        if m:
            return _number(m)
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str):
        s = value.strip()
        try:
            n = int(s, 16) if s.lower().startswith("0x") else int(s.replace(",", ""))
        except ValueError:
            return None
        return n if n > 0 else None
    return None


def _strings(data: Any, depth: int = 0) -> list[str]:
    """Every string in `data` (a str, or the values of nested dicts and lists), for reasons carried there."""
    if depth > 4:
        return []
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [s for v in data.values() for s in _strings(v, depth + 1)]
    if isinstance(data, list):
        return [s for v in data[:20] for s in _strings(v, depth + 1)]
    return []


def _dicts(data: Any, depth: int = 0) -> list[dict[str, Any]]:
    if depth > 4 or not isinstance(data, dict):
        return []
    return [data, *(d for v in data.values() for d in _dicts(v, depth + 1))]


_HEX_ONLY = re.compile(r"0x[0-9a-fA-F]*")


def _data_text(data: Any) -> str:
    """The reasons carried in `error.data` (its strings, bare hex numbers left out), for matching and logs."""
    return " ".join(s for s in _strings(data) if not _HEX_ONLY.fullmatch(s.strip()))[:2000]


def stated_limit(message: str, data: Any = None) -> tuple[int | None, int | None]:
    """(max_blocks, max_results) the provider states in its message or in `error.data`, each None if unstated.

    "eth_getLogs is limited to a 10,000 range" -> (10000, None); "query returned more than 10000 results" ->
    (None, 10000); Alchemy's "up to a 2K block range ... any block range with a cap of 10K logs" ->
    (2000, 10000); "range 1000000 exceeds limit of 10000" -> (10000, None). Suggested ranges
    ([0x1a30dfd, 0x1a30ff0], "retry with the range 23879634-23879696") and the request's own bounds are never
    read as a limit; neither is a byte cap ("response size should not greater than 2097152 bytes")."""
    texts = [message or "", *_strings(data)]
    max_blocks = max_results = None
    for text in texts:
        if max_blocks is None:
            max_blocks = _first(_BLOCK_LIMITS, text)
        if max_results is None:
            max_results = _first(_RESULT_LIMITS, text)
    about_size = any(_SIZE_NOUN.search(t) or _RANGE_TEXT.search(t) for t in texts)
    for d in _dicts(data) if about_size else []:  # a bare {"limit": N} of some other complaint is no cap
        if max_results is None:
            max_results = next((n for k in _DATA_RESULT_KEYS if (n := _int(d.get(k))) is not None), None)
        if max_blocks is None:
            max_blocks = next((n for k in _DATA_BLOCK_KEYS if (n := _int(d.get(k))) is not None), None)
    return max_blocks, max_results


def suggested_range(message: str, data: Any = None) -> tuple[int, int] | None:
    """The (from, to) range the provider proposes: "[0x.., 0x..]" (Alchemy, Infura, zkSync, thirdweb), "retry
    with the range a-b" (reth, llamarpc, dRPC), "this block range should work: [a, b]" in decimal, or Infura's
    data {"from": "0x..", "to": "0x.."}; in the message or in a string carried in `error.data`."""
    for text in [message or "", *_strings(data)]:
        m = _SUGGESTED_HEX.search(text)
        if m:
            pair = int(m.group(1), 16), int(m.group(2), 16)
        else:
            m = next((m for p in _SUGGESTED_DEC if (m := p.search(text))), None)
            if not m:
                continue
            pair = int(m.group(1)), int(m.group(2))
        if pair[0] <= pair[1]:
            return pair
    for d in _dicts(data):
        lo, hi = d.get("from"), d.get("to")
        if isinstance(lo, str) and isinstance(hi, str) and lo[:2].lower() == hi[:2].lower() == "0x":
            a, b = _int(lo), _int(hi)
            if a is not None and b is not None and a <= b:
                return a, b
    return None


def batch_limit(message: str, data: Any = None) -> int | None:
    """How many calls a batch refusal says one batch may hold: 1 when batches are refused outright, the
    stated number ("batch limit 100 exceeded: 142 requests given" -> 100), else None."""
    texts = [message or "", *_strings(data)]
    if any(_BATCH_OFF.search(t) for t in texts):
        return 1
    for text in texts:
        n = _first(_BATCH_LIMITS, text)
        if n is not None:
            return n
    return None


def _looks_like_size(text: str) -> bool:
    return bool(_SIZE_NOUN.search(text) and _SIZE_WORD.search(text)) and not _NOT_RANGE.search(text)


def _range_error(
    text: str, message: str, data: Any, code: Any, http_status: int, limits: tuple[int | None, int | None]
) -> RangeTooLarge:
    return RangeTooLarge(
        text,
        suggested_range(message, data),
        max_blocks=limits[0],
        max_results=limits[1],
        code=code,
        http_status=http_status,
    )


def classify_error(error: Any, http_status: int = 200, retry_after_s: float | None = None) -> RpcError:
    """A JSON-RPC `error` object (or bare error body) -> the exception that carries the policy."""
    if not isinstance(error, dict):
        return Transient(f"malformed error object: {str(error)[:200]}", http_status=http_status)
    code = error.get("code")
    message = str(error.get("message") or error.get("error") or "")
    details = str(error.get("details") or "")
    data = error.get("data")
    reason = _data_text(data)
    said = f"{message} {details}".strip()
    full = f"{said} {reason}".strip()  # everything the provider said, data included
    text = f"code={code} {said}"
    if reason and reason not in said:
        text = f"{text} data={reason[:150]}"
    text = text.strip()[:300]
    kw = {"code": code, "http_status": http_status}

    # 1. quota, then rate limits by status or text
    if http_status == 402 or code == 402 or _QUOTA_TEXT.search(said):
        return QuotaExhausted(text, **kw)
    if http_status == 429 or _RATE_TEXT.search(message):
        return _rate_limited(text, data, retry_after_s, kw)
    # 2. the batch itself
    if _BATCH_TEXT.search(full):
        return BatchTooLarge(text, max_items=batch_limit(said, data), **kw)
    # 3. a node behind the blocks asked for
    if _BEHIND_TEXT.search(full):
        m = _HEAD_NUMBER.search(full)
        return NodeBehind(text, head=int(m.group(1)) if m else None, **kw)
    # 4. timeouts stay transient (see the module's docstring)
    if _TIMEOUT_TEXT.search(full) or code == -32016:
        return Transient(text, **kw)
    # 5. range and size complaints, whatever the code
    limits = stated_limit(said, data)
    if not _NOT_RANGE.search(full) and (_RANGE_TEXT.search(full) or code in (-32614, -32047) or any(limits)):
        return _range_error(text, said, data, code, http_status, limits)
    # 6. by code
    if code in (429, -32007, -32012):
        return _rate_limited(text, data, retry_after_s, kw)
    if http_status in (401, 403):
        return QuotaExhausted(text, **kw)
    if code == -32601:
        return Fatal(text, **kw)
    if _TRANSIENT_TEXT.search(full):
        return Transient(text, **kw)
    # 7. an unknown wording that still reads like a size complaint
    if _looks_like_size(full):
        return _range_error(text, said, data, code, http_status, limits)
    # 8. the rest
    if http_status >= 500 or code in (-32603, -32000, -32002, -32003, -32005):
        return Transient(text, **kw)
    return Fatal(text, **kw)


def _rate_limited(text: str, data: Any, retry_after_s: float | None, kw: dict[str, Any]) -> RateLimited:
    rate = data.get("rate") if isinstance(data, dict) else None
    backoff = rate.get("backoff_seconds") if isinstance(rate, dict) else None
    return RateLimited(text, retry_after_s if retry_after_s is not None else backoff, **kw)


def classify_http(http_status: int, body: bytes, retry_after_s: float | None = None) -> RpcError:
    """A response that is not a usable JSON-RPC envelope (HTML 502 page, 413, plain text)."""
    whole = body[:2000].decode("utf-8", "replace")
    snippet = whole[:120].replace("\n", " ").strip()
    text = f"HTTP {http_status} {snippet}"
    if http_status == 429:
        return RateLimited(text, retry_after_s, http_status=http_status)
    if _BATCH_TEXT.search(whole):  # "batch requests limit exceeded" (413), "... are disabled" (400)
        return BatchTooLarge(text, max_items=batch_limit(whole), http_status=http_status)
    if http_status == 413 or (_RANGE_TEXT.search(whole) and not _NOT_RANGE.search(whole)):
        max_blocks, max_results = stated_limit(whole)
        return RangeTooLarge(
            text, suggested_range(whole), max_blocks=max_blocks, max_results=max_results, http_status=http_status
        )
    if http_status in (401, 402, 403):
        return QuotaExhausted(text, http_status=http_status)
    if snippet.startswith("{") and _QUOTA_TEXT.search(snippet):
        return QuotaExhausted(text, http_status=http_status)
    return Transient(text, http_status=http_status)
