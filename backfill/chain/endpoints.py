"""Endpoint health: which RPC endpoint to use next, and what each has taught us. Pure state, clock injected.

- round-robin over endpoints that are neither cooling down nor parked (and whose known head reaches the
  blocks we need), preferring the one whose budget (backfill.chain.pacing) lets a call go soonest;
- a failure cools an endpoint down with a penalty that doubles per consecutive failure (0.5 s … 60 s) and
  resets on success; a rate limit is not a failure: it only slows the endpoint's pace (the RPC client);
- a quota answer (402, monthly / daily cap, disabled key) parks the endpoint for an hour and is reported;
- the largest eth_getLogs range an endpoint accepted / refused is remembered, so a known cap costs no request;
  likewise the most calls it takes in one JSON-RPC batch (1: it refuses batches; single calls are sent);
- accounting per endpoint: requests, errors by class, estimated compute units.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

# Estimated compute units per method (Alchemy's published table; other providers price similarly).
COMPUTE_UNITS = {"eth_getLogs": 75, "eth_getBlockByNumber": 16, "eth_blockNumber": 10, "eth_chainId": 0}
PARK_S = 3600.0
PENALTY_MIN_S, PENALTY_MAX_S = 0.5, 60.0


@dataclass
class Endpoint:
    url: str
    index: int
    label: str
    cooldown_until: float = 0.0
    penalty_s: float = 0.0
    parked_until: float = 0.0
    parked_reason: str = ""
    head: int | None = None
    refused_blocks: int | None = None  # smallest getLogs range it refused
    batch_cap: int | None = None  # most calls per JSON-RPC batch it accepts (1 = no batches); None = unknown
    batch_ok: int = 0  # the largest batch it answered in full
    requests: int = 0
    compute_units: int = 0
    errors: Counter = field(default_factory=Counter)

    def available(self, now: float) -> bool:
        return now >= self.cooldown_until and now >= self.parked_until

    def snapshot(self, now: float) -> dict:
        return {
            "endpoint": self.label,
            "requests": self.requests,
            "compute_units": self.compute_units,
            "errors": dict(self.errors),
            "parked": now < self.parked_until,
            "parked_reason": self.parked_reason,
            "cooling_s": round(max(0.0, self.cooldown_until - now), 1),
            "head": self.head,
            "batch_cap": self.batch_cap,
            "refused_blocks": self.refused_blocks,
            "damaged": self.errors["DamagedAnswer"],
        }


class EndpointPool:
    def __init__(
        self, urls: list[str] | tuple[str, ...], labels: list[str], clock: Callable[[], float] = time.monotonic
    ):
        self.endpoints = [Endpoint(u, i, labels[i]) for i, u in enumerate(urls)]
        self.clock = clock
        self._next = 0

    def pick(self, need_block: int | None = None, delay: Callable[[Endpoint], float] | None = None) -> Endpoint | None:
        """The next usable endpoint in round-robin order, skipping those known to be behind `need_block`; with
        `delay` (seconds until the endpoint's budget lets a call go), the soonest one, round-robin among equals."""
        now = self.clock()
        n = len(self.endpoints)
        best, best_delay = None, float("inf")
        for i in range(n):
            ep = self.endpoints[(self._next + i) % n]
            if not ep.available(now):
                continue
            if need_block is not None and ep.head is not None and ep.head < need_block:
                continue  # routed around: it would answer short or empty
            wait = delay(ep) if delay is not None else 0.0
            if wait < best_delay:
                best, best_delay = ep, wait
            if wait <= 0:
                break
        if best is not None:
            self._next = (best.index + 1) % n
        return best

    def wait_s(self) -> float | None:
        """Seconds until some endpoint is usable again; None when every endpoint is parked."""
        now = self.clock()
        waits = [max(0.0, ep.cooldown_until - now) for ep in self.endpoints if now >= ep.parked_until]
        return min(waits) if waits else None

    def behind(self, need_block: int) -> list[Endpoint]:
        return [ep for ep in self.endpoints if ep.head is not None and ep.head < need_block]

    # -- what happened --------------------------------------------------------------------
    def sent(self, ep: Endpoint, methods: list[str]) -> None:
        ep.requests += 1
        ep.compute_units += sum(COMPUTE_UNITS.get(m, 20) for m in methods)

    def ok(self, ep: Endpoint) -> None:
        ep.penalty_s = 0.0

    def failed(self, ep: Endpoint, kind: str, retry_after_s: float | None = None) -> float:
        """Cool the endpoint down; returns for how long."""
        ep.errors[kind] += 1
        if retry_after_s is not None and retry_after_s > 0:
            cool = min(retry_after_s, PARK_S)
        else:
            ep.penalty_s = min(PENALTY_MAX_S, max(PENALTY_MIN_S, ep.penalty_s * 2))
            cool = ep.penalty_s
        ep.cooldown_until = max(ep.cooldown_until, self.clock() + cool)
        return cool

    def park(self, ep: Endpoint, reason: str, for_s: float = PARK_S) -> None:
        ep.errors["quota"] += 1
        ep.parked_until = self.clock() + min(for_s, PARK_S)
        ep.parked_reason = reason[:200]

    def saw_head(self, ep: Endpoint, head: int) -> None:
        ep.head = head

    def refused_range(
        self, ep: Endpoint, n_blocks: int, stated_blocks: int | None = None, results_only: bool = False
    ) -> None:
        """It refused n_blocks; when it stated its limit, every range above that is known to be refused. A refusal
        for the number of results (results_only) caps no range: a sparser stretch of the same size passes."""
        ep.errors["range"] += 1
        if results_only:
            return
        refused = n_blocks if stated_blocks is None or stated_blocks >= n_blocks else stated_blocks + 1
        ep.refused_blocks = refused if ep.refused_blocks is None else min(ep.refused_blocks, refused)

    def accepted_batch(self, ep: Endpoint, n_calls: int) -> None:
        ep.batch_ok = max(ep.batch_ok, n_calls)

    def refused_batch(self, ep: Endpoint, n_calls: int, stated: int | None = None) -> int:
        """It refused a batch of n_calls: the most it takes from now on (its stated cap, else half)."""
        ep.errors["batch"] += 1
        cap = stated if stated is not None and 0 < stated < n_calls else max(1, n_calls // 2)
        ep.batch_cap = cap if ep.batch_cap is None else min(ep.batch_cap, cap)
        return ep.batch_cap

    def accepted_range(self, ep: Endpoint, n_blocks: int) -> None:
        if ep.refused_blocks is not None and n_blocks >= ep.refused_blocks:
            ep.refused_blocks = n_blocks + 1  # the cap moved up (limits drift)

    def snapshot(self) -> list[dict]:
        now = self.clock()
        return [ep.snapshot(now) for ep in self.endpoints]
