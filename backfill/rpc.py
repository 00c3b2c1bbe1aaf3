"""JSON-RPC pool: one aiohttp session per process, endpoints round-robin, tenacity retries.

Policies come from rpc_errors.classify_*; range splitting is the caller's (it knows the window).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from backfill.events import LOG_FILTER_TOPICS
from backfill.redact import endpoint_label
from backfill.rpc_errors import Fatal, RateLimited, Transient, classify_error, classify_http

log = logging.getLogger(__name__)


class Endpoint:
    def __init__(self, url: str, index: int):
        self.url = url
        self.label = endpoint_label(url, index)
        self.requests = 0
        self.errors = 0


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class RpcClient:
    def __init__(self, urls: tuple[str, ...] | list[str], *, timeout_s: float = 30.0, attempts: int = 8,
                 concurrency: int = 16, context: str = ""):
        self.endpoints = [Endpoint(u, i) for i, u in enumerate(urls)]
        self._cycle = itertools.cycle(self.endpoints)
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.context = context  # e.g. "worker=3", prefixed to retry log lines
        self._sem = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> "RpcClient":
        connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s), json_serialize=lambda o: orjson.dumps(o).decode())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session:
            await self._session.close()
            self._session = None

    # -- transport ----------------------------------------------------------------------
    async def _post(self, endpoint: Endpoint, payload: Any) -> Any:
        assert self._session is not None, "use `async with RpcClient(...)`"
        endpoint.requests += 1
        try:
            async with self._sem, self._session.post(
                    endpoint.url, data=orjson.dumps(payload), headers={"Content-Type": "application/json"}) as resp:
                body = await resp.read()
                status = resp.status
                retry_after = _retry_after(resp.headers)
        except asyncio.TimeoutError:
            raise Transient(f"timeout after {self.timeout_s}s") from None
        except aiohttp.ClientError as exc:
            raise Transient(f"connection failed: {type(exc).__name__}") from None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise classify_http(status, body, retry_after) from None
        if status != 200 and not (isinstance(doc, (dict, list))):
            raise classify_http(status, body, retry_after)
        if isinstance(doc, dict) and "error" in doc and "jsonrpc" not in doc and "id" not in doc:
            raise classify_error(doc, status, retry_after)  # a bare error object without envelope
        if status != 200 and isinstance(doc, dict) and "error" not in doc:
            raise classify_http(status, body, retry_after)
        return doc, status, retry_after

    async def _once(self, method: str, params: list[Any]) -> Any:
        endpoint = next(self._cycle)
        try:
            doc, status, retry_after = await self._post(
                endpoint, {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params})
            if isinstance(doc, dict) and "error" in doc:
                raise classify_error(doc["error"], status, retry_after)
            if not isinstance(doc, dict) or "result" not in doc:
                raise Transient(f"no result in answer to {method}")
            return doc["result"]
        except Transient as exc:
            endpoint.errors += 1
            exc.endpoint = endpoint.label  # type: ignore[attr-defined]
            raise

    async def _with_retries(self, fn: Any, what: str) -> Any:
        async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(Transient), stop=stop_after_attempt(self.attempts),
                wait=self._wait, reraise=True):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    exc = attempt.retry_state.outcome.exception() if attempt.retry_state.outcome else None
                    log.warning("%s event=retry call=%s attempt=%d endpoint=%s reason=%s", self.context, what,
                                attempt.retry_state.attempt_number, getattr(exc, "endpoint", "-"), exc)
                return await fn()

    def _wait(self, retry_state: Any) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after_s:
            return min(float(exc.retry_after_s), 60.0)
        return wait_exponential_jitter(initial=0.2, max=10.0)(retry_state)

    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        return await self._with_retries(lambda: self._once(method, params or []), method)

    async def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Several calls in one HTTP request; answers in call order. Any failed item retries the batch."""
        if not calls:
            return []

        async def once() -> list[Any]:
            endpoint = next(self._cycle)
            first = next(self._ids)
            payload = [{"jsonrpc": "2.0", "id": first + i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
            for _ in range(len(calls) - 1):
                next(self._ids)
            try:
                doc, status, retry_after = await self._post(endpoint, payload)
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
                return out
            except Transient as exc:
                endpoint.errors += 1
                exc.endpoint = endpoint.label  # type: ignore[attr-defined]
                raise

        return await self._with_retries(once, f"batch[{len(calls)}]")

    # -- methods ------------------------------------------------------------------------
    async def chain_id(self) -> int:
        return int(await self.call("eth_chainId"), 16)

    async def block_number(self) -> int:
        return int(await self.call("eth_blockNumber"), 16)

    async def get_logs(self, from_block: int, to_block: int) -> list[dict[str, Any]]:
        result = await self.call("eth_getLogs", [{"fromBlock": hex(from_block), "toBlock": hex(to_block),
                                                  "topics": LOG_FILTER_TOPICS}])
        if not isinstance(result, list):
            raise Transient(f"eth_getLogs answered {type(result).__name__}, not a list")
        return result

    async def headers(self, blocks: list[int], batch_size: int = 200) -> dict[int, tuple[str, int]]:
        """block -> (hash, timestamp), fetched in JSON-RPC batches."""
        out: dict[int, tuple[str, int]] = {}
        for i in range(0, len(blocks), batch_size):
            chunk = blocks[i:i + batch_size]
            results = await self.batch([("eth_getBlockByNumber", [hex(b), False]) for b in chunk])
            for b, blk in zip(chunk, results):
                if not blk:
                    raise Transient(f"block {b} not found (node behind?)")
                out[b] = (blk["hash"].lower(), int(blk["timestamp"], 16))
        return out


async def probe_endpoints(urls: tuple[str, ...], timeout_s: float = 5.0) -> dict[str, int | str]:
    """eth_chainId on every endpoint, once, fast: label -> chain id, or the error text."""
    out: dict[str, int | str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        for i, url in enumerate(urls):
            label = endpoint_label(url, i)
            try:
                async with session.post(url, data=orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}),
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


__all__ = ["RpcClient", "probe_endpoints", "Fatal", "Transient", "RateLimited"]
