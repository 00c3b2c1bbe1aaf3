"""EndpointPool (backfill/chain/endpoints.py): which endpoint goes next and what each one has taught us. Pure,
on a hand-driven clock; no network."""

from __future__ import annotations

import pytest

from backfill.chain.endpoints import COMPUTE_UNITS, PARK_S, PENALTY_MAX_S, PENALTY_MIN_S, Endpoint, EndpointPool


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pool_of(n: int, clock: Clock | None = None) -> tuple[EndpointPool, Clock]:
    clock = clock or Clock()
    return EndpointPool([f"http://node{i}" for i in range(n)], [f"ep{i}" for i in range(n)], clock=clock), clock


def labels(picks: list[Endpoint | None]) -> list[str | None]:
    return [ep.label if ep is not None else None for ep in picks]


def test_endpoints_keep_their_order_urls_and_labels():
    pool, _ = pool_of(3)
    assert [(ep.index, ep.url, ep.label) for ep in pool.endpoints] == [
        (0, "http://node0", "ep0"),
        (1, "http://node1", "ep1"),
        (2, "http://node2", "ep2"),
    ]


def test_pick_goes_round_robin_over_usable_endpoints():
    pool, _ = pool_of(3)
    assert labels([pool.pick() for _ in range(7)]) == ["ep0", "ep1", "ep2", "ep0", "ep1", "ep2", "ep0"]


def test_pick_skips_an_endpoint_cooling_down_until_its_cooldown_ends():
    pool, clock = pool_of(3)
    assert pool.failed(pool.endpoints[1], "Transient") == PENALTY_MIN_S
    assert labels([pool.pick() for _ in range(4)]) == ["ep0", "ep2", "ep0", "ep2"]
    clock.now += PENALTY_MIN_S
    assert pool.pick() is pool.endpoints[0]
    assert pool.pick() is pool.endpoints[1]  # cooled down: back in the turn


def test_pick_is_none_and_wait_s_says_how_long_while_every_endpoint_cools_down():
    pool, clock = pool_of(2)
    pool.failed(pool.endpoints[0], "Transient")  # 0.5 s
    pool.failed(pool.endpoints[1], "Transient")
    pool.failed(pool.endpoints[1], "Transient")  # 1 s
    assert pool.pick() is None
    assert pool.wait_s() == pytest.approx(PENALTY_MIN_S)
    clock.now += 0.2
    assert pool.wait_s() == pytest.approx(0.3)
    clock.now += 0.3
    assert pool.wait_s() == 0
    assert pool.pick() is pool.endpoints[0]


def test_pick_routes_around_endpoints_whose_known_head_is_below_the_block_needed():
    pool, _ = pool_of(3)
    pool.saw_head(pool.endpoints[0], 100)
    pool.saw_head(pool.endpoints[1], 200)  # ep2's head is unknown: it is not assumed behind
    assert labels([pool.pick(150) for _ in range(4)]) == ["ep1", "ep2", "ep1", "ep2"]
    assert labels([pool.pick(100) for _ in range(3)]) == ["ep0", "ep1", "ep2"]  # a head at the block serves it
    assert [ep.label for ep in pool.behind(150)] == ["ep0"]
    assert [ep.label for ep in pool.behind(250)] == ["ep0", "ep1"]
    pool.saw_head(pool.endpoints[2], 120)
    assert pool.pick(201) is None
    assert pool.wait_s() == 0  # none cooling down: the caller looks at the heads again


def test_pick_with_delays_takes_the_endpoint_whose_budget_lets_a_call_go_soonest():
    pool, _ = pool_of(3)
    delays = {0: 2.0, 1: 0.5, 2: 1.0}
    assert pool.pick(delay=lambda ep: delays[ep.index]) is pool.endpoints[1]
    delays[1] = 3.0
    assert pool.pick(delay=lambda ep: delays[ep.index]) is pool.endpoints[2]


def test_pick_with_delays_goes_round_robin_among_endpoints_ready_now():
    pool, _ = pool_of(3)
    asked: list[int] = []

    def ready(ep: Endpoint) -> float:
        asked.append(ep.index)
        return 0.0

    assert labels([pool.pick(delay=ready) for _ in range(4)]) == ["ep0", "ep1", "ep2", "ep0"]
    assert asked == [0, 1, 2, 0]  # the first one ready now is taken without asking the others


def test_pick_with_delays_breaks_ties_in_round_robin_order():
    pool, _ = pool_of(3)
    assert labels([pool.pick(delay=lambda ep: 1.0) for _ in range(4)]) == ["ep0", "ep1", "ep2", "ep0"]


def test_failure_penalty_doubles_up_to_its_cap_and_success_resets_it():
    pool, clock = pool_of(1)
    ep = pool.endpoints[0]
    cools = []
    for _ in range(10):
        cools.append(pool.failed(ep, "Transient"))
        clock.now = ep.cooldown_until
    assert cools == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, PENALTY_MAX_S, PENALTY_MAX_S, PENALTY_MAX_S]
    assert ep.errors["Transient"] == 10
    pool.ok(ep)
    assert ep.penalty_s == 0
    assert pool.failed(ep, "Transient") == PENALTY_MIN_S


def test_a_stated_retry_after_sets_the_cooldown_without_growing_the_penalty():
    pool, clock = pool_of(1)
    ep = pool.endpoints[0]
    assert pool.failed(ep, "Transient", retry_after_s=7.0) == 7.0
    assert ep.cooldown_until == clock.now + 7.0
    assert ep.penalty_s == 0
    assert pool.failed(ep, "Transient", retry_after_s=10 * PARK_S) == PARK_S  # capped at an hour
    assert pool.failed(ep, "Transient", retry_after_s=0) == PENALTY_MIN_S  # 0 states nothing: the penalty


def test_a_shorter_cooldown_does_not_cut_a_longer_one_short():
    pool, clock = pool_of(1)
    ep = pool.endpoints[0]
    pool.failed(ep, "Transient", retry_after_s=30.0)
    pool.failed(ep, "Transient")  # 0.5 s
    assert ep.cooldown_until == clock.now + 30.0
    assert not ep.available(clock.now + 29.9)
    assert ep.available(clock.now + 30.0)


def test_a_parked_endpoint_is_left_out_for_an_hour_and_reported_with_its_reason():
    pool, clock = pool_of(2)
    ep = pool.endpoints[0]
    pool.park(ep, "monthly capacity limit exceeded " + "x" * 300)
    assert ep.errors["quota"] == 1
    assert len(ep.parked_reason) == 200 and ep.parked_reason.startswith("monthly capacity limit exceeded")
    assert labels([pool.pick() for _ in range(3)]) == ["ep1", "ep1", "ep1"]
    snap = pool.snapshot()[0]
    assert snap["parked"] is True and snap["parked_reason"] == ep.parked_reason
    clock.now += PARK_S - 1
    assert pool.pick() is pool.endpoints[1]
    clock.now += 1
    assert pool.pick() is pool.endpoints[0]
    assert pool.snapshot()[0]["parked"] is False


def test_parking_is_at_most_an_hour_and_may_be_shorter():
    pool, clock = pool_of(1)
    ep = pool.endpoints[0]
    pool.park(ep, "quota", for_s=5 * PARK_S)
    assert ep.parked_until == clock.now + PARK_S
    pool.park(ep, "quota", for_s=90.0)  # what another process of the run found: the rest of its hour
    assert ep.parked_until == clock.now + 90.0


def test_wait_s_is_none_only_when_every_endpoint_is_parked():
    pool, _ = pool_of(2)
    pool.park(pool.endpoints[0], "quota")
    pool.failed(pool.endpoints[1], "Transient")
    assert pool.pick() is None
    assert pool.wait_s() == pytest.approx(PENALTY_MIN_S)  # the parked one does not count, the cooling one does
    pool.park(pool.endpoints[1], "quota")
    assert pool.wait_s() is None


def test_sent_counts_requests_and_estimated_compute_units():
    pool, _ = pool_of(1)
    ep = pool.endpoints[0]
    pool.sent(ep, ["eth_getLogs", "eth_blockNumber"])
    pool.sent(ep, ["eth_getBlockByNumber"] * 3)
    pool.sent(ep, ["eth_someUnpricedMethod"])
    assert ep.requests == 3
    assert ep.compute_units == COMPUTE_UNITS["eth_getLogs"] + COMPUTE_UNITS["eth_blockNumber"] + 3 * 16 + 20


def test_a_refused_range_is_remembered_as_its_stated_cap_or_the_size_refused():
    pool, _ = pool_of(1)
    ep = pool.endpoints[0]
    pool.refused_range(ep, 5000)
    assert ep.refused_blocks == 5000  # nothing stated: that size is refused
    pool.refused_range(ep, 4000, stated_blocks=2000)
    assert ep.refused_blocks == 2001  # it said 2000 is the most: 2001 and up are refused
    pool.refused_range(ep, 1000, stated_blocks=3000)
    assert ep.refused_blocks == 1000  # a statement above the size refused: the size refused
    pool.refused_range(ep, 8000)
    assert ep.refused_blocks == 1000  # the smallest refusal stands
    assert ep.errors["range"] == 4


def test_a_refusal_for_too_many_results_caps_no_range():
    pool, _ = pool_of(1)
    ep = pool.endpoints[0]
    pool.refused_range(ep, 500, stated_blocks=None, results_only=True)
    assert ep.refused_blocks is None
    assert ep.errors["range"] == 1


def test_an_accepted_range_at_or_above_the_known_cap_moves_it_up():
    pool, _ = pool_of(1)
    ep = pool.endpoints[0]
    pool.accepted_range(ep, 10_000)
    assert ep.refused_blocks is None  # no cap known: nothing to move
    pool.refused_range(ep, 2000)
    pool.accepted_range(ep, 1999)
    assert ep.refused_blocks == 2000
    pool.accepted_range(ep, 2500)
    assert ep.refused_blocks == 2501


def test_a_refused_batch_caps_the_calls_per_request_at_the_stated_size_or_half():
    pool, _ = pool_of(1)
    ep = pool.endpoints[0]
    assert pool.refused_batch(ep, 100) == 50
    assert pool.refused_batch(ep, 50, stated=10) == 10
    assert pool.refused_batch(ep, 10, stated=40) == 5  # a statement not below the size refused: half
    assert pool.refused_batch(ep, 40) == 5  # never raised by a refusal of a larger batch
    assert pool.refused_batch(ep, 2) == 1
    assert pool.refused_batch(ep, 1) == 1  # 1: single calls, never 0
    assert pool.refused_batch(ep, 5, stated=0) == 1
    assert ep.batch_cap == 1
    assert ep.errors["batch"] == 7


def test_accepted_batches_remember_the_largest():
    pool, _ = pool_of(1)
    ep = pool.endpoints[0]
    pool.accepted_batch(ep, 20)
    pool.accepted_batch(ep, 5)
    assert ep.batch_ok == 20


def test_snapshot_reports_each_endpoint_state():
    pool, clock = pool_of(2)
    a, b = pool.endpoints
    pool.sent(a, ["eth_getLogs"])
    pool.failed(a, "DamagedAnswer", retry_after_s=4.04)
    pool.saw_head(a, 1234)
    pool.refused_batch(a, 10)
    pool.refused_range(a, 3000)
    assert pool.snapshot() == [
        {
            "endpoint": "ep0",
            "requests": 1,
            "compute_units": COMPUTE_UNITS["eth_getLogs"],
            "errors": {"DamagedAnswer": 1, "batch": 1, "range": 1},
            "parked": False,
            "parked_reason": "",
            "cooling_s": 4.0,
            "head": 1234,
            "batch_cap": 5,
            "refused_blocks": 3000,
            "damaged": 1,
        },
        {
            "endpoint": "ep1",
            "requests": 0,
            "compute_units": 0,
            "errors": {},
            "parked": False,
            "parked_reason": "",
            "cooling_s": 0.0,
            "head": None,
            "batch_cap": None,
            "refused_blocks": None,
            "damaged": 0,
        },
    ]
    clock.now += 10
    assert pool.snapshot()[0]["cooling_s"] == 0.0
