"""How fast to call one endpoint: a token bucket whose rate adapts to the provider's limit. Pure, clock injected.

A rate-limit answer (429, -32005 "request rate exceeded", -32007, -32012, ...) is a pacing signal, not ill
health. Each endpoint gets one `Pace` per process:

- **unknown limit** (no `ceiling`): no pacing at all until the first limit answer; then the rate starts at
  what was actually sent in the last second, cut by DECREASE;
- **known plan** (`ceiling`, this process's share of `rpc_max_rps`: the plan divided among the workers that
  share the endpoint): the rate starts there and never goes above it (a plan the operator states is trusted;
  only a provider's limit answer brings it lower);
- **learnt before** (`start`, what an earlier process of the run learnt, backfill.chain.pace_memory): the rate
  starts there instead of unpaced;
- **multiplicative decrease**: when LIMITED_OF_RECENT of the last RECENT_CALLS calls were refused, the rate
  comes down to DECREASE x min(rate, sent in the last second), at most once per second (the answers to
  requests already in flight say the same thing again). A stray refusal does not count: load-balanced
  providers answer an occasional 429 whatever the rate, and slowing down for each would end at a crawl;
- **additive increase**: a second in which calls had to wait for the bucket and at most CALM_SHARE of them
  were refused raises the rate by max(STEP_MIN, STEP_FRACTION x rate): the limit is probed again slowly, so a provider whose
  plan was upgraded, or a fleet that lost a worker, is used fully again;
- a provider's hint (Retry-After, Infura's backoff_seconds) holds every call until it has passed.

A JSON-RPC batch of k calls costs k tokens, as providers bill it; `batch_cap` says how many calls one request
may carry at the current rate (half a second's budget: a batch larger than the provider's window can never be
served, and one nearly as large only when nothing went before it). Calls that must
wait are counted (`waits`, `waited_s`) for the status view and the logs.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

DECREASE = 0.75  # rate after a limit answer, as a fraction of what was being sent
STEP_MIN, STEP_FRACTION = 0.5, 0.05  # calls/s added per saturated second without a limit answer
FLOOR_RPS = 0.2  # never slower than a call every 5 s: progress, however slow
WINDOW_S = 1.0  # the providers' accounting window: budgets are stated per second
HINT_MAX_S = 300.0  # longest provider hint honoured before calls resume
BATCH_SHARE = 0.5  # a batch carries at most this share of a second's budget
RECENT_CALLS, LIMITED_OF_RECENT = 20, 3  # the rate comes down when 3 of the last 20 calls were refused
CALM_SHARE = 0.05  # and goes up after a saturated second in which at most this share of calls was refused


class Pace:
    def __init__(
        self, ceiling: float | None = None, start: float | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.clock = clock
        self.ceiling = ceiling if ceiling and ceiling > 0 else None
        # calls per second; None = not limited (yet). A known plan starts at this process's share of it.
        self.rate: float | None = self.ceiling
        if start and start > 0:
            self.rate = min(start, self.ceiling) if self.ceiling else start
        self._tokens = self._burst()
        self._refilled = clock()
        self._sent: deque[tuple[float, int]] = deque()  # (time, calls) of the last WINDOW_S
        self._hold_until = 0.0  # a provider's hint
        self._window_start = clock()
        self._window_saturated = False
        self._window_calls = self._window_refused = 0  # calls answered / refused in this window
        self._last_decrease = float("-inf")
        self._recent: deque[bool] = deque(maxlen=RECENT_CALLS)  # the last calls' outcomes: True = refused
        self.limit_answers = 0  # calls refused by a limit answer
        self.waits = 0  # requests that had to wait for the bucket (or a hint)
        self.waited_s = 0.0

    def _burst(self) -> float:
        """A second's worth of calls (at least one): bursts never exceed what the provider's window admits."""
        return max(1.0, self.rate * WINDOW_S) if self.rate is not None else 0.0

    def _refill(self, now: float) -> None:
        """The bucket as of `now`. It may already be reckoned as of a later time (calls reserved during a hold
        are paid for from the hold's end): then there is nothing to add."""
        if now <= self._refilled:
            return
        if self.rate is not None:
            self._tokens = min(self._burst(), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now

    def _floor(self) -> float:
        """The slowest pace: a call every 5 s, or the plan's share when that is slower (never above the plan)."""
        return min(FLOOR_RPS, self.ceiling) if self.ceiling is not None else FLOOR_RPS

    def _roll(self, now: float) -> None:
        """Close the accounting window: raise the rate after a saturated second with no limit answer."""
        if now - self._window_start < WINDOW_S:
            return
        calm = self._window_refused <= CALM_SHARE * max(1, self._window_calls)
        if self.rate is not None and self._window_saturated and calm:
            self.rate += max(STEP_MIN, STEP_FRACTION * self.rate)
            if self.ceiling is not None:
                self.rate = min(self.rate, self.ceiling)
        self._window_start = now
        self._window_saturated = False
        self._window_calls = self._window_refused = 0

    def sent_last_second(self, now: float | None = None) -> int:
        now = self.clock() if now is None else now
        while self._sent and self._sent[0][0] <= now - WINDOW_S:
            self._sent.popleft()
        return sum(n for _, n in self._sent)

    # -- asking ---------------------------------------------------------------------------------------------
    def delay(self, calls: int = 1) -> float:
        """Seconds until `calls` calls could go out, without reserving them."""
        now = self.clock()
        start = max(now, self._hold_until)  # nothing goes out before a provider's hold ends
        if self.rate is None:
            return start - now
        tokens = self._tokens
        if start > self._refilled:
            tokens = min(self._burst(), tokens + (start - self._refilled) * self.rate)
        return start - now + ((calls - tokens) / self.rate if tokens < calls else 0.0)

    def reserve(self, calls: int = 1) -> float:
        """Take `calls` tokens now; the seconds to wait before sending them (0 when there is budget)."""
        now = self.clock()
        self._roll(now)
        start = max(now, self._hold_until)  # during a hold, calls are paced from its end, not let out together
        wait = start - now
        self._refill(start)
        if self.rate is not None:
            self._tokens -= calls
            if self._tokens < 0:
                wait += -self._tokens / self.rate
        if wait > 0:
            self.waits += 1
            self.waited_s += wait
            self._window_saturated = True
        self._sent.append((now + wait, calls))
        return wait

    def batch_cap(self) -> int | None:
        """Most calls one request may carry at the current rate (None: no limit known): half a second's worth,
        so that a batch fits the provider's window even when the calls before it have not quite drained."""
        return max(1, int(self.rate * WINDOW_S * BATCH_SHARE)) if self.rate is not None else None

    # -- what the provider said ------------------------------------------------------------------------------
    def served(self, calls: int = 1) -> None:
        """`calls` calls were answered (not refused for the rate)."""
        self._recent.extend([False] * min(calls, RECENT_CALLS))
        self._window_calls += calls

    def limited(self, calls: int = 1, hint_s: float | None = None) -> None:
        """A limit answer refused `calls` calls; `hint_s` is the provider's Retry-After / backoff, if any."""
        now = self.clock()
        self._roll(now)
        self.limit_answers += calls
        self._window_calls += calls
        self._window_refused += calls
        if hint_s is not None and hint_s > 0:
            self._hold_until = max(self._hold_until, now + min(hint_s, HINT_MAX_S))
        self._recent.extend([True] * min(calls, RECENT_CALLS))
        if sum(self._recent) < LIMITED_OF_RECENT:
            return  # a stray refusal (a busy node behind a load balancer) is no sign of the rate: retry, same pace
        if now - self._last_decrease < WINDOW_S:
            return  # the other answers to one burst carry no news
        self._last_decrease = now
        sent = max(1, self.sent_last_second(now))
        base = sent if self.rate is None else min(self.rate, sent)
        self.rate = max(self._floor(), base * DECREASE)
        self._refill(now)
        self._tokens = min(self._tokens, 0.0)  # what was in the bucket is spent: the provider said so

    def snapshot(self) -> dict:
        now = self.clock()
        return {
            "rps": round(self.rate, 2) if self.rate is not None else None,
            "limit_answers": self.limit_answers,
            "waits": self.waits,
            "waited_s": round(self.waited_s, 1),
            "held_s": round(max(0.0, self._hold_until - now), 1),
        }
