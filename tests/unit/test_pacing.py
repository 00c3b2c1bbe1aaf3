"""The endpoint pace (backfill.chain.pacing): a token bucket whose rate comes down on limit answers and goes up slowly.

A simulated provider with a per-second budget is driven with a fake clock: the pace must converge under the
limit, keep most of the budget in use and refuse few calls, whatever it started from."""

from __future__ import annotations

import pytest

from backfill.chain.pacing import FLOOR_RPS, Pace


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Provider:
    """A per-key budget as providers state it: a token bucket of `rps` refilled continuously, capacity one
    second's worth. A request of k calls that does not fit is refused whole and costs nothing."""

    def __init__(self, rps: float, clock: Clock):
        self.rps, self.clock = rps, clock
        self.tokens, self.at = rps, clock()
        self.served = self.refused = 0

    def ask(self, calls: int) -> bool:
        now = self.clock()
        self.tokens = min(self.rps, self.tokens + (now - self.at) * self.rps)
        self.at = now
        if self.tokens >= calls:
            self.tokens -= calls
            self.served += calls
            return True
        self.refused += calls
        return False


def drive(paces: list[Pace], provider: Provider, clock: Clock, seconds: float, calls: int = 1) -> None:
    """Each pace sends back-to-back requests of `calls` calls, waiting what its reserve() says (round trip 10 ms)."""
    due = [clock.t] * len(paces)
    end = clock.t + seconds
    while clock.t < end:
        i = min(range(len(paces)), key=lambda k: due[k])
        clock.t = max(clock.t, due[i])
        wait = paces[i].reserve(calls)
        clock.t += wait
        if provider.ask(calls):
            paces[i].served(calls)
        else:
            paces[i].limited(calls)
        due[i] = clock.t + 0.01


def test_unknown_limit_is_not_paced_until_the_provider_says_so():
    clock = Clock()
    pace = Pace(clock=clock)
    assert [pace.reserve() for _ in range(100)] == [0.0] * 100
    assert pace.batch_cap() is None and pace.rate is None


def test_first_limit_answer_sets_the_rate_from_what_was_sent():
    clock = Clock()
    pace = Pace(clock=clock)
    for _ in range(40):
        pace.reserve()
        clock.t += 0.025  # 40 calls/s
    pace.limited()
    assert pace.rate is None  # one refusal alone may be a busy node: not yet a sign of the rate
    pace.limited(2)
    assert pace.rate == pytest.approx(40 * 0.75, rel=0.05)
    assert pace.batch_cap() == int(pace.rate / 2)  # half a second's budget per request


def test_answers_of_one_burst_cut_the_rate_once():
    clock = Clock()
    pace = Pace(ceiling=20, clock=clock)
    for _ in range(20):
        pace.reserve()
    for _ in range(10):
        pace.limited()
    assert pace.rate == pytest.approx(15)  # once, not ten times
    assert pace.limit_answers == 10


@pytest.mark.parametrize("limit", [10, 25, 100])
def test_converges_under_an_unknown_limit_and_keeps_the_budget_busy(limit):
    clock = Clock()
    provider = Provider(limit, clock)
    pace = Pace(clock=clock)
    drive([pace], provider, clock, seconds=60)
    assert provider.served >= 0.8 * limit * 60
    assert provider.refused <= 0.10 * (provider.served + provider.refused)


def test_two_processes_share_one_limit():
    clock = Clock()
    provider = Provider(10, clock)
    paces = [Pace(clock=clock), Pace(clock=clock)]
    drive(paces, provider, clock, seconds=120)
    assert provider.served >= 0.8 * 10 * 120
    assert provider.refused <= 0.15 * (provider.served + provider.refused)
    assert all(p.rate is not None and p.rate < 10 for p in paces)


def test_batches_never_exceed_a_seconds_budget_and_still_progress():
    clock = Clock()
    provider = Provider(10, clock)
    pace = Pace(clock=clock)
    drive([pace], provider, clock, seconds=5, calls=1)
    cap = pace.batch_cap()
    assert cap is not None and 1 <= cap <= 10
    drive([pace], provider, clock, seconds=30, calls=cap)
    assert provider.served >= 0.7 * 10 * 30


def test_a_known_plan_is_shared_and_never_exceeded():
    clock = Clock()
    pace = Pace(ceiling=20, start=10, clock=clock)
    assert pace.rate == 10
    for _ in range(2000):  # always saturated, never refused
        clock.t += pace.reserve()
    assert pace.rate == 20


def test_provider_hint_holds_every_call():
    clock = Clock()
    pace = Pace(ceiling=100, clock=clock)
    pace.limited(hint_s=30)
    assert pace.delay() == pytest.approx(30)
    assert pace.reserve() == pytest.approx(30)
    assert pace.waits == 1


def test_stray_refusals_of_a_busy_node_do_not_slow_the_pace_to_a_crawl():
    """A provider that refuses 5 % of calls at random, whatever the rate: the pace gives up some speed (the
    refusals look like a limit now and then) but settles far above the floor instead of sliding down to it."""
    import random

    clock = Clock()
    rng = random.Random(4)
    pace = Pace(ceiling=40, clock=clock)
    for _ in range(4000):
        clock.t += pace.reserve()
        if rng.random() < 0.05:
            pace.limited()
        else:
            pace.served()
    assert pace.rate >= 10


def test_never_slower_than_the_floor():
    clock = Clock()
    pace = Pace(ceiling=5, clock=clock)
    for _ in range(100):
        pace.reserve()
        pace.limited()
        clock.t += 1.5
    assert pace.rate == pytest.approx(FLOOR_RPS)
    assert pace.batch_cap() == 1


def test_what_one_process_learnt_reaches_the_next_without_the_url(tmp_path, monkeypatch):
    from backfill.chain import pace_memory

    path = tmp_path / "backfill" / "endpoints.json"
    url = "https://eth.example/v2/sEcReTkEy0123456789"
    key = pace_memory.endpoint_key(url)
    pace_memory.write(path, {key: {"rps": 9.5, "batch_cap": 1, "refused_blocks": None}})
    pace_memory.write(path, {key: {"rps": 7.0}})  # a later process merges, keeps what it did not learn
    assert pace_memory.read(path)[key]["rps"] == 7.0 and pace_memory.read(path)[key]["batch_cap"] == 1
    assert "sEcReTkEy" not in path.read_text() and "eth.example" not in path.read_text()
    later = pace_memory.time.time() + pace_memory.MAX_AGE_S + 1
    monkeypatch.setattr(pace_memory.time, "time", lambda: later)
    assert pace_memory.read(path) == {}  # too old to trust: plans change


def test_nothing_learnt_writes_nothing(tmp_path):
    from backfill.chain import pace_memory

    path = tmp_path / "backfill" / "endpoints.json"
    pace_memory.write(path, {"k": {"rps": None, "batch_cap": None}})
    assert not path.parent.exists()


def test_a_new_start_does_not_inherit_a_parked_endpoint(tmp_path):
    from backfill.chain import pace_memory

    path = tmp_path / "endpoints.json"
    pace_memory.write(path, {"k": {"rps": 5.0, "parked_until": pace_memory.time.time() + 600, "parked_reason": "402"}})
    pace_memory.forget_parking(path)
    assert pace_memory.read(path)["k"] == {"rps": 5.0, "at": pace_memory.read(path)["k"]["at"]}
