"""JSON-RPC 2.0 over HTTP as the RPC client (backfill/chain/client.py) speaks it: the envelopes it sends and
how it reads what comes back. Pure, no I/O.

- request envelopes: one call, or a batch of them, each with its own id;
- an answer body: JSON or not; an error object inside its envelope or without one (a bare {"code", "message"},
  a proxy's {"error": "text"}); a non-200 status without a JSON-RPC error; each classified as the provider's
  error (backfill.chain.provider_errors), and the rate-limit refusals an answer carries counted;
- batch answers matched to their calls by id: items missing, a one-item answer refusing the whole batch
  (geth), an 'Invalid Request' to a batch of valid calls (the batch refused for its size);
- the answers to eth_getLogs alone and to the lag guard's batch (eth_blockNumber beside eth_getLogs), read
  by a reader of their bytes (backfill/chain/answers.py: the compiled scanner, the audit's engine) or by orjson.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson

from backfill.chain.answers import ReadAnswer
from backfill.chain.provider_errors import (
    BatchTooLarge,
    Fatal,
    RateLimited,
    RpcError,
    Transient,
    classify_error,
    classify_http,
)


def request(rid: int, method: str, params: list[Any]) -> dict[str, Any]:
    """One call's envelope (a batch is a list of them, ids distinct)."""
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


def retry_after(headers: Any) -> float | None:
    """The Retry-After header in seconds, None when absent or not a number."""
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def read(body: bytes, status: int, retry_after: float | None, scan: Callable[[bytes], Any] | None) -> Any:
    """An answer body: scan's reading of a 200 answer where it has one, else the parsed JSON; raises the error
    of an answer that is not JSON, of an error object without its envelope, of a non-200 without an error."""
    if scan is not None and status == 200:
        scanned = scan(body)
        if scanned is not None:
            return scanned
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise classify_http(status, body, retry_after) from None
    if isinstance(doc, dict) and "error" in doc and "jsonrpc" not in doc and "id" not in doc:
        raise classify_error(doc if "code" in doc else {"message": str(doc["error"])}, status, retry_after)
    if isinstance(doc, dict) and "code" in doc and "message" in doc and not {"result", "error", "jsonrpc"} & doc.keys():
        raise classify_error(doc, status, retry_after)  # a bare error object, no envelope (QuickNode's -32007)
    if status != 200 and not (isinstance(doc, (dict, list)) and has_error(doc)):
        raise classify_http(status, body, retry_after)
    return doc


def has_error(doc: Any) -> bool:
    if isinstance(doc, dict):
        return "error" in doc
    return any(isinstance(item, dict) and "error" in item for item in doc)


def error_of(doc: Any) -> Any:
    """The error a parsed answer carries, in its envelope or bare ({"code", ...}); None when it carries none."""
    return doc.get("error", doc if "code" in doc else None) if isinstance(doc, dict) else None


def limit_answer(
    doc: Any, status: int, retry_after: float | None, calls: int, partial: bool
) -> tuple[RateLimited | None, int]:
    """A rate-limit refusal in a parsed answer, and how many calls it refused (None, 0 when there is none).
    With partial=True a batch with only some calls refused is not one: the caller keeps the others."""
    if isinstance(doc, dict) and "error" in doc:
        exc = classify_error(doc["error"], status, retry_after)
        return (exc, calls) if isinstance(exc, RateLimited) else (None, 0)
    if isinstance(doc, list):
        refused = [
            exc
            for item in doc
            if isinstance(item, dict) and "error" in item
            for exc in [classify_error(item["error"], status, retry_after)]
            if isinstance(exc, RateLimited)
        ]
        if refused and (not partial or len(refused) == len(doc) == 1):
            return refused[0], len(refused)
    return None, 0


def result_of(doc: Any, status: int, retry_after: float | None, method: str) -> Any:
    """The result of a single call's answer, or the error it carries."""
    if isinstance(doc, dict) and "error" in doc:
        raise classify_error(doc["error"], status, retry_after)
    if not isinstance(doc, dict) or "result" not in doc:
        raise Transient(f"no result in answer to {method}")
    return doc["result"]


def batch_error(error: Any, status: int, retry_after: float | None, calls: int) -> RpcError:
    """The error of an answer that refuses a whole batch. An 'Invalid Request' (-32600) to a batch of valid
    calls is the endpoint refusing the batch itself (its size, or batches at all): smaller batches."""
    exc = classify_error(error, status, retry_after)
    if isinstance(exc, Fatal) and isinstance(error, dict) and error.get("code") == -32600 and calls > 1:
        return BatchTooLarge(str(exc), code=-32600, http_status=status)
    return exc


def batch_results(doc: Any, ids: dict[int, int], status: int, retry_after: float | None) -> tuple[dict[int, Any], int]:
    """A batch answer matched to its calls (request id -> the call's index): (index -> result of every call it
    served, how many calls it refused for the rate: those are sent again). Any other error item is raised."""
    if isinstance(doc, dict):  # one error for the whole batch
        raise batch_error(doc.get("error", doc), status, retry_after, len(ids))
    by_id = {item.get("id"): item for item in doc if isinstance(item, dict)}
    out: dict[int, Any] = {}
    limited = 0
    for rid, i in ids.items():
        item = by_id.get(rid)
        if item is None:
            if len(by_id) == 1 and len(ids) > 1:  # geth: a one-item answer carrying the first id
                only = next(iter(by_id.values()))
                if "error" in only:
                    raise batch_error(only["error"], status, retry_after, len(ids))
            raise Transient("batch answer is missing items")
        if "error" in item:
            exc = classify_error(item["error"], status, retry_after)
            if isinstance(exc, RateLimited):
                limited += 1  # sent again with the rest, when the pace allows
                continue
            raise exc
        out[i] = item.get("result")
    return out, limited


def logs_answer(doc: Any, status: int, retry_after: float | None) -> Any:
    """The logs of the answer to a single eth_getLogs: a ReadAnswer where a reader took it, else the result."""
    if isinstance(doc, ReadAnswer) and doc.batch is not None:
        doc = orjson.loads(doc.body)  # not the shape asked for: judged below like any answer
    if isinstance(doc, ReadAnswer):
        return doc
    if isinstance(doc, list):
        raise Transient("a batch answer to a single eth_getLogs")
    return result_of(doc, status, retry_after, "eth_getLogs")


def guarded_answer(doc: Any, ids: tuple[int, int], status: int, retry_after: float | None) -> tuple[Any, Any]:
    """(eth_blockNumber's result, the logs) of the answer to the lag guard's batch, whose ids are
    (eth_blockNumber's, eth_getLogs'): the logs as a ReadAnswer where a reader took them, None where the answer
    has none; an error that refuses the batch or either call is raised."""
    if isinstance(doc, ReadAnswer) and doc.batch is None:
        doc = orjson.loads(doc.body)  # not the shape asked for: judged below like any answer
    if isinstance(doc, ReadAnswer):
        assert doc.batch is not None  # (an answer without its batch was parsed above)
        by_text = {text: result for text, result in doc.batch}
        head_hex = by_text.get(str(ids[0]))
        logs: Any = doc if by_text.get(str(ids[1]), "") is None else None
    else:
        if isinstance(doc, dict) or (isinstance(doc, list) and len(doc) == 1):
            error = doc.get("error", doc) if isinstance(doc, dict) else doc[0].get("error")
            if error is not None:
                raise batch_error(error, status, retry_after, 2)
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            if isinstance(item, dict) and "error" in item:
                raise classify_error(item["error"], status, retry_after)
        by_id: dict[Any, Any] = {item.get("id"): item.get("result") for item in items if isinstance(item, dict)}
        head_hex, logs = by_id.get(ids[0]), by_id.get(ids[1])
    if head_hex is None:
        raise Transient("batch answer is missing eth_blockNumber")
    return head_hex, logs
