"""What a failed store call means, and how long to wait before the next try. Pure: no sockets, no clock.

Every store call of every process goes through one policy (`backfill.store.client.Store`), which asks `classify`:

  outage         the store cannot be reached or stopped answering: connection refused or reset, a timeout,
                 an HTTP 5xx without a ClickHouse code (a load balancer in front of a restarting or waking
                 server), network and keeper errors. Wait, reconnect, try again.
  backpressure   the store answers but asks us to slow down: TOO_MANY_PARTS, memory limits, too many
                 simultaneous queries, HTTP 429. Wait longer, try again: the caller slows down.
  None           our own mistake (bad SQL, unknown table, wrong password): raise at once.

`maybe_executed` says whether the server may have carried the request out although we got no answer (the
connection dropped mid-request): only idempotent calls are sent again then. Inserts are: a re-sent batch
carries the same `_version`, and ReplacingMergeTree keeps one row per key after FINAL.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OUTAGE, BACKPRESSURE = "outage", "backpressure"

# ClickHouse error codes (src/Common/ErrorCodes.cpp) that mean "slow down", not "you are wrong".
BACKPRESSURE_CODES = {
    173: "CANNOT_ALLOCATE_MEMORY",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    241: "MEMORY_LIMIT_EXCEEDED",
    252: "TOO_MANY_PARTS",
    439: "CANNOT_SCHEDULE_TASK",
}
# ... and those that mean the server (or its cluster) is not fully there right now.
OUTAGE_CODES = {
    159: "TIMEOUT_EXCEEDED",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    225: "NO_ZOOKEEPER",
    236: "ABORTED",
    242: "TABLE_IS_READ_ONLY",
    319: "UNKNOWN_STATUS_OF_INSERT",
    394: "QUERY_WAS_CANCELLED",
    999: "KEEPER_EXCEPTION",
}
# the server may have done it before it failed (a shutdown aborts and cancels queries in flight)
EXECUTED_UNKNOWN_CODES = {159, 209, 210, 236, 319, 394, 999}

# urllib3 / OS errors raised before a byte of the request left: nothing can have been executed.
_NOT_SENT = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "NameResolutionError",
    "ConnectionRefusedError",
    "ClosedPoolError",
    "EmptyPoolError",
)
_TRANSPORT = (
    "ProtocolError",
    "ReadTimeoutError",
    "RemoteDisconnected",
    "ConnectionResetError",
    "BrokenPipeError",
    "IncompleteRead",
    "ConnectionAbortedError",
    "TimeoutError",
    "socket.timeout",
    "_IncompleteResponseError",
    "StreamFailureError",
    "ConnectionError",
    "MaxRetryError",
)


@dataclass(frozen=True)
class StoreFault:
    kind: str  # OUTAGE or BACKPRESSURE
    reason: str  # one short line for the log: "connection refused", "TOO_MANY_PARTS", "HTTP 503"
    maybe_executed: bool


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what caused it, and urllib3's MaxRetryError.reason, outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen) or len(seen) > 12:
            continue
        seen.append(e)
        reason = getattr(e, "reason", None)
        todo.extend([e.__cause__, e.__context__, reason if isinstance(reason, BaseException) else None])
    return seen


def _http_status(message: str) -> int | None:
    marker = "received HTTP status "
    at = message.find(marker)
    if at < 0:
        return None
    digits = message[at + len(marker) : at + len(marker) + 3]
    return int(digits) if digits.isdigit() else None


def classify(exc: BaseException) -> StoreFault | None:
    """The policy class of a failed store call, or None when retrying cannot help."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and type(exc).__module__.startswith("clickhouse_connect"):
        if code in BACKPRESSURE_CODES:
            return StoreFault(BACKPRESSURE, BACKPRESSURE_CODES[code], False)
        if code in OUTAGE_CODES:
            return StoreFault(OUTAGE, OUTAGE_CODES[code], code in EXECUTED_UNKNOWN_CODES)
        return None
    if type(exc).__name__ == "StoreGone":  # the embedded server is not running (yet)
        return StoreFault(OUTAGE, "embedded store server not running", False)
    status = _http_status(str(exc))
    if status is not None:
        if status == 429:
            return StoreFault(BACKPRESSURE, "HTTP 429", False)
        if status >= 500:  # a proxy or load balancer answered for a server that is not there (or is waking)
            return StoreFault(OUTAGE, f"HTTP {status}", status in (502, 504))
        return None
    names = [type(e).__name__ for e in _chain(exc)]
    if any(n in _NOT_SENT for n in names):
        return StoreFault(OUTAGE, "connection refused", False)
    if any(n in ("ReadTimeoutError", "TimeoutError", "timeout") for n in names):
        return StoreFault(OUTAGE, "timed out", True)
    if any(n in _TRANSPORT for n in names) or any(isinstance(e, ConnectionError) for e in _chain(exc)):
        return StoreFault(OUTAGE, "connection lost mid-request", True)
    text = str(exc)
    if "executing HTTP request" in text or "Failed to read response data" in text:
        return StoreFault(OUTAGE, "connection lost mid-request", True)
    return None


def retry_delay_s(fault: StoreFault, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before try `attempt + 1` (attempt >= 1): exponential with full jitter over a floor. An outage
    is probed often (0.25 s doubling to 5 s) so the run resumes soon after the store is back; back-pressure
    waits longer (0.5 s doubling to 10 s) so the merges can catch up, without idling long once they have."""
    base, cap = (0.25, 5.0) if fault.kind == OUTAGE else (0.5, 10.0)
    top = min(cap, base * 2 ** min(attempt - 1, 16))
    draw = (rng or random).random()
    return round(top / 2 + draw * top / 2, 3)


def may_retry(fault: StoreFault | None, idempotent: bool) -> bool:
    """Send it again? Never for our own mistakes; for a call that is not idempotent, only when the server
    surely did not carry it out."""
    return fault is not None and (idempotent or not fault.maybe_executed)
