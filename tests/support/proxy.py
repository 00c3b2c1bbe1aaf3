"""A fault-injecting JSON-RPC proxy in front of a real node, for integration tests.

`with RpcProxy(node.url, faults=[Fault("A4", rate=0.2)], seed=1) as proxy: ... proxy.url ...` runs an
aiohttp server on 127.0.0.1 in a background thread with its own event loop. Each request is forwarded to
the upstream node unless a fault (tests/support/proxy_faults.py) answers instead; the proxy can also pretend to
lag behind the head and strip `blockTimestamp` from logs. Every JSON-RPC call is recorded, and the
records can be read from the test thread while the proxy runs.

It can also act like a hosted provider at its limits. Per JSON-RPC request, before any fault is drawn:

1. quota_calls=N (a monthly or daily quota): once N calls were let through, every request gets
   `quota_kind` ("I6", HTTP 402, default; "A5"; "P1"). A batch counts each call; refused calls don't.
2. Batch caps: refuse_batches=True refuses every batch, even of one call (BATCH_OFF, the plain-text 400 of
   a Polygon zkEVM node, whose batches are off by default; or refuse_batches="BATCH_OFF_JSON": -32600 in
   the envelope); max_batch=N refuses a batch of more than N calls as `batch_refusal` answers: "geth"
   (a one-item array with the first call's id, -32600 "batch too large"), "besu" (one object, id null,
   -32005) or "zkevm" (plain-text 413).
3. A per-second budget: rate_limit_rps=R is a token bucket of rate_limit_burst tokens (default R, at
   least 1) refilled continuously at R per second, shared by every request (a provider's per-key limit).
   A call costs a token, a batch of k costs k, a refused call nothing. A request that does not fit gets,
   with rate_limit_mode="whole" (default), one answer of `rate_limit_kind` ("A4", default; "Q2", "I4",
   "I5", "Q3", "RETRY_AFTER", whose Retry-After, like I5's backoff_seconds, is the whole seconds until the
   request would fit); with "items" (QuickNode: 26 calls at 25 RPS give 25 results and 1 error) the calls
   of a batch that fit get their true answers and the rest, each in its own envelope, the error of
   `rate_limit_item_kind` ("Q4", -32012, default).
4. Then the faults and the lag as above, then the upstream. Non-JSON-RPC bodies skip all of this.

A fault can hit any method and calls inside batches (one call of a batch erring while the others answer,
the whole batch refused, BATCH_ORDER: the batch answered out of order), at a rate or at given calls:
`Fault("I7", methods={"eth_getBlockByNumber"}, batch="items", at={5})` errs the 5th eth_getBlockByNumber
the proxy receives, wherever it is; `after=20` every call after the 20th. DAMAGE rewrites logs of eth_getLogs
answers (DAMAGE_MODES); whether the n-th eth_getLogs is damaged, and how, is drawn from (seed, n) alone, so a
seed damages the same calls the same way whatever the order the calls arrive in. received(method) counts the
calls so far (what `at` counts), damage_counts() the damaged answers served per mode.

Every option can be changed at runtime with configure(...). Refused calls are recorded with the kind they
got as `fault`; limit_answers(), limit_requests(), budget_calls(), first_request_at(), last_request_at() and
calls_per_second_max() tell how the budget held.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.support.background_server import BackgroundServer
from tests.support.proxy_faults import (
    ALL_FAULTS_MIX,
    BATCH_CAPS,
    BATCH_OFF_KINDS,
    DAMAGE_MODES,
    KINDS,
    QUOTA,
    RATE,
    Fault,
    Reply,
    batch_refusal_reply,
    block_number,
    damage_logs,
    envelope,
    error_object,
    fault_reply,
    kinds_in,
    lagged_answer,
    suggest_range,
)

__all__ = ["ALL_FAULTS_MIX", "DAMAGE_MODES", "KINDS", "Call", "Fault", "RpcProxy"]

log = logging.getLogger(__name__)

GETLOGS = "eth_getLogs"
_LAGGED_METHODS = {"eth_blockNumber", "eth_getBlockByNumber", GETLOGS}
_HEAD_CALL = b'{"jsonrpc":"2.0","id":"proxy-head","method":"eth_blockNumber","params":[]}'


@dataclass(frozen=True)
class Call:
    """One JSON-RPC call as the proxy saw and answered it."""

    seq: int  # HTTP request number; the calls of one batch share it
    method: str
    params: Any  # eth_getLogs over a range: (fromBlock, toBlock) as ints; otherwise params as sent
    batch_size: int | None  # None for a single (non-batch) request
    fault: str | None  # the fault kind injected, "LAG" when lagging changed the answer, else None
    status: int | None  # HTTP status returned; None when the connection was reset or the client left
    ok: bool  # forwarded, and the upstream's complete result reached the client
    path: str
    nth: int = 0  # its ordinal among the calls of its method the proxy received (what Fault.at counts)
    damage: tuple[str, ...] = ()  # DAMAGE: the mode of each damaged log of its answer


@dataclass(frozen=True)
class _Options:
    lag_blocks: int = 0
    getlogs_lag_only: bool = False
    lag_getlogs: str = "partial"  # partial | empty | error
    lag_block_lookup: str = "null"  # null | I7
    strip_block_timestamp: bool = False
    rate_limit_rps: float | None = None
    rate_limit_burst: float | None = None  # None: one second's worth
    rate_limit_mode: str = "whole"  # whole | items
    rate_limit_kind: str = "A4"
    rate_limit_item_kind: str = "Q4"
    quota_calls: int | None = None
    quota_kind: str = "I6"
    max_batch: int | None = None
    batch_refusal: str = "geth"  # geth | besu | zkevm
    refuse_batches: bool | str = False  # True (= "BATCH_OFF") or a kind of BATCH_OFF_KINDS

    def __post_init__(self) -> None:
        if self.lag_blocks < 0:
            raise ValueError("lag_blocks must be >= 0")
        if self.lag_getlogs not in ("partial", "empty", "error"):
            raise ValueError(f"lag_getlogs must be partial, empty or error, not {self.lag_getlogs!r}")
        if self.lag_block_lookup not in ("null", "I7"):
            raise ValueError(f"lag_block_lookup must be null or I7, not {self.lag_block_lookup!r}")
        if self.rate_limit_rps is not None and not self.rate_limit_rps > 0:
            raise ValueError(f"rate_limit_rps must be > 0 or None, not {self.rate_limit_rps!r}")
        if self.rate_limit_burst is not None and not self.rate_limit_burst >= 1:
            raise ValueError(f"rate_limit_burst must be >= 1 or None, not {self.rate_limit_burst!r}")
        if self.rate_limit_mode not in ("whole", "items"):
            raise ValueError(f"rate_limit_mode must be whole or items, not {self.rate_limit_mode!r}")
        if self.rate_limit_kind not in kinds_in(RATE):
            raise ValueError(f"rate_limit_kind must be one of {kinds_in(RATE)}, not {self.rate_limit_kind!r}")
        items = [k for k in kinds_in(RATE) if KINDS[k].error is not None and not KINDS[k].bare]
        if self.rate_limit_item_kind not in items:
            raise ValueError(f"rate_limit_item_kind must be one of {items}, not {self.rate_limit_item_kind!r}")
        if self.quota_calls is not None and self.quota_calls < 0:
            raise ValueError("quota_calls must be >= 0 or None")
        if self.quota_kind not in kinds_in(QUOTA):
            raise ValueError(f"quota_kind must be one of {kinds_in(QUOTA)}, not {self.quota_kind!r}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError("max_batch must be >= 1 or None")
        if self.batch_refusal not in BATCH_CAPS:
            raise ValueError(f"batch_refusal must be one of {list(BATCH_CAPS)}, not {self.batch_refusal!r}")
        if not isinstance(self.refuse_batches, bool) and self.refuse_batches not in BATCH_OFF_KINDS:
            raise ValueError(f"refuse_batches must be a bool or one of {BATCH_OFF_KINDS}, not {self.refuse_batches!r}")

    @property
    def capacity(self) -> float:
        """The token bucket's size: rate_limit_burst, else one second's worth (at least one call)."""
        if self.rate_limit_burst is not None:
            return self.rate_limit_burst
        return max(1.0, self.rate_limit_rps or 0.0)

    @property
    def batch_off_kind(self) -> str | None:
        if self.refuse_batches is False:
            return None
        return "BATCH_OFF" if self.refuse_batches is True else str(self.refuse_batches)


@dataclass
class _Item:
    """One call of a request while it is served."""

    obj: dict[str, Any]
    method: str
    params: Any
    range: tuple[int, int] | None = None
    forward: dict[str, Any] | None = None  # what goes upstream, when it differs from obj
    answer: dict[str, Any] | None = None  # the answer object, once known
    status: int = 200  # HTTP status of a made-up answer to a single request
    deferred: list[Fault] = field(default_factory=list)  # result caps, checked on the upstream's answer
    fault: str | None = None
    altered: bool = False  # the client does not get the node's true answer
    ok: bool = False
    limited: bool = False  # refused by the call budget
    nth: int = 0  # ordinal among the calls of its method
    damage_by: tuple[Fault, random.Random] | None = None  # DAMAGE drawn for it: applied to the node's answer
    damaged: tuple[str, ...] = ()

    def fail(self, kind: str, error: dict[str, Any], status: int = 200) -> None:
        self.answer, self.status = envelope(self.obj.get("id"), error=error), status
        self.fault, self.altered = kind, True

    def answer_with(self, result: Any) -> None:
        self.answer = envelope(self.obj.get("id"), result=result)
        self.fault, self.altered = "LAG", True


def _resolve_range(item: _Item, visible_head: int | None) -> None:
    """Set item.range of an eth_getLogs over blocks, tags resolved against the head the client sees."""
    filt = _log_filter(item)
    if filt is not None:
        ends = [block_number(filt.get(k, "latest")) for k in ("fromBlock", "toBlock")]
        from_block, to_block = (e if e is not None else visible_head for e in ends)
        if from_block is not None and to_block is not None:
            item.range = (from_block, to_block)


def _log_filter(item: _Item) -> dict[str, Any] | None:
    params = item.obj.get("params")
    if item.method == GETLOGS and isinstance(params, list) and params and isinstance(params[0], dict):
        return None if "blockHash" in params[0] else params[0]
    return None


class RpcProxy(BackgroundServer):
    name = "rpc proxy"
    """A JSON-RPC proxy on 127.0.0.1 that injects provider failures; see the module docstring.

    faults: the fault mix, drawn per request in list order (first hit wins) with a seeded RNG; a fault
    with at / after hits only the calls with those ordinals (received(method) counts them), BATCH_ORDER
    reverses a batch's answers, DAMAGE rewrites logs of eth_getLogs answers (damage_counts()).
    lag_blocks: pretend the head is upstream head - N for eth_blockNumber, eth_getBlockByNumber and
    eth_getLogs; getlogs_lag_only: only eth_getLogs lags (go-ethereum#24078). lag_getlogs: what a range
    reaching past the lagged head gets: "partial" (logs up to it), "empty" ([]) or "error" (-32602).
    lag_block_lookup: a block above the lagged head is "null" or "I7" (header not found).
    strip_block_timestamp: drop `blockTimestamp` from every log.

    Limits, checked before the faults in this order (see the module docstring):
    quota_calls: after that many calls were let through, every request gets `quota_kind` (I6, A5, P1).
    refuse_batches: every batch is refused (True: BATCH_OFF, or a kind of BATCH_OFF_KINDS); max_batch: a
    batch of more calls is refused the way `batch_refusal` answers ("geth", "besu" or "zkevm").
    rate_limit_rps: a token bucket of rate_limit_burst (default one second's worth) refilled at this rate,
    one token per call; rate_limit_mode "whole" answers a request that does not fit with
    `rate_limit_kind`, "items" serves the calls of a batch that fit and errs the rest with
    `rate_limit_item_kind`.
    """

    def __init__(
        self,
        upstream_url: str,
        faults: Iterable[Fault] | Fault = (),
        *,
        seed: int = 0,
        lag_blocks: int = 0,
        getlogs_lag_only: bool = False,
        lag_getlogs: str = "partial",
        lag_block_lookup: str = "null",
        strip_block_timestamp: bool = False,
        upstream_timeout_s: float = 60.0,
        rate_limit_rps: float | None = None,
        rate_limit_burst: float | None = None,
        rate_limit_mode: str = "whole",
        rate_limit_kind: str = "A4",
        rate_limit_item_kind: str = "Q4",
        quota_calls: int | None = None,
        quota_kind: str = "I6",
        max_batch: int | None = None,
        batch_refusal: str = "geth",
        refuse_batches: bool | str = False,
    ) -> None:
        super().__init__()
        self.upstream_url = upstream_url
        self.upstream_timeout_s = upstream_timeout_s
        self._lock = threading.Lock()
        self._faults: tuple[Fault, ...] = ()
        self.set_faults(faults)
        self._opts = _Options(
            lag_blocks=lag_blocks,
            getlogs_lag_only=getlogs_lag_only,
            lag_getlogs=lag_getlogs,
            lag_block_lookup=lag_block_lookup,
            strip_block_timestamp=strip_block_timestamp,
            rate_limit_rps=rate_limit_rps,
            rate_limit_burst=rate_limit_burst,
            rate_limit_mode=rate_limit_mode,
            rate_limit_kind=rate_limit_kind,
            rate_limit_item_kind=rate_limit_item_kind,
            quota_calls=quota_calls,
            quota_kind=quota_kind,
            max_batch=max_batch,
            batch_refusal=batch_refusal,
            refuse_batches=refuse_batches,
        )
        self._rng = random.Random(seed)
        self._seed = seed
        self._seen: Counter[str] = Counter()  # calls received per method, and batches ("batch"): the ordinals
        self._requests = 0
        self._calls: list[Call] = []
        # the limits' state, under the lock
        self._tokens = self._opts.capacity  # a fresh key starts with a full bucket
        self._stamp = time.monotonic()  # when _tokens was last brought up to date
        self._quota_used = 0  # calls let through, as the quota counts them
        # accounting, under the lock; reset() clears it
        self._limit_answers = 0
        self._limit_requests = 0
        self._admitted: list[tuple[float, int]] = []  # (monotonic time, calls let through) per request
        self._first_request_at: float | None = None
        self._last_request_at: float | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle (start / stop / with: BackgroundServer) -------------------------------------------
    def url_with_key(self, key: str) -> str:
        """A provider-style URL with an API key in its path (the proxy ignores paths)."""
        return f"{self.url}/v2/{key}"

    async def _serve(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        runner: web.AppRunner | None = None
        try:
            timeout = aiohttp.ClientTimeout(total=self.upstream_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
            app = web.Application(client_max_size=64 * 2**20)
            app.router.add_route("POST", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", 0))  # a socket we bound ourselves: no race for a free port
                await web.SockSite(runner, sock).start()
            except BaseException:
                sock.close()
                raise
            self._port = sock.getsockname()[1]
            ready.set()
            await self._stopping.wait()
        except Exception as exc:
            self._startup_error = exc
            ready.set()
        finally:
            if runner is not None:
                await runner.cleanup()
            if self._session is not None:
                await self._session.close()

    # -- configuration (any thread, any time) --------------------------------------------------
    def set_faults(self, faults: Iterable[Fault] | Fault = ()) -> None:
        mix = (faults,) if isinstance(faults, Fault) else tuple(faults)
        if not all(isinstance(f, Fault) for f in mix):
            raise TypeError("faults must be Fault objects")
        with self._lock:
            self._faults = mix

    def configure(self, **changes: Any) -> None:
        """Change any keyword option of the constructor but seed and upstream_timeout_s (lag_blocks,
        rate_limit_rps, quota_calls, max_batch, ...). A budget keeps the tokens it has (up to its new size);
        one switched on starts full; the quota keeps counting."""
        with self._lock:
            now = time.monotonic()
            self._refill(now)  # at the old rate, up to now
            old, self._opts = self._opts, dataclasses.replace(self._opts, **changes)
            if old.rate_limit_rps is None:
                self._tokens = self._opts.capacity
            self._tokens = min(self._tokens, self._opts.capacity)

    # -- accounting (any thread, any time) -----------------------------------------------------
    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def getlogs_ranges(self) -> list[tuple[int, int]]:
        """(fromBlock, toBlock) of every eth_getLogs whose complete, true answer reached the client."""
        return [c.params for c in self.calls(GETLOGS) if c.ok and isinstance(c.params, tuple)]

    @property
    def requests_seen(self) -> int:
        """HTTP requests received so far, including those still being answered."""
        with self._lock:
            return self._requests

    def received(self, method: str) -> int:
        """Calls of `method` received so far, refused ones included ("batch": batches): the ordinal of the
        latest, which Fault.at and Fault.after count. A test waits on it instead of on time."""
        with self._lock:
            return self._seen[method]

    def damage_counts(self) -> Counter[str]:
        """Damaged eth_getLogs answers served, per damage mode (an answer counts once per mode it has)."""
        return Counter(mode for c in self.calls(GETLOGS) if c.damage and c.status is not None for mode in set(c.damage))

    def damaged_answers(self) -> int:
        """Damaged eth_getLogs answers served (each call of a batch is an answer)."""
        return sum(1 for c in self.calls(GETLOGS) if c.damage and c.status is not None)

    def fault_counts(self) -> Counter[str]:
        """Injections per kind, counted per JSON-RPC call (a failed batch of 200 counts 200)."""
        return Counter(c.fault for c in self.calls() if c.fault is not None)

    def limit_answers(self) -> int:
        """Calls answered with a rate-limit refusal of the budget (whole or per item), per call."""
        with self._lock:
            return self._limit_answers

    def limit_requests(self) -> int:
        """HTTP requests with at least one call answered with a rate-limit refusal of the budget: a refused batch
        counts once, as the one answer its client learns from (against requests_seen)."""
        with self._lock:
            return self._limit_requests

    def budget_calls(self) -> int:
        """Calls let through the quota, batch caps and budget (each took a token when a budget is on)."""
        with self._lock:
            return sum(n for _, n in self._admitted)

    def first_request_at(self) -> float | None:
        """time.monotonic() when the first HTTP request arrived (None before any)."""
        with self._lock:
            return self._first_request_at

    def last_request_at(self) -> float | None:
        """time.monotonic() when the latest HTTP request arrived (None before any)."""
        with self._lock:
            return self._last_request_at

    def calls_per_second_max(self) -> int:
        """The most calls let through in any one-second window [t, t + 1 s): with a budget on, at most
        rate_limit_rps + burst."""
        with self._lock:
            admitted = list(self._admitted)
        best = in_window = start = 0
        for t, n in admitted:
            in_window += n
            while t - admitted[start][0] >= 1.0:
                in_window -= admitted[start][1]
                start += 1
            best = max(best, in_window)
        return best

    def reset(self, seed: int | None = None, *, limits: bool = False) -> None:
        """Forget the recorded calls and the accounting, call ordinals included (Fault.at counts from here),
        and reseed the RNG when given a seed. limits=True also refills the budget's bucket and starts the
        quota afresh."""
        with self._lock:
            self._calls.clear()
            self._seen.clear()
            self._limit_answers = self._limit_requests = 0
            self._admitted.clear()
            self._first_request_at = self._last_request_at = None
            if seed is not None:
                self._rng, self._seed = random.Random(seed), seed
            if limits:
                self._tokens, self._stamp = self._opts.capacity, time.monotonic()
                self._quota_used = 0

    def _record(self, seq: int, items: list[_Item], batch_size: int | None, status: int | None, path: str) -> None:
        calls = [
            Call(
                seq,
                it.method,
                it.range if it.range is not None else it.params,
                batch_size,
                it.fault,
                status,
                it.ok and status is not None,
                path,
                nth=it.nth,
                damage=it.damaged,
            )
            for it in items
        ]
        with self._lock:
            self._calls.extend(calls)
            self._limit_answers += sum(it.limited for it in items)
            self._limit_requests += int(any(it.limited for it in items))
        for c in calls:
            if c.fault is not None:
                log.debug(
                    "rpc proxy seq=%s method=%s params=%s fault=%s status=%s",
                    c.seq,
                    c.method,
                    c.params if c.method == GETLOGS else "-",
                    c.fault,
                    c.status,
                )

    def _hit(self, rate: float) -> bool:
        with self._lock:
            return self._rng.random() < rate

    # -- limits (quota, batch caps, budget) -----------------------------------------------------
    def _refill(self, now: float) -> None:
        """Bring the bucket up to `now` at the current rate. Under the lock."""
        rps = self._opts.rate_limit_rps
        if rps is not None:
            self._tokens = min(self._opts.capacity, self._tokens + (now - self._stamp) * rps)
        self._stamp = now

    def _admit(self, items: list[_Item], batch: bool) -> Reply | None:
        """Apply the quota, the batch caps and the budget, in that order: the answer refusing the whole
        request, or None when (some of) its calls go on; in items mode the calls past the budget are failed
        here, each with its own error."""
        request_id = None if batch else items[0].obj.get("id")
        with self._lock:
            opts, now = self._opts, time.monotonic()
            limited = False
            if opts.quota_calls is not None and self._quota_used >= opts.quota_calls:
                kind = opts.quota_kind
                reply = fault_reply(Fault(kind), request_id)
            elif batch and (
                opts.batch_off_kind is not None or (opts.max_batch is not None and len(items) > opts.max_batch)
            ):
                kind = opts.batch_off_kind or BATCH_CAPS[opts.batch_refusal]
                first_id = next(
                    (
                        it.obj["id"]
                        for it in items
                        if "id" in it.obj and "method" in it.obj and not isinstance(it.obj["id"], (dict, list))
                    ),
                    None,
                )  # geth: first call's
                reply = batch_refusal_reply(kind, first_id)
            else:
                admitted, wait_s = self._take_tokens(len(items), batch, opts, now)
                if admitted:
                    self._quota_used += admitted
                    self._admitted.append((now, admitted))
                if admitted == len(items):
                    return None
                if opts.rate_limit_mode == "items":  # a single request gets the item error in its envelope
                    refusal = Fault(opts.rate_limit_item_kind, retry_after_s=wait_s)
                    for it in items[admitted:]:
                        it.fail(refusal.kind, error_object(refusal), refusal.spec.status)
                        it.limited = True
                    return None
                kind, limited = opts.rate_limit_kind, True
                reply = fault_reply(Fault(kind, retry_after_s=wait_s), request_id)
        for it in items:
            it.fault, it.limited = kind, limited
            _resolve_range(it, None)
        return reply

    def _take_tokens(self, calls: int, batch: bool, opts: _Options, now: float) -> tuple[int, int]:
        """How many of `calls` the budget lets through now (all or none, or in items mode the first that
        fit), and the whole seconds until all would fit. Under the lock."""
        rps = opts.rate_limit_rps
        if rps is None:
            return calls, 0
        self._refill(now)
        if self._tokens >= calls:
            self._tokens -= calls
            return calls, 0
        admitted = min(calls, int(self._tokens)) if opts.rate_limit_mode == "items" and batch else 0
        self._tokens -= admitted
        return admitted, max(1, math.ceil((calls - admitted - self._tokens) / rps))

    # -- serving --------------------------------------------------------------------------------
    async def _upstream(self, payload: bytes) -> tuple[int, bytes, str]:
        assert self._session is not None
        try:
            async with self._session.post(
                self.upstream_url, data=payload, headers={"Content-Type": "application/json"}
            ) as resp:
                return resp.status, await resp.read(), resp.content_type
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("rpc proxy upstream failed: %r", exc)
            return 502, b"upstream unreachable", "text/plain"

    async def _head(self) -> int | None:
        _, body, _ = await self._upstream(_HEAD_CALL)
        try:
            return int(orjson.loads(body)["result"], 16)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        with self._lock:
            self._requests += 1
            seq, faults, opts = self._requests, self._faults, self._opts
            self._last_request_at = time.monotonic()
            if self._first_request_at is None:
                self._first_request_at = self._last_request_at
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        batch = isinstance(doc, list)
        objs = doc if batch else [doc]
        if not objs or not all(isinstance(o, dict) for o in objs):  # not JSON-RPC: let the node answer it
            status, body, ctype = await self._upstream(raw)
            self._record(seq, [_Item({}, "?", None)], None, status, request.path)
            return web.Response(status=status, body=body, content_type=ctype)
        items = [_Item(o, str(o.get("method")), o.get("params")) for o in objs]
        with self._lock:
            for it in items:
                self._seen[it.method] += 1
                it.nth = self._seen[it.method]
            if batch:
                self._seen["batch"] += 1
            batch_nth = self._seen["batch"] if batch else 0
        batch_size = len(items) if batch else None
        status: int | None = None
        try:
            response, status = await self._serve_items(request, raw, items, batch, batch_nth, faults, opts)
            return response
        finally:
            self._record(seq, items, batch_size, status, request.path)

    async def _serve_items(
        self,
        request: web.Request,
        raw: bytes,
        items: list[_Item],
        batch: bool,
        batch_nth: int,
        faults: tuple[Fault, ...],
        opts: _Options,
    ) -> tuple[web.StreamResponse, int | None]:
        """The answer to one HTTP request and its status (None: no answer was sent)."""
        refusal = self._admit(items, batch)
        if refusal is not None:
            return _response(refusal), refusal.status
        needs_head = any(it.method in _LAGGED_METHODS for it in items) if opts.lag_blocks else False
        needs_head |= any(
            block_number(f.get(k, "latest")) is None
            for f in map(_log_filter, items)
            if f is not None
            for k in ("fromBlock", "toBlock")
        )
        head = await self._head() if needs_head else None
        visible_head = max(0, head - opts.lag_blocks) if head is not None else None  # what "latest" means
        for it in items:
            _resolve_range(it, visible_head)
        # calls the budget refused (items mode) have their answer already; when none is left, nothing is drawn
        whole = self._draw_whole(faults, items, batch, batch_nth) if any(it.answer is None for it in items) else None
        reorder = whole is not None and whole.spec.action == "reorder"
        if reorder:  # the calls are still served (and drawn) one by one; only their answers' order changes
            whole = None
        truncate = False
        if whole is not None:
            for it in items:
                if not it.limited or whole.spec.action in (None, "reset"):  # else its refusal is still sent
                    it.fault, it.limited = whole.kind, False
            action = whole.spec.action
            if action == "reset":
                return _reset(request), None
            if action == "delay" and not await self._hold(request, whole.delay_s):
                return web.Response(status=204), None  # the client gave up; nobody reads this
            truncate = action == "truncate"
            if action is None:
                reply = fault_reply(whole, None if batch else items[0].obj.get("id"))
                return _response(reply), reply.status

        for it in items:
            if it.answer is None:
                self._prepare(it, faults, opts, visible_head, batch, batch_nth, draw=whole is None)

        forwarded = [it for it in items if it.answer is None]
        upstream_body, status, ctype = b"", 200, "application/json"
        if forwarded:
            if len(forwarded) == len(items) and all(it.forward is None for it in items):
                payload = raw  # untouched: the node sees exactly what the client sent
            else:
                calls = [it.forward or it.obj for it in forwarded]
                payload = orjson.dumps(calls if batch else calls[0])
            status, upstream_body, ctype = await self._upstream(payload)
            if not self._take_answers(forwarded, upstream_body, batch, opts):
                return web.Response(status=status, body=upstream_body, content_type=ctype), status
        if not batch and items[0].altered:
            status = items[0].status
        verbatim = (
            len(forwarded) == len(items)
            and not opts.strip_block_timestamp
            and not reorder
            and not any(it.altered for it in items)
        )
        answers = [it.answer for it in items if it.answer is not None]
        if reorder:
            answers.reverse()
            for it in items:
                it.fault = it.fault or "BATCH_ORDER"
        body = upstream_body if verbatim else orjson.dumps(answers if batch else items[0].answer)
        if truncate:
            body = body[: max(1, len(body) // 2)]  # valid HTTP, JSON cut off mid-way
            for it in items:
                it.ok = False
        return web.Response(status=status, body=body, content_type=ctype), status

    def _draw_whole(self, faults: tuple[Fault, ...], items: list[_Item], batch: bool, batch_nth: int) -> Fault | None:
        """The fault answering the whole request, if any (range caps, batch items and damage are drawn per
        call). A fault with `at` / `after` is eligible when one of its calls (or the batch) is selected."""
        for f in faults:
            if f.is_range_cap or (batch and f.batch_mode == "items") or f.kind == "DAMAGE":
                continue
            if f.spec.action == "reorder" and not batch:
                continue
            selected = (batch and "batch" in f.methods and f.selects(batch_nth)) or any(
                it.method in f.methods and f.selects(it.nth) for it in items
            )
            if selected and self._hit(f.rate):
                return f
        return None

    def _prepare(
        self,
        it: _Item,
        faults: tuple[Fault, ...],
        opts: _Options,
        visible_head: int | None,
        batch: bool,
        batch_nth: int,
        draw: bool,
    ) -> None:
        """Decide one call: a made-up answer (item fault, range cap, lag) or what to forward (and whether its
        answer gets damaged)."""
        for f in faults if draw else ():
            if it.method in f.methods:
                nth = it.nth
            elif batch and "batch" in f.methods:
                nth = batch_nth
            else:
                continue
            if not f.selects(nth):
                continue
            if f.kind == "DAMAGE":
                if it.method == GETLOGS and it.damage_by is None:
                    # seeded by the call's ordinal: the same calls damaged whatever order they arrive in
                    rng = random.Random(f"{self._seed}/{GETLOGS}/{it.nth}")
                    if rng.random() < f.rate:
                        it.damage_by = (f, rng)
                continue
            if f.spec.action == "reorder":
                continue
            if f.is_range_cap:
                if it.range is None or not self._hit(f.rate):
                    continue
                if f.over_blocks(*it.range):
                    suggestion = suggest_range(*it.range, f.caps()[0], None)
                    it.fail(f.kind, error_object(f, *it.range, suggestion), f.status or f.spec.status)
                    return
                if f.caps()[1] is not None:
                    it.deferred.append(f)
            elif batch and f.batch_mode == "items" and self._hit(f.rate):
                it.fail(f.kind, error_object(f))
                return
        if opts.lag_blocks and visible_head is not None:
            self._lag(it, opts, visible_head)

    def _lag(self, it: _Item, opts: _Options, lagged: int) -> None:
        answer = lagged_answer(
            it.method,
            it.obj.get("params"),
            it.range,
            lagged,
            getlogs_only=opts.getlogs_lag_only,
            getlogs=opts.lag_getlogs,
            block_lookup=opts.lag_block_lookup,
        )
        if answer is None:
            return
        if answer.params is not None:
            it.forward = {**it.obj, "params": answer.params}
            if answer.altered:
                it.fault, it.altered = "LAG", True
        elif answer.error is not None:
            it.fail(*answer.error)
        else:
            it.answer_with(answer.result)

    def _take_answers(self, forwarded: list[_Item], body: bytes, batch: bool, opts: _Options) -> bool:
        """Match the upstream's answers to the calls and apply result caps and stripping.
        False when the answer is not JSON-RPC we can pick apart (it is then passed on untouched)."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        answers = doc if batch else [doc]
        if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
            return False
        by_id: dict[Any, dict[str, Any]] = {}
        for a in answers:
            by_id.setdefault(orjson.dumps(a.get("id")), a)
        for it in forwarded:
            answer = by_id.get(orjson.dumps(it.obj.get("id"))) if batch else answers[0]
            it.answer = answer
            if answer is None or "result" not in answer:
                continue
            result = answer["result"]
            it.ok = not it.altered
            if it.method != GETLOGS or not isinstance(result, list):
                continue
            for f in it.deferred:
                if it.range is not None and f.over_logs(len(result)):
                    blocks = (int(log_["blockNumber"], 16) for log_ in result)
                    suggestion = suggest_range(*it.range, f.caps()[0], f.caps()[1], blocks)
                    it.fail(f.kind, error_object(f, *it.range, suggestion), f.status or f.spec.status)
                    it.ok = False
                    break
            else:
                if opts.strip_block_timestamp:
                    for log_ in result:
                        if isinstance(log_, dict):
                            log_.pop("blockTimestamp", None)
                if it.damage_by is not None:
                    damaged = damage_logs(result, *it.damage_by)
                    if damaged:
                        it.damaged = tuple(mode for _, mode in damaged)
                        it.fault, it.altered, it.ok = "DAMAGE", True, False
        return True

    async def _hold(self, request: web.Request, delay_s: float) -> bool:
        """Hold a request for delay_s (less if the proxy stops); True if the client still waits."""
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), delay_s)
        except TimeoutError:
            pass
        transport = request.transport
        return transport is not None and not transport.is_closing() and not self._stopping.is_set()


def _response(reply: Reply) -> web.Response:
    return web.Response(status=reply.status, body=reply.body, content_type=reply.content_type, headers=reply.headers)


def _reset(request: web.Request) -> web.Response:
    """Drop the connection with a TCP RST and no answer."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=204)  # never sent: the transport is gone
