"""JSON-RPC client: one aiohttp session per process, endpoints round-robin with health, tenacity retries.

Per call: pick a usable endpoint (EndpointPool), send, classify the answer (rpc_errors), apply the class's
policy: wait (rate limit: cool that endpoint for the provider's hint), switch (transient: cool it with a
growing penalty, go elsewhere), park (quota), split (raised to the caller, which knows the window) or fail.
Retries are bounded and each one is logged with its attempt number. Requests are counted per endpoint and
per day (the `current_day` context variable set by the worker).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
from collections import Counter
from typing import Any, Callable

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from backfill.endpoints import COMPUTE_UNITS, EndpointPool
from backfill.events import LOG_FILTER_TOPICS
from backfill.native import Scanned, scan as scan_answer
from backfill.redact import endpoint_label
from backfill.rpc_errors import (Fatal, NodeBehind, NoEndpoint, QuotaExhausted, RangeTooLarge, RateLimited, RpcError,
                                 Transient, classify_error, classify_http, policy)

log = logging.getLogger(__name__)

# The day a request is made for (set by the worker around each fetch), for per-day request accounting.
current_day: contextvars.ContextVar[int] = contextvars.ContextVar("current_day", default=-1)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _block_hashes(logs: list[dict[str, Any]] | Scanned) -> dict[int, str]:
    """block number -> lowercased block hash ("" if none) of the blocks an eth_getLogs answer names."""
    if isinstance(logs, Scanned):
        return logs.block_hashes()
    return {int(entry["blockNumber"], 16): (entry.get("blockHash") or "").lower() for entry in logs}


class DayUsage:
    """Requests, errors and compute units attributed to one day."""

    __slots__ = ("requests", "errors", "compute_units", "served")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.compute_units = 0
        self.served: Counter = Counter()  # endpoint label -> eth_getLogs answers accepted


class RpcClient:
    def __init__(self, urls: tuple[str, ...] | list[str], *, timeout_s: float = 30.0, attempts: int = 10,
                 concurrency_per_endpoint: int = 8, max_rps_per_endpoint: float = 0.0, context: str = "",
                 max_wait_s: float = 120.0, labels: list[str] | None = None):
        labels = labels or [endpoint_label(u, i) for i, u in enumerate(urls)]
        self.pool = EndpointPool(list(urls), labels)
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.context = context  # e.g. "worker=3", prefixed to retry log lines
        self.max_wait_s = max_wait_s  # longest wait for a usable endpoint before the call fails
        self._sems = {ep.index: asyncio.Semaphore(concurrency_per_endpoint) for ep in self.pool.endpoints}
        self._min_interval = 1.0 / max_rps_per_endpoint if max_rps_per_endpoint > 0 else 0.0
        self._last_send = {ep.index: 0.0 for ep in self.pool.endpoints}
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self.days: dict[int, DayUsage] = {}
        self.errors_by_class: Counter = Counter()

    async def __aenter__(self) -> "RpcClient":
        connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session:
            await self._session.close()
            self._session = None

    # -- transport ----------------------------------------------------------------------
    async def _throttle(self, index: int) -> None:
        if self._min_interval:
            wait = self._last_send[index] + self._min_interval - time.monotonic()
            self._last_send[index] = max(time.monotonic(), self._last_send[index] + self._min_interval)
            if wait > 0:
                await asyncio.sleep(wait)

    async def _post(self, ep: Any, payload: Any, methods: list[str],
                    scan: Callable[[bytes], Any] | None = None) -> tuple[Any, int, float | None]:
        """Send one request; the parsed answer (or scan's reading of a 200 answer, where it has one)."""
        assert self._session is not None, "use `async with RpcClient(...)`"
        self.pool.sent(ep, methods)
        usage = self.days.setdefault(current_day.get(), DayUsage())
        usage.requests += 1
        usage.compute_units += sum(COMPUTE_UNITS.get(m, 20) for m in methods)
        async with self._sems[ep.index]:
            await self._throttle(ep.index)
            try:
                async with self._session.post(ep.url, data=orjson.dumps(payload),
                                              headers={"Content-Type": "application/json"}) as resp:
                    body = await resp.read()
                    status = resp.status
                    retry_after = _retry_after(resp.headers)
            except asyncio.TimeoutError:
                raise Transient(f"timeout after {self.timeout_s:g}s") from None
            except aiohttp.ClientError as exc:
                raise Transient(f"connection failed: {type(exc).__name__}") from None
        if scan is not None and status == 200:
            scanned = scan(body)
            if scanned is not None:
                return scanned, status, retry_after
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise classify_http(status, body, retry_after) from None
        if isinstance(doc, dict) and "error" in doc and "jsonrpc" not in doc and "id" not in doc:
            raise classify_error(doc if "code" in doc else {"message": str(doc["error"])}, status, retry_after)
        if status != 200 and not (isinstance(doc, dict) and "error" in doc):
            raise classify_http(status, body, retry_after)
        return doc, status, retry_after

    async def _endpoint(self, need_block: int | None) -> Any:
        """A usable endpoint, waiting out cool-downs; NoEndpoint when all are parked or behind for too long."""
        deadline = time.monotonic() + self.max_wait_s
        while True:
            ep = self.pool.pick(need_block)
            if ep is not None:
                return ep
            wait = self.pool.wait_s()
            if wait is None:
                reasons = "; ".join(f"{e.label}: {e.parked_reason}" for e in self.pool.endpoints)
                raise NoEndpoint(f"every endpoint is parked ({reasons})")
            if wait == 0 and need_block is not None:  # usable ones are all behind: look at their heads again
                await self.refresh_heads()
                if self.pool.pick(need_block) is None:
                    wait = 1.0
            if time.monotonic() + wait > deadline:
                behind = ", ".join(f"{e.label} head {e.head}" for e in self.pool.behind(need_block or 0))
                raise NoEndpoint(f"no endpoint can serve block {need_block} within {self.max_wait_s:g}s"
                                 + (f" (behind: {behind})" if behind else ""))
            log.info("%s event=wait_endpoint seconds=%.1f need_block=%s", self.context, wait, need_block)
            await asyncio.sleep(max(wait, 0.05))

    def _failed(self, ep: Any, exc: RpcError) -> None:
        what = policy(exc)
        self.errors_by_class[type(exc).__name__] += 1
        self.days.setdefault(current_day.get(), DayUsage()).errors += 1
        if what == "park":
            self.pool.park(ep, str(exc))
            log.error("%s endpoint=%s event=parked reason=%r for_s=3600", self.context, ep.label, str(exc)[:200])
        elif what == "split":
            pass  # not the endpoint's fault
        elif isinstance(exc, NodeBehind):
            if exc.head is not None:
                self.pool.saw_head(ep, exc.head)
            self.pool.failed(ep, "behind")
        elif what in ("wait", "switch"):
            self.pool.failed(ep, type(exc).__name__, exc.retry_after_s if isinstance(exc, RateLimited) else None)
        exc.endpoint = ep.label  # type: ignore[attr-defined]

    async def _retrying(self, attempt_fn: Any, what: str) -> Any:
        retryable = lambda e: isinstance(e, RpcError) and policy(e) in ("wait", "switch", "park")  # noqa: E731
        async for attempt in AsyncRetrying(retry=retry_if_exception(retryable), stop=stop_after_attempt(self.attempts),
                                           wait=self._wait, reraise=True, before_sleep=self._log_retry(what)):
            with attempt:
                return await attempt_fn()

    def _log_retry(self, what: str) -> Any:
        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception()
            log.warning("%s day=%d event=retry call=%s attempt=%d/%d endpoint=%s policy=%s in_s=%.2f reason=%r",
                        self.context, current_day.get(), what, state.attempt_number, self.attempts,
                        getattr(exc, "endpoint", "-"), policy(exc), state.next_action.sleep if state.next_action else 0,
                        str(exc)[:160])
        return before_sleep

    def _wait(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if self.pool.wait_s() == 0 and isinstance(exc, (RateLimited, QuotaExhausted, NodeBehind)):
            return 0.0  # another endpoint is usable now: switch at once; the failing one is cooling down
        return wait_random_exponential(multiplier=0.1, max=5.0)(state)  # exponential backoff, full jitter

    # -- calls ----------------------------------------------------------------------------
    async def call(self, method: str, params: list[Any] | None = None, *, need_block: int | None = None) -> Any:
        async def once() -> Any:
            ep = await self._endpoint(need_block)
            try:
                doc, status, retry_after = await self._post(
                    ep, {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or []}, [method])
                if isinstance(doc, dict) and "error" in doc:
                    raise classify_error(doc["error"], status, retry_after)
                if not isinstance(doc, dict) or "result" not in doc:
                    raise Transient(f"no result in answer to {method}")
            except RpcError as exc:
                self._failed(ep, exc)
                raise
            self.pool.ok(ep)
            return doc["result"]
        return await self._retrying(once, method)

    async def batch(self, calls: list[tuple[str, list[Any]]], *, need_block: int | None = None) -> list[Any]:
        """Several calls in one HTTP request to one endpoint; answers in call order. A failed item retries all."""
        if not calls:
            return []

        async def once() -> Any:
            ep = await self._endpoint(need_block)
            first = next(self._ids)
            for _ in range(len(calls) - 1):
                next(self._ids)
            payload = [{"jsonrpc": "2.0", "id": first + i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
            try:
                doc, status, retry_after = await self._post(ep, payload, [m for m, _ in calls])
                if isinstance(doc, dict):  # one error for the whole batch
                    raise classify_error(doc.get("error", doc), status, retry_after)
                by_id = {item.get("id"): item for item in doc if isinstance(item, dict)}
                out = []
                for i in range(len(calls)):
                    item = by_id.get(first + i)
                    if item is None:
                        raise Transient("batch answer is missing items")
                    if "error" in item:
                        raise classify_error(item["error"], status, retry_after)
                    out.append(item.get("result"))
            except RpcError as exc:
                self._failed(ep, exc)
                raise
            self.pool.ok(ep)
            return out
        return await self._retrying(once, f"batch[{len(calls)}]")

    # -- methods ------------------------------------------------------------------------
    async def chain_id(self) -> int:
        return int(await self.call("eth_chainId"), 16)

    async def block_number(self) -> int:
        return int(await self.call("eth_blockNumber"), 16)

    async def refresh_heads(self) -> dict[str, int | None]:
        """eth_blockNumber on every usable endpoint (one attempt each): what each one can serve."""
        assert self._session is not None
        out: dict[str, int | None] = {}
        for ep in self.pool.endpoints:
            if not ep.available(self.pool.clock()):
                out[ep.label] = ep.head
                continue
            try:
                doc, status, _ = await self._post(ep, {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber",
                                                       "params": []}, ["eth_blockNumber"])
                self.pool.saw_head(ep, int(doc["result"], 16))
            except (RpcError, KeyError, TypeError, ValueError):
                pass
            out[ep.label] = ep.head
        return out

    def highest_head(self) -> int | None:
        heads = [ep.head for ep in self.pool.endpoints if ep.head is not None]
        return max(heads) if heads else None

    async def _verify_complete(self, ep: Any, logs: list[dict[str, Any]] | Scanned, first: int, last: int) -> None:
        """Near the head, an answer may be short with no error (a lagging node behind a load balancer). Check
        [first, last] against the same endpoint's headers: block hashes must match the logs', and a block
        whose logsBloom admits a transfer topic but that came back without logs is asked again by hash."""
        from backfill.bloom import may_contain_any

        blocks = list(range(first, last + 1))
        calls = [{"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber", "params": [hex(b), False]}
                 for i, b in enumerate(blocks)]
        headers: dict[int, Any] = {}
        for i in range(0, len(calls), 200):
            doc, status, retry_after = await self._post(ep, calls[i:i + 200], ["eth_getBlockByNumber"] * len(calls[i:i + 200]))
            if isinstance(doc, dict):
                raise classify_error(doc.get("error", doc), status, retry_after)
            for item in doc:
                if "error" in item:
                    raise classify_error(item["error"], status, retry_after)
                if not item.get("result"):
                    raise NodeBehind(f"block {blocks[item['id']]} unknown to the node")
                headers[blocks[item["id"]]] = item["result"]
        seen = {bn: block_hash for bn, block_hash in _block_hashes(logs).items() if first <= bn <= last}
        for bn, block_hash in seen.items():
            if block_hash and headers[bn]["hash"].lower() != block_hash:
                raise NodeBehind(f"block {bn}: logs and header disagree on the hash (reorg or mixed nodes)")
        suspicious = [bn for bn in blocks if bn not in seen and may_contain_any(headers[bn].get("logsBloom", ""),
                                                                                LOG_FILTER_TOPICS[0])]
        if not suspicious:
            return
        recheck = [{"jsonrpc": "2.0", "id": i, "method": "eth_getLogs",
                    "params": [{"blockHash": headers[bn]["hash"], "topics": LOG_FILTER_TOPICS}]}
                   for i, bn in enumerate(suspicious)]
        doc, status, retry_after = await self._post(ep, recheck, ["eth_getLogs"] * len(recheck))
        if isinstance(doc, dict):
            raise classify_error(doc.get("error", doc), status, retry_after)
        for item in doc:
            if "error" in item:
                raise NodeBehind(f"block {suspicious[item['id']]}: {item['error'].get('message', '')}"[:200])
            if item.get("result"):
                raise NodeBehind(f"the answer missed the logs of block {suspicious[item['id']]} (short answer)")

    async def get_logs(self, from_block: int, to_block: int, *, guard: bool = False,
                       verify_from: int | None = None, scan: bool = False) -> list[dict[str, Any]] | Scanned:
        """Transfer-topic logs of [from_block, to_block].

        scan=True: a plain answer is read by the compiled scanner (backfill/native.py) and comes back as
        Scanned; errors, guarded calls and anything the scanner leaves are parsed with orjson as before.

        guard=True (near the head): eth_blockNumber rides in the same batch and an answer from a node whose head
        is below to_block is refused (NodeBehind); blocks from verify_from on are checked against the same
        node's headers (see _verify_complete). A refused answer is retried on another endpoint."""
        span = to_block - from_block + 1
        flt = {"fromBlock": hex(from_block), "toBlock": hex(to_block), "topics": LOG_FILTER_TOPICS}

        async def once() -> list[dict[str, Any]] | Scanned:
            ep = await self._endpoint(to_block if guard else None)
            cap = ep.refused_blocks
            if cap is not None and span >= cap:  # known cap: split without spending a request
                raise RangeTooLarge(f"{ep.label} refuses ranges of {cap} blocks", suggested=None)
            methods = ["eth_blockNumber", "eth_getLogs"] if guard else ["eth_getLogs"]
            payload: Any = [{"jsonrpc": "2.0", "id": next(self._ids), "method": m,
                             "params": [] if m == "eth_blockNumber" else [flt]} for m in methods]
            try:
                doc, status, retry_after = await self._post(ep, payload if guard else payload[0], methods,
                                                            scan_answer if scan else None)
                if isinstance(doc, Scanned) and (doc.batch is not None) != guard:
                    doc = orjson.loads(doc.body)  # not the shape asked for: judged below like any answer
                if isinstance(doc, Scanned):
                    if not guard:
                        return self._answered(ep, span, doc)
                    by_id = {text: result for text, result in doc.batch}
                    head_hex = by_id.get(str(payload[0]["id"]))
                    logs = doc if by_id.get(str(payload[1]["id"]), "") is None else None
                else:
                    items = doc if isinstance(doc, list) else [doc]
                    if isinstance(doc, dict) and guard:
                        raise classify_error(doc.get("error", doc), status, retry_after)
                    for item in items:
                        if isinstance(item, dict) and "error" in item:
                            raise classify_error(item["error"], status, retry_after)
                    if guard:
                        by_id = {item.get("id"): item.get("result") for item in items if isinstance(item, dict)}
                        head_hex, logs = by_id.get(payload[0]["id"]), by_id.get(payload[1]["id"])
                    else:
                        logs = items[0].get("result") if items and isinstance(items[0], dict) else None
                if guard:
                    if head_hex is None:
                        raise Transient("batch answer is missing eth_blockNumber")
                    head = int(head_hex, 16)
                    self.pool.saw_head(ep, head)
                    if head < to_block:
                        raise NodeBehind(f"node head {head} is below block {to_block}", head=head)
                if not isinstance(logs, (list, Scanned)):
                    raise Transient(f"eth_getLogs answered {type(logs).__name__}, not a list")
                if guard and verify_from is not None and verify_from <= to_block:
                    await self._verify_complete(ep, logs, max(from_block, verify_from), to_block)
            except RangeTooLarge as exc:
                self.pool.refused_range(ep, span)
                self._failed(ep, exc)
                raise
            except RpcError as exc:
                self._failed(ep, exc)
                raise
            return self._answered(ep, span, logs)
        return await self._retrying(once, f"eth_getLogs[{from_block}-{to_block}]")

    def _answered(self, ep: Any, span: int, logs: Any) -> Any:
        """Book an accepted eth_getLogs answer for its endpoint and day."""
        self.pool.ok(ep)
        self.pool.accepted_range(ep, span)
        self.days.setdefault(current_day.get(), DayUsage()).served[ep.label] += 1
        return logs

    async def headers(self, blocks: list[int], batch_size: int = 200) -> dict[int, tuple[str, int]]:
        """block -> (hash, timestamp), fetched in JSON-RPC batches."""
        out: dict[int, tuple[str, int]] = {}
        for i in range(0, len(blocks), batch_size):
            chunk = blocks[i:i + batch_size]
            for attempt in range(self.attempts):
                results = await self.batch([("eth_getBlockByNumber", [hex(b), False]) for b in chunk],
                                           need_block=max(chunk))
                missing = [b for b, blk in zip(chunk, results) if not blk]
                if not missing:
                    break
                log.warning("%s event=retry call=headers attempt=%d reason='blocks %s not found (node behind?)'",
                            self.context, attempt + 1, missing[:3])
                await asyncio.sleep(min(5.0, 0.2 * 2 ** attempt))
            else:
                raise NodeBehind(f"blocks {missing[:3]} not found on any endpoint")
            for b, blk in zip(chunk, results):
                out[b] = (blk["hash"].lower(), int(blk["timestamp"], 16))
        return out

    def usage(self) -> list[dict]:
        return self.pool.snapshot()


async def probe_endpoints(urls: tuple[str, ...], timeout_s: float = 5.0) -> dict[str, int | str]:
    """eth_chainId on every endpoint, once, fast: label -> chain id, or the error text."""
    out: dict[str, int | str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        for i, url in enumerate(urls):
            label = endpoint_label(url, i)
            try:
                async with session.post(url, data=orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId",
                                                                "params": []}),
                                        headers={"Content-Type": "application/json"}) as resp:
                    doc = orjson.loads(await resp.read())
                out[label] = int(doc["result"], 16)
            except aiohttp.ClientConnectorError as exc:
                out[label] = f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}".lower()
            except asyncio.TimeoutError:
                out[label] = f"no answer within {timeout_s:.0f}s"
            except aiohttp.ClientResponseError as exc:
                out[label] = f"HTTP {exc.status}"
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                out[label] = "not a JSON-RPC answer to eth_chainId"
            except aiohttp.ClientError as exc:
                out[label] = type(exc).__name__
    return out


__all__ = ["RpcClient", "probe_endpoints", "current_day", "Fatal", "Transient", "RateLimited", "NodeBehind"]
