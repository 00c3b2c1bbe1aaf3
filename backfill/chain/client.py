"""JSON-RPC client: one aiohttp session per process, endpoints round-robin with health and pacing, tenacity retries.

Per call: pick a usable endpoint (EndpointPool; among those, the one whose budget lets the call go soonest),
wait for its budget (backfill.chain.pacing), send, read the answer (backfill.chain.envelopes: envelopes, error
objects, batch answers matched by id; errors classed by backfill.chain.provider_errors), apply the class's policy:

- a rate limit is pacing, not ill health: the endpoint's rate comes down, the call waits for its turn and is
  sent again (on another endpoint when this one would keep it waiting long). It never uses up a try;
- a batch the endpoint refuses as too large: it is sent again in smaller batches (single calls when it takes
  none), and the endpoint's cap is remembered; this uses up no try either;
- switch (transient: cool the endpoint with a growing penalty, go elsewhere), park (quota), split (raised to
  the caller, which knows the window) or fail.

Near the head, eth_getLogs goes through the lag guard (backfill.chain.lag): an answer from a node behind the
range, or short of the chain's headers, is refused as NodeBehind and retried on another endpoint.

Tries are bounded (`attempts`, counting real failures only) and each retry is logged with its number.
Requests are counted per endpoint and per day (the `current_day` context variable set by the worker).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception, wait_random_exponential

from backfill.chain import envelopes, lag, pace_memory
from backfill.chain.answer_check import blocks_damage, logs_damage
from backfill.chain.answers import ReadAnswer
from backfill.chain.endpoints import COMPUTE_UNITS, Endpoint, EndpointPool
from backfill.chain.pacing import Pace
from backfill.chain.provider_errors import (
    BatchTooLarge,
    DamagedAnswer,
    Fatal,
    NodeBehind,
    NoEndpoint,
    QuotaExhausted,
    RangeTooLarge,
    RateLimited,
    RpcError,
    Transient,
    classify_error,
    policy,
)
from backfill.decode.events import LOG_FILTER_TOPICS
from backfill.decode.scanner import scan as scan_answer
from backfill.redact import endpoint_label

log = logging.getLogger(__name__)

# An answer's bytes -> a ReadAnswer, or None to leave the answer to orjson. A reader with an `executor` attribute
# (a concurrent.futures executor) is called there, off the event loop.
Reader = Callable[[bytes], Any]

# The day a request is made for (set by the worker around each fetch), for per-day request accounting.
current_day: contextvars.ContextVar[int] = contextvars.ContextVar("current_day", default=-1)

DEFAULT_BATCH = 100  # most calls in one request unless the endpoint or its budget says less (Bor's, ethers' default)
FIRST_BATCH = 10  # the largest batch before an endpoint has answered one in full
SWITCH_WAIT_S = 2.0  # a rate-limited call that would wait longer goes to another endpoint that is ready sooner
LOG_EVERY_S = 10.0  # budget waits and limit answers are logged at most this often per endpoint


def _damage(logs: list[dict[str, Any]] | ReadAnswer, first: int, last: int) -> str | None:
    """Why an eth_getLogs answer over [first, last] cannot be a node's (backfill.chain.answer_check), or None."""
    if isinstance(logs, ReadAnswer):
        return blocks_damage(logs.block_hashes().items(), first, last) or logs_damage(logs.fallback_logs(), first, last)
    return logs_damage(logs, first, last)


class DayUsage:
    """Requests, errors and compute units attributed to one day."""

    __slots__ = ("requests", "errors", "compute_units", "limited", "served")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.compute_units = 0
        self.limited = 0  # calls refused by rate-limit answers (sent again later; not errors)
        self.served: Counter = Counter()  # endpoint label -> eth_getLogs answers accepted


class RpcClient:
    def __init__(
        self,
        urls: tuple[str, ...] | list[str],
        *,
        timeout_s: float = 30.0,
        attempts: int = 10,
        concurrency_per_endpoint: int = 8,
        max_rps_per_endpoint: float = 0.0,
        context: str = "",
        max_wait_s: float = 120.0,
        labels: list[str] | None = None,
        share: int = 1,
        memory: Path | None = None,
    ):
        labels = labels or [endpoint_label(u, i) for i, u in enumerate(urls)]
        self.pool = EndpointPool(list(urls), labels)
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.context = context  # e.g. "worker=3", prefixed to retry log lines
        self.max_wait_s = max_wait_s  # longest wait for a usable endpoint before the call fails
        self._sems = {ep.index: asyncio.Semaphore(concurrency_per_endpoint) for ep in self.pool.endpoints}
        # each endpoint's plan (calls/s, None: not known until the provider says so), of which this process
        # starts with 1/share: the processes that call the endpoint at the same time divide it
        plan = max_rps_per_endpoint / max(1, share) if max_rps_per_endpoint else None
        self.share = max(1, share)
        self.memory = memory  # what earlier processes of the run learnt about the endpoints (pace_memory)
        learnt = pace_memory.read(memory)
        self.paces = {}
        for ep in self.pool.endpoints:
            seen = learnt.get(pace_memory.endpoint_key(ep.url), {})
            start = float(seen["rps"]) / self.share if seen.get("rps") else None
            self.paces[ep.index] = Pace(plan, start)
            ep.batch_cap = seen.get("batch_cap")
            ep.refused_blocks = seen.get("refused_blocks")
            parked_for = float(seen.get("parked_until") or 0) - time.time()
            if parked_for > 0:  # another process of the run found its quota spent
                self.pool.park(ep, str(seen.get("parked_reason") or "quota exhausted"), parked_for)
        self._logged: dict[tuple[str, int], float] = {}  # (what, endpoint) -> when it was last logged
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self.days: dict[int, DayUsage] = {}
        self.errors_by_class: Counter = Counter()
        # where the lag guard's header checks go (another client over more endpoints, e.g. the audit's: its
        # logs come from the endpoints it prefers, the canonical headers from any); None = this client
        self.verifier: RpcClient | None = None

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
            self.remember()

    def remember(self) -> None:
        """Hand what this process learnt about the endpoints to the next one (pace_memory)."""
        now = self.pool.clock()
        pace_memory.write(
            self.memory,
            {
                pace_memory.endpoint_key(ep.url): {
                    "rps": round((self.paces[ep.index].rate or 0) * self.share, 2)
                    if self.paces[ep.index].rate
                    else None,
                    "batch_cap": ep.batch_cap,
                    "refused_blocks": ep.refused_blocks,
                    **(
                        {"parked_until": time.time() + ep.parked_until - now, "parked_reason": ep.parked_reason}
                        if ep.parked_until > now
                        else {}
                    ),
                }
                for ep in self.pool.endpoints
            },
        )

    # -- transport ----------------------------------------------------------------------
    def _log_once(self, what: str, ep: Endpoint, level: int, fmt: str, *args: Any) -> None:
        """A line about an endpoint's condition, at most one per LOG_EVERY_S (a limit is a state, not news)."""
        now = time.monotonic()
        if now - self._logged.get((what, ep.index), float("-inf")) >= LOG_EVERY_S:
            self._logged[(what, ep.index)] = now
            log.log(level, fmt, *args)

    async def _send(self, ep: Endpoint, payload: Any, methods: list[str]) -> tuple[bytes, int, float | None]:
        """One HTTP request once the endpoint's budget allows it."""
        assert self._session is not None, "use `async with RpcClient(...)`"
        pace = self.paces[ep.index]
        wait = pace.reserve(len(methods))
        if wait > 0:
            if wait >= 1.0:
                self._log_once(
                    "budget",
                    ep,
                    logging.INFO,
                    "%s day=%d endpoint=%s event=waiting_for_budget seconds=%.1f rps=%s calls=%d",
                    self.context,
                    current_day.get(),
                    ep.label,
                    wait,
                    pace.snapshot()["rps"],
                    len(methods),
                )
            await asyncio.sleep(wait)
        self.pool.sent(ep, methods)
        usage = self.days.setdefault(current_day.get(), DayUsage())
        usage.requests += 1
        usage.compute_units += sum(COMPUTE_UNITS.get(m, 20) for m in methods)
        async with self._sems[ep.index]:
            try:
                async with self._session.post(
                    ep.url, data=orjson.dumps(payload), headers={"Content-Type": "application/json"}
                ) as resp:
                    return await resp.read(), resp.status, envelopes.retry_after(resp.headers)
            except asyncio.TimeoutError:
                raise Transient(f"timeout after {self.timeout_s:g}s") from None
            except aiohttp.ClientError as exc:
                raise Transient(f"connection failed: {type(exc).__name__}") from None

    @staticmethod
    async def _read(body: bytes, status: int, retry_after: float | None, scan: Reader | None) -> Any:
        """envelopes.read, on the reader's own thread where it has one (`executor`: it runs off the event loop,
        so that other requests stay in flight while it works)."""
        executor = getattr(scan, "executor", None)
        if executor is None:
            return envelopes.read(body, status, retry_after, scan)
        return await asyncio.get_running_loop().run_in_executor(
            executor, envelopes.read, body, status, retry_after, scan
        )

    async def _post(
        self,
        ep: Endpoint,
        payload: Any,
        methods: list[str],
        scan: Callable[[bytes], Any] | None = None,
        *,
        partial: bool = False,
    ) -> tuple[Any, int, float | None]:
        """Send one request and read its answer (scan's reading of a 200 answer, where it has one; else parsed).

        Rate-limit answers are handled here: the endpoint's pace comes down and the same request goes again when
        its turn comes; when another endpoint could take it much sooner, RateLimited is raised (the retry loop
        switches without counting a try). partial=True: a batch whose answer refuses only some calls for the
        rate is returned as it is (the caller keeps what was served)."""
        pace = self.paces[ep.index]
        while True:
            body, status, retry_after = await self._send(ep, payload, methods)
            try:
                doc = await self._read(body, status, retry_after, scan)
                limited, refused = envelopes.limit_answer(doc, status, retry_after, len(methods), partial)
            except RateLimited as exc:
                limited, refused = exc, len(methods)
            if limited is None:
                pace.served(len(methods))
                return doc, status, retry_after
            pace.limited(refused, limited.retry_after_s)
            self.days.setdefault(current_day.get(), DayUsage()).limited += refused
            self._log_once(
                "limited",
                ep,
                logging.WARNING,
                "%s day=%d endpoint=%s event=rate_limited calls=%d rps_now=%s hint_s=%s action=wait reason=%r",
                self.context,
                current_day.get(),
                ep.label,
                refused,
                pace.snapshot()["rps"],
                limited.retry_after_s,
                str(limited)[:120],
            )
            limited.endpoint = ep.label  # type: ignore[attr-defined]
            if len(methods) > 1 and len(methods) > (pace.batch_cap() or len(methods)):
                raise limited  # more calls than a second's budget holds: the caller cuts smaller requests
            if pace.delay(len(methods)) > SWITCH_WAIT_S and self._sooner_elsewhere(ep, len(methods)):
                raise limited

    def _sooner_elsewhere(self, ep: Endpoint, calls: int) -> bool:
        now = self.pool.clock()
        return any(
            other is not ep and other.available(now) and self.paces[other.index].delay(calls) <= SWITCH_WAIT_S
            for other in self.pool.endpoints
        )

    def _delay(self, ep: Endpoint) -> float:
        return self.paces[ep.index].delay(1)

    def batch_size(self, ep: Endpoint) -> int:
        """Most calls one request to `ep` carries: its known batch cap, what its budget admits, DEFAULT_BATCH;
        and, like a slow start, twice the largest batch it has answered in full (FIRST_BATCH at first), so that
        an endpoint whose budget is not known yet is not asked for a hundred calls at once."""
        grown = max(FIRST_BATCH, 2 * ep.batch_ok)
        return max(
            1,
            min(DEFAULT_BATCH, grown, ep.batch_cap or DEFAULT_BATCH, self.paces[ep.index].batch_cap() or DEFAULT_BATCH),
        )

    async def _endpoint(self, need_block: int | None) -> Endpoint:
        """A usable endpoint, waiting out cool-downs; NoEndpoint when all are parked or behind for too long."""
        deadline = time.monotonic() + self.max_wait_s
        while True:
            ep = self.pool.pick(need_block, self._delay)
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
                raise NoEndpoint(
                    f"no endpoint can serve block {need_block} within {self.max_wait_s:g}s"
                    + (f" (behind: {behind})" if behind else "")
                )
            log.info("%s event=wait_endpoint seconds=%.1f need_block=%s", self.context, wait, need_block)
            await asyncio.sleep(max(wait, 0.05))

    def _failed(self, ep: Endpoint, exc: RpcError) -> None:
        what = policy(exc)
        exc.endpoint = ep.label  # type: ignore[attr-defined]
        if isinstance(exc, (RateLimited, BatchTooLarge)):
            return  # pacing and shaping, not the endpoint's health (counted where they are handled)
        self.errors_by_class[type(exc).__name__] += 1
        self.days.setdefault(current_day.get(), DayUsage()).errors += 1
        if what == "park":
            self.pool.park(ep, str(exc))
            log.error(
                "%s endpoint=%s event=parked reason=%r for_s=3600 action=use_other_endpoints",
                self.context,
                ep.label,
                str(exc)[:200],
            )
        elif what == "split":
            pass  # not the endpoint's fault
        elif isinstance(exc, NodeBehind):
            if exc.head is not None:
                self.pool.saw_head(ep, exc.head)
            self.pool.failed(ep, "behind")
        elif what == "switch":
            self.pool.failed(ep, type(exc).__name__)

    def _refused_batch(self, ep: Endpoint, n_calls: int, exc: BatchTooLarge) -> None:
        cap = self.pool.refused_batch(ep, n_calls, exc.max_items)
        self._log_once(
            "batch",
            ep,
            logging.INFO,
            "%s endpoint=%s event=batch_refused calls=%d batch_cap=%d reason=%r action=smaller_batches",
            self.context,
            ep.label,
            n_calls,
            cap,
            str(exc)[:120],
        )

    async def _retrying(self, attempt_fn: Any, what: str) -> Any:
        """Tries of one call: rate limits and refused batch sizes are pacing and shaping, not failures, so they do
        not count towards `attempts`; every other retryable error does."""
        failures = 0

        async def counted() -> Any:
            nonlocal failures
            try:
                return await attempt_fn()
            except RpcError as exc:
                if not isinstance(exc, (RateLimited, BatchTooLarge)):
                    failures += 1
                raise

        retryable = lambda e: isinstance(e, RpcError) and policy(e) in ("wait", "switch", "park", "shrink")  # noqa: E731
        stop = lambda state: failures >= self.attempts  # noqa: E731
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(retryable),
            stop=stop,
            wait=self._wait,
            reraise=True,
            before_sleep=self._log_retry(what, lambda: failures),
        ):
            with attempt:
                return await counted()

    def _log_retry(self, what: str, failures: Callable[[], int]) -> Any:
        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception()
            if isinstance(exc, (RateLimited, BatchTooLarge)):
                return  # logged where handled, once per condition
            log.warning(
                "%s day=%d event=retry call=%s attempt=%d/%d endpoint=%s policy=%s in_s=%.2f reason=%r",
                self.context,
                current_day.get(),
                what,
                failures(),
                self.attempts,
                getattr(exc, "endpoint", "-"),
                policy(exc),
                state.next_action.sleep if state.next_action else 0,
                str(exc)[:160],
            )

        return before_sleep

    def _wait(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, (RateLimited, BatchTooLarge)):
            return 0.0  # the endpoints' paces decide when the next request goes
        if self.pool.wait_s() == 0 and isinstance(exc, (QuotaExhausted, NodeBehind)):
            return 0.0  # another endpoint is usable now: switch at once; the failing one is cooling down
        return wait_random_exponential(multiplier=0.1, max=5.0)(state)  # exponential backoff, full jitter

    # -- calls ----------------------------------------------------------------------------
    async def call(self, method: str, params: list[Any] | None = None, *, need_block: int | None = None) -> Any:
        async def once() -> Any:
            ep = await self._endpoint(need_block)
            try:
                result = await self._call_one(ep, method, params or [])
            except RpcError as exc:
                self._failed(ep, exc)
                raise
            self.pool.ok(ep)
            return result

        return await self._retrying(once, method)

    async def batch(self, calls: list[tuple[str, list[Any]]], *, need_block: int | None = None) -> list[Any]:
        """Many calls, in as few requests as the endpoints take (their batch caps and budgets); answers in call
        order. Calls an answer refused for the rate are sent again; any other failed item retries its request."""
        results: dict[int, Any] = {}
        while len(results) < len(calls):
            pending = [i for i in range(len(calls)) if i not in results]

            async def once(pending: list[int] = pending) -> dict[int, Any]:
                ep = await self._endpoint(need_block)
                take = pending[: self.batch_size(ep)]
                try:
                    return await self._batch_once(ep, [(i, *calls[i]) for i in take])
                except BatchTooLarge as exc:
                    self._refused_batch(ep, len(take), exc)
                    raise
                except RpcError as exc:
                    self._failed(ep, exc)
                    raise

            results.update(await self._retrying(once, batch_label([calls[i][0] for i in pending])))
        return [results[i] for i in range(len(calls))]

    async def _batch_once(self, ep: Endpoint, calls: list[tuple[int, str, list[Any]]]) -> dict[int, Any]:
        """One request to `ep` with these (index, method, params): index -> result of the calls it served."""
        if len(calls) == 1:
            ((i, method, params),) = calls
            result = await self._call_one(ep, method, params)
            self.pool.ok(ep)
            return {i: result}
        ids = {next(self._ids): i for i, _, _ in calls}
        payload = [envelopes.request(rid, m, p) for rid, (_, m, p) in zip(ids, calls)]
        doc, status, retry_after = await self._post(ep, payload, [m for _, m, _ in calls], partial=True)
        out, limited = envelopes.batch_results(doc, ids, status, retry_after)
        if limited:
            self.paces[ep.index].limited(limited)
            self.days.setdefault(current_day.get(), DayUsage()).limited += limited
        else:
            self.pool.accepted_batch(ep, len(calls))
        self.pool.ok(ep)
        return out

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
                doc, status, _ = await self._post(ep, envelopes.request(1, "eth_blockNumber", []), ["eth_blockNumber"])
                self.pool.saw_head(ep, int(doc["result"], 16))
            except (RpcError, KeyError, TypeError, ValueError):
                pass
            out[ep.label] = ep.head
        return out

    def highest_head(self) -> int | None:
        heads = [ep.head for ep in self.pool.endpoints if ep.head is not None]
        return max(heads) if heads else None

    async def _guarded_logs(self, ep: Endpoint, flt: dict[str, Any], read: Reader | None) -> tuple[int, Any]:
        """(the node's head, its eth_getLogs answer), asked together in one batch where the endpoint takes
        batches, else head first, then the logs."""
        if self.batch_size(ep) < 2:
            head_hex = await self._call_one(ep, "eth_blockNumber", [])
            return lag.head_of(head_hex), await self._plain_logs(ep, flt, read)
        ids = (next(self._ids), next(self._ids))
        payload = [envelopes.request(ids[0], "eth_blockNumber", []), envelopes.request(ids[1], "eth_getLogs", [flt])]
        doc, status, retry_after = await self._post(ep, payload, ["eth_blockNumber", "eth_getLogs"], read)
        head_hex, logs = envelopes.guarded_answer(doc, ids, status, retry_after)
        return lag.head_of(head_hex), logs

    async def _call_one(self, ep: Endpoint, method: str, params: list[Any]) -> Any:
        """One call in a request of its own to `ep`: its result, or the error it carries."""
        doc, status, retry_after = await self._post(ep, envelopes.request(next(self._ids), method, params), [method])
        return envelopes.result_of(doc, status, retry_after, method)

    async def _plain_logs(self, ep: Endpoint, flt: dict[str, Any], read: Reader | None) -> Any:
        doc, status, retry_after = await self._post(
            ep, envelopes.request(next(self._ids), "eth_getLogs", [flt]), ["eth_getLogs"], read
        )
        return envelopes.logs_answer(doc, status, retry_after)

    async def get_logs(
        self,
        from_block: int,
        to_block: int,
        *,
        guard: bool = False,
        verify_from: int | None = None,
        scan: bool = False,
        read: Reader | None = None,
    ) -> list[dict[str, Any]] | ReadAnswer:
        """Transfer-topic logs of [from_block, to_block].

        scan=True: an answer is read by the compiled scanner (backfill/decode/scanner.py) and comes back as
        Scanned; errors and anything the scanner leaves are parsed with orjson as before. read: another reader
        of the answer's bytes (the audit's engine, monitor/audit/engine_read.py), which returns a ReadAnswer or
        None to leave the answer to orjson.

        guard=True (near the head): eth_blockNumber rides in the same batch and an answer from a node whose head
        is below to_block is refused (NodeBehind); blocks from verify_from on are checked against the same
        node's headers (backfill.chain.lag.verify_complete). A refused answer is retried on another endpoint."""
        span = to_block - from_block + 1
        flt = {"fromBlock": hex(from_block), "toBlock": hex(to_block), "topics": LOG_FILTER_TOPICS}

        reader = read or (scan_answer if scan else None)

        async def once() -> list[dict[str, Any]] | ReadAnswer:
            ep = await self._endpoint(to_block if guard else None)
            cap = ep.refused_blocks
            if cap is not None and span >= cap:  # known cap: split without spending a request
                raise RangeTooLarge(
                    f"{ep.label} refuses ranges of {cap} blocks", suggested=None, max_blocks=max(1, cap - 1)
                )
            try:
                if guard:
                    head, logs = await self._guarded_logs(ep, flt, reader)
                    self.pool.saw_head(ep, head)
                    lag.refuse_behind(head, to_block)
                else:
                    logs = await self._plain_logs(ep, flt, reader)
                if not isinstance(logs, (list, ReadAnswer)):
                    raise Transient(f"eth_getLogs answered {type(logs).__name__}, not a list")
                self._refuse_damaged(ep, logs, from_block, to_block)
                if guard and verify_from is not None and verify_from <= to_block:
                    await lag.verify_complete(self.verifier or self, logs, max(from_block, verify_from), to_block)
            except RangeTooLarge as exc:
                # a result cap (too many logs) says nothing of the ranges it takes where logs are fewer
                self.pool.refused_range(
                    ep, span, exc.max_blocks, results_only=bool(exc.max_results) and not exc.max_blocks
                )
                self._failed(ep, exc)
                raise
            except BatchTooLarge as exc:
                self._refused_batch(ep, 2, exc)
                raise
            except RpcError as exc:
                self._failed(ep, exc)
                raise
            return self._answered(ep, span, logs)

        return await self._retrying(once, f"eth_getLogs[{from_block}-{to_block}]")

    def _refuse_damaged(self, ep: Endpoint, logs: Any, from_block: int, to_block: int) -> None:
        """Log and raise DamagedAnswer when logs cannot be a node's answer for [from_block, to_block] (see _damage)."""
        damage = _damage(logs, from_block, to_block)
        if damage is None:
            return
        log.warning(
            "%s day=%d blocks=%d-%d endpoint=%s event=damaged_answer reason=%r action=ask_another_endpoint",
            self.context,
            current_day.get(),
            from_block,
            to_block,
            ep.label,
            damage,
        )
        raise DamagedAnswer(f"damaged answer for blocks {from_block}-{to_block}: {damage}")

    def _answered(self, ep: Endpoint, span: int, logs: Any) -> Any:
        """Book an accepted eth_getLogs answer for its endpoint and day."""
        self.pool.ok(ep)
        self.pool.accepted_range(ep, span)
        self.days.setdefault(current_day.get(), DayUsage()).served[ep.label] += 1
        return logs

    async def headers(self, blocks: list[int], batch_size: int = 1000) -> dict[int, tuple[str, int]]:
        """block -> (hash, timestamp); `batch` cuts the calls into the requests the endpoints take."""
        found = await self._blocks(blocks, batch_size)
        return {b: (blk["hash"].lower(), int(blk["timestamp"], 16)) for b, blk in found.items()}

    async def block_links(self, blocks: list[int], batch_size: int = 1000) -> dict[int, tuple[str, str]]:
        """block -> (hash, parent hash): how the copied tip is chained (backfill.chain.reorg)."""
        found = await self._blocks(blocks, batch_size)
        return {b: (blk["hash"].lower(), blk["parentHash"].lower()) for b, blk in found.items()}

    async def block_hashes(self, blocks: list[int]) -> dict[int, str | None]:
        """block -> its hash on the chain now, None for a block the chain does not have: believed only after
        the retries of `_blocks` (a node a little behind is not a shorter chain)."""
        try:
            found = await self._blocks(blocks, 1000)
        except NodeBehind:
            answers = await self.batch([("eth_getBlockByNumber", [hex(b), False]) for b in blocks])
            found = {b: blk for b, blk in zip(blocks, answers) if blk}
        return {b: (found[b]["hash"].lower() if b in found else None) for b in blocks}

    async def _blocks(self, blocks: list[int], batch_size: int) -> dict[int, dict[str, Any]]:
        """block -> its header object; NodeBehind when a block is not found on any endpoint after the retries."""
        out: dict[int, dict[str, Any]] = {}
        for i in range(0, len(blocks), batch_size):
            chunk = blocks[i : i + batch_size]
            for attempt in range(self.attempts):
                results = await self.batch(
                    [("eth_getBlockByNumber", [hex(b), False]) for b in chunk], need_block=max(chunk)
                )
                missing = [b for b, blk in zip(chunk, results) if not blk]
                if not missing:
                    break
                log.warning(
                    "%s event=retry call=headers attempt=%d reason='blocks %s not found (node behind?)'",
                    self.context,
                    attempt + 1,
                    missing[:3],
                )
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
            else:
                raise NodeBehind(f"blocks {missing[:3]} not found on any endpoint")
            out.update(zip(chunk, results))
        return out

    def usage(self) -> list[dict]:
        """Per endpoint: requests, errors, compute units, health, and its pace (calls/s, limit answers, waits)."""
        return [
            {**snap, **self.paces[ep.index].snapshot()} for ep, snap in zip(self.pool.endpoints, self.pool.snapshot())
        ]


PROBE_LIMITED_TRIES = 5
_PROBE_WORDS = {
    "QuotaExhausted": "quota used up or key refused",
    "RateLimited": "rate-limited on every try",
    "Fatal": "refused eth_chainId",
    "Transient": "failing",
}


def _probe_limited(body: bytes, status: int) -> bool:
    """A rate-limit answer to the probe (the endpoint is there, its budget is spent for this second)."""
    if status == 429:
        return True
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    error = envelopes.error_of(doc)
    return isinstance(error, dict) and isinstance(classify_error(error, status), RateLimited)


def batch_label(methods: list[str]) -> str:
    """How a batch is named in the retry log: its size and its methods (`batch[3]:eth_chainId,eth_blockNumber`),
    so that an operator sees which calls a failed batch held."""
    return f"batch[{len(methods)}]:" + ",".join(dict.fromkeys(methods))


async def probe_endpoints(urls: tuple[str, ...], timeout_s: float = 5.0) -> dict[str, int | str]:
    """eth_chainId on every endpoint, once, fast: label -> chain id, or the error text."""
    out: dict[str, int | str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        for i, url in enumerate(urls):
            label = endpoint_label(url, i)
            try:
                for attempt in range(PROBE_LIMITED_TRIES):
                    async with session.post(
                        url,
                        data=orjson.dumps(envelopes.request(1, "eth_chainId", [])),
                        headers={"Content-Type": "application/json"},
                    ) as resp:
                        body, status, hint = await resp.read(), resp.status, envelopes.retry_after(resp.headers)
                    if not _probe_limited(body, status) or attempt == PROBE_LIMITED_TRIES - 1:
                        break
                    await asyncio.sleep(min(hint or 1.0, 5.0))  # rate-limited: it answers, just not yet
                doc = orjson.loads(body)
                error = envelopes.error_of(doc)
                error = {"message": error} if isinstance(error, str) else error
                if isinstance(error, dict):  # it answers, with a refusal: say which (quota, key, limit, ...)
                    exc = classify_error(error, status)
                    out[label] = f"{_PROBE_WORDS.get(type(exc).__name__, 'refused')}: {str(exc)[:160]}"
                    continue
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
