"""Pacing properties (Hypothesis): for any sequence of requests, answers, refusals and provider hints over
simulated time, an endpoint's pace keeps what backfill.chain.pacing documents: a known plan is never exceeded (by
the rate, nor by the calls sent in any second beyond one second's burst), the rate stays between its floor and
the plan, it comes down only on a run of refusals and at most once a second, a batch of k calls costs k
tokens, and once refusals stop the rate climbs back to the plan.

Sends are counted by the times reserve() gives them (now + wait), in a sliding one-second window computed
here; callers send at once (several tasks at the same instant) or one after the other."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backfill.chain.pacing import FLOOR_RPS, HINT_MAX_S, STEP_MIN, Pace

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
START = 1_000.0


class Clock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


@dataclass(frozen=True)
class Request:
    gap_s: float  # after the previous request was handed out (0: another task asking at the same instant)
    calls: int  # the batch the caller wants (cut to batch_cap(), as the client does)
    outcome: str  # "served" | "refused" | "hint"
    hint_s: float
    rtt_s: float


def requests(outcomes: list[str], max_gap_s: float = 0.5) -> st.SearchStrategy[list[Request]]:
    request = st.builds(
        Request,
        st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.1, max_gap_s, 1.0, 3.0]),
        st.integers(1, 30),
        st.sampled_from(outcomes),
        st.sampled_from([0.1, 1.0, 2.0, 30.0, 1_000.0]),
        st.sampled_from([0.005, 0.05, 0.3]),
    )
    return st.lists(request, min_size=1, max_size=150)


@dataclass
class Run:
    sends: list[tuple[float, int]] = field(default_factory=list)  # (when it goes out, calls)
    rates: list[float | None] = field(default_factory=list)  # the rate after every call into the pace
    decreases: list[float] = field(default_factory=list)  # when the rate came down


def simulate(pace: Pace, clock: Clock, plan: list[Request], check=lambda pace: None) -> Run:
    """Hand out the requests; each is answered rtt_s after it goes out, answers delivered in time order."""
    run = Run()
    due: list[tuple[float, int, Request]] = []  # answers on their way

    def observe(before: float | None) -> None:
        run.rates.append(pace.rate)
        if before is not None and pace.rate is not None and pace.rate < before:
            run.decreases.append(clock.t)
        check(pace)

    def deliver(until: float) -> None:
        due.sort(key=lambda d: d[0])
        while due and due[0][0] <= until:
            at, calls, req = due.pop(0)
            clock.t = max(clock.t, at)
            before = pace.rate
            if req.outcome == "served":
                pace.served(calls)
            else:
                pace.limited(calls, req.hint_s if req.outcome == "hint" else None)
            observe(before)

    for req in plan:
        asked_at = clock.t + req.gap_s
        deliver(asked_at)
        clock.t = asked_at
        calls = min(req.calls, pace.batch_cap() or req.calls)
        before = pace.rate
        wait = pace.reserve(calls)
        assert wait >= 0
        observe(before)
        run.sends.append((clock.t + wait, calls))
        due.append((clock.t + wait + req.rtt_s, calls, req))
    deliver(math.inf)
    return run


def busiest_second(sends: list[tuple[float, int]]) -> int:
    """Most calls sent in any window [t, t + 1 s): a window's busiest placement starts at a send."""
    sends = sorted(sends)
    best = 0
    for i, (t, _) in enumerate(sends):
        best = max(best, sum(n for u, n in sends[i:] if u < t + 1.0 - 1e-9))
    return best


CEILINGS = st.sampled_from([0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 50.0])


@PROPERTY
@given(
    ceiling=CEILINGS,
    start=st.one_of(st.none(), st.sampled_from([0.3, 1.0, 4.0, 100.0])),
    plan=requests(["served", "served", "refused"]),
)
def test_a_known_plan_is_never_exceeded_and_the_rate_stays_between_floor_and_plan(ceiling, start, plan):
    clock = Clock()

    def within(pace: Pace) -> None:
        assert pace.rate is not None and FLOOR_RPS - 1e-9 <= pace.rate <= ceiling + 1e-9, pace.rate

    run = simulate(Pace(ceiling=ceiling, start=start, clock=clock), clock, plan, within)
    burst = max(1.0, ceiling)  # documented: a second's worth of calls, at least one
    assert busiest_second(run.sends) <= ceiling * 1.0 + burst + 1e-9, busiest_second(run.sends)


@PROPERTY
@example(ceiling=0.1, plan=[Request(0.0, 1, "refused", 0.1, 0.005)] * 3)  # three refusals once raised 0.1/s to 0.2/s
@given(ceiling=st.sampled_from([0.02, 0.05, 0.1, 0.15]), plan=requests(["served", "refused"]))
def test_a_plan_share_below_the_floor_is_not_exceeded(ceiling, plan):
    clock = Clock()

    def within(pace: Pace) -> None:
        assert pace.rate is not None and pace.rate <= ceiling + 1e-9, pace.rate

    simulate(Pace(ceiling=ceiling, clock=clock), clock, plan, within)


@PROPERTY
@example(
    ceiling=1.0,
    plan=[
        Request(0.0, 1, "hint", 30.0, 0.005),  # refused, "retry after 30 s"; then three
        Request(0.01, 1, "served", 0.1, 0.005),  # tasks ask at once during the hold (they
        Request(0.0, 1, "served", 0.1, 0.005),  # once all went out together at its end)
        Request(0.0, 1, "served", 0.1, 0.005),
    ],
)
@given(ceiling=CEILINGS, plan=requests(["served", "served", "refused", "hint"]))
def test_a_providers_hold_does_not_let_more_than_a_burst_out_at_its_end(ceiling, plan):
    clock = Clock()
    run = simulate(Pace(ceiling=ceiling, clock=clock), clock, plan)
    assert busiest_second(run.sends) <= ceiling * 1.0 + max(1.0, ceiling) + 1e-9, busiest_second(run.sends)


@PROPERTY
@given(ceiling=st.one_of(st.none(), CEILINGS), plan=requests(["served", "served", "refused", "hint"]))
def test_the_rate_comes_down_only_on_a_run_of_refusals_and_at_most_once_a_second(ceiling, plan):
    clock = Clock()
    recent: deque[bool] = deque(maxlen=20)  # the documented rule: 3 of the last 20 calls refused
    pace = Pace(ceiling=ceiling, clock=clock)
    served, limited = pace.served, pace.limited

    def on_served(calls: int = 1) -> None:
        recent.extend([False] * min(calls, 20))
        served(calls)

    def on_limited(calls: int = 1, hint_s: float | None = None) -> None:
        recent.extend([True] * min(calls, 20))
        before = pace.rate
        limited(calls, hint_s)
        if pace.rate is not None and (before is None or pace.rate < before):  # came down (or was first set)
            assert sum(recent) >= 3, list(recent)  # a stray refusal leaves the pace alone
            assert pace.rate is not None and pace.rate >= FLOOR_RPS - 1e-9

    pace.served, pace.limited = on_served, on_limited  # type: ignore[method-assign]
    run = simulate(pace, clock, plan)
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(run.decreases, run.decreases[1:])), run.decreases


@PROPERTY
@given(ceiling=CEILINGS, batches=st.lists(st.integers(1, 60), min_size=1, max_size=20))
def test_a_batch_of_k_calls_costs_k_tokens(ceiling, batches):
    """From a full bucket, batches asked for at one instant go out when the calls before them, plus their own,
    have been paid for at the plan's rate beyond one second's burst."""
    clock = Clock()
    pace = Pace(ceiling=ceiling, clock=clock)
    burst = max(1.0, ceiling)
    total = 0
    for k in batches:
        total += k
        assert pace.reserve(k) == pytest.approx(max(0.0, (total - burst) / ceiling), abs=1e-9)


@PROPERTY
@given(ceiling=st.sampled_from([0.5, 1.0, 2.0, 5.0, 10.0, 20.0]), plan=requests(["served", "refused", "hint"]))
def test_once_refusals_stop_the_rate_climbs_back_to_the_plan(ceiling, plan):
    """Additive increase: after any history, a caller that always has work (it waits for the bucket) and is never
    refused gains at least STEP_MIN calls/s each second, up to the plan, and the rate never comes down."""
    clock = Clock()
    pace = Pace(ceiling=ceiling, clock=clock)
    simulate(pace, clock, plan)
    clock.t += HINT_MAX_S + 1  # past any hold
    assert pace.rate is not None
    low = pace.rate
    windows = math.ceil((ceiling - low) / STEP_MIN) + 2  # saturated seconds needed, with one to spare
    deadline = clock.t + windows * max(1.0, 1.0 / FLOOR_RPS) + 1.0
    rates = [pace.rate]
    while pace.rate < ceiling and clock.t < deadline:
        clock.t += pace.reserve(1)
        pace.served(1)
        clock.t += 0.001
        rates.append(pace.rate)
    assert pace.rate == pytest.approx(ceiling), (low, pace.rate, clock.t - deadline)
    assert rates == sorted(rates)
