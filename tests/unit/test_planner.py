"""Day planner on synthetic timestamp sequences: uneven block times, days with no block, the safe head."""

import datetime as dt
import random

from backfill.chain.planner import DAY_S, BoundarySearch, build_plan, day_targets, midnight_ts, range_problem
from workers.windows import Segment, day_segments, owned, pack_windows, ranges

D0 = dt.date(2024, 1, 1)
T0 = midnight_ts(D0)


def search(timestamps, targets):
    s = BoundarySearch(targets, len(timestamps) - 1)
    rounds = 0
    while not s.done:
        s.feed({n: timestamps[n] for n in s.pending()})
        rounds += 1
    return s.result(), rounds


def brute(timestamps, target):
    return next((i for i, t in enumerate(timestamps) if t >= target), len(timestamps))


def plan_for(timestamps, first, last, safe_head=None):
    safe_head = len(timestamps) - 1 if safe_head is None else safe_head
    boundaries, _ = search(timestamps[: safe_head + 1], day_targets(first, last))
    return build_plan(first, first, last, boundaries, safe_head)


def test_boundaries_equal_brute_force_on_uneven_block_times():
    rng = random.Random(3)
    ts, t = [], T0 - 3600
    for _ in range(20_000):
        t += rng.choice([1, 2, 12, 13, 60, 600, 3000])
        ts.append(t)
    targets = day_targets(D0, D0 + dt.timedelta(days=(ts[-1] - T0) // DAY_S))
    got, rounds = search(ts, targets)
    assert got == [brute(ts, x) for x in targets]
    assert rounds <= 16  # all days searched together: ~log2(blocks) batched rounds


def test_each_block_lands_in_its_utc_day():
    rng = random.Random(5)
    ts, t = [], T0 - 100
    for _ in range(5_000):
        t += rng.randint(1, 400)
        ts.append(t)
    last = D0 + dt.timedelta(days=(ts[-1] - T0) // DAY_S - 1)
    plans = plan_for(ts, D0, last)
    covered = []
    for p in plans:
        for n in range(p.start_block, p.end_block + 1):
            assert midnight_ts(p.day) <= ts[n] < midnight_ts(p.day) + DAY_S
        covered.extend(range(p.start_block, p.end_block + 1))
    assert covered == list(range(plans[0].start_block, plans[-1].end_block + 1))  # no gap, no overlap


def test_day_without_blocks_is_empty():
    # blocks every hour on day 0, nothing on day 1, blocks again on day 2
    ts = [T0 + h * 3600 for h in range(24)] + [T0 + 2 * DAY_S + h * 3600 for h in range(24)]
    plans = plan_for(ts, D0, D0 + dt.timedelta(days=2))
    assert [(p.start_block, p.end_block, p.n_blocks) for p in plans] == [(0, 23, 24), (24, 23, 0), (24, 47, 24)]


def test_last_day_stops_at_safe_head():
    ts = [T0 + m * 60 for m in range(2 * 24 * 60)]  # two full days, a block a minute
    plans = plan_for(ts, D0, D0 + dt.timedelta(days=1), safe_head=2000)
    assert plans[0].end_block == 1439 and not plans[0].clipped
    assert plans[1].start_block == 1440 and plans[1].end_block == 2000 and plans[1].clipped


def test_days_before_genesis_have_no_blocks():
    ts = [T0 + DAY_S + 10 * i for i in range(100)]
    plans = plan_for(ts, D0, D0 + dt.timedelta(days=1))
    assert plans[0].n_blocks == 0 and plans[1].start_block == 0


def test_dates_are_planned_only_between_the_genesis_day_and_the_safe_heads_day():
    genesis, head_ts = T0 - 3600, T0 + 9 * DAY_S + DAY_S - 2  # 2023-12-31 23:00, 2024-01-10 23:59:58
    ok = lambda f, t: range_problem(f, t, genesis, 20001, 20001, head_ts, 0)  # noqa: E731
    assert ok(dt.date(2023, 12, 31), dt.date(2024, 1, 10)) is None  # the genesis day and the head's (clipped) day
    assert ok(dt.date(2024, 1, 10), None) is None
    assert ok(dt.date(2019, 1, 1), dt.date(2024, 1, 2)) == (
        "--from 2019-01-01 is before the chain's first block (genesis 2023-12-31 23:00:00 UTC)"
    )
    assert ok(D0, dt.date(2030, 1, 1)) == (
        "--to 2030-01-01 is after the chain's head (block 20001, 2024-01-10 23:59:58 UTC)"
    )
    assert ok(dt.date(2024, 1, 11), None) == (
        "--from 2024-01-11 is after the chain's head (block 20001, 2024-01-10 23:59:58 UTC)"
    )
    assert range_problem(D0, dt.date(2024, 1, 11), genesis, 20013, 20001, head_ts, 12) == (
        "--to 2024-01-11 is after the chain's safe head (block 20001 = head 20013 - 12 confirmations, "
        "2024-01-10 23:59:58 UTC)"
    )
    assert range_problem(dt.date(2019, 1, 1), None, None, 5, 5, head_ts, 0) is None  # no genesis time known
    assert range_problem(None, None, genesis, 20001, 20001, head_ts, 0) is None  # resume the stored plan


def test_day_idx_counts_from_the_anchor():
    ts = [T0 + 3600 * h for h in range(24 * 5)]
    boundaries, _ = search(ts, day_targets(D0 + dt.timedelta(days=2), D0 + dt.timedelta(days=3)))
    plans = build_plan(D0, D0 + dt.timedelta(days=2), D0 + dt.timedelta(days=3), boundaries, len(ts) - 1)
    assert [p.day_idx for p in plans] == [2, 3]


def test_segments_resume_from_next_block_and_cover_the_rest_once():
    ts = [T0 + 10 * i for i in range(8000)]
    (plan,) = plan_for(ts, D0, D0)
    full = day_segments(plan, plan.start_block, 1000)
    assert full[0].start == 0 and full[-1].end == plan.end_block and full[-1].last_of_day
    assert not any(s.last_of_day for s in full[:-1])
    resumed = day_segments(plan, 2500, 1000)
    assert resumed[0].start == 2500 and sum(s.n_blocks for s in resumed) == plan.end_block - 2500 + 1
    assert day_segments(plan, plan.end_block + 1, 1000) == []


def test_small_days_pack_into_one_window_and_big_days_split():
    segs = [
        Segment(0, 0, 99, True),
        Segment(2, 200, 299, True),
        Segment(4, 400, 449, True),
        Segment(6, 600, 1599, False),
        Segment(6, 1600, 1700, True),
    ]
    windows = pack_windows(segs, 1000)
    assert [[s.day_idx for s in w.segments] for w in windows] == [[0, 2, 4], [6], [6]]
    assert all(w.n_blocks <= 1000 for w in windows)
    assert [s for w in windows for s in w.segments] == segs  # order kept, nothing lost


def test_ranges_and_ownership():
    assert ranges(10, 25, 5) == [(10, 14), (15, 19), (20, 24), (25, 25)]
    assert ranges(5, 4, 3) == []
    shards = 3
    assert sorted(d for k in range(shards) for d in range(30) if owned(d, k, shards)) == list(range(30))


def _calls(timestamps, targets):
    s = BoundarySearch(targets, len(timestamps) - 1)
    calls = rounds = 0
    while not s.done:
        wanted = s.pending()
        calls += len(wanted)
        rounds += 1
        s.feed({n: timestamps[n] for n in wanted})
    return s.result(), calls, rounds


def test_regular_block_times_plan_in_about_two_calls_a_day():
    rng = random.Random(11)
    ts, t = [], T0 - 1800
    for _ in range(24 * 1000):  # an hourly chain, a few seconds of jitter, 1,000 days
        t += 3600 + rng.randint(-5, 5)
        ts.append(t)
    targets = day_targets(D0, D0 + dt.timedelta(days=998))
    got, calls, rounds = _calls(ts, targets)
    assert got == [brute(ts, x) for x in targets]
    assert calls <= 3 * len(targets)
    assert rounds <= 4


def test_a_chain_whose_block_times_change_still_converges():
    rng = random.Random(12)
    ts, t = [], T0 - 100
    for i in range(30_000):  # 12 s blocks, then 2 s blocks, with a 3-day halt in between
        t += (12 if i < 10_000 else 2) + (3 * DAY_S if i == 10_000 else 0) + rng.randint(0, 1)
        ts.append(t)
    targets = day_targets(D0, D0 + dt.timedelta(days=(ts[-1] - T0) // DAY_S))
    got, calls, rounds = _calls(ts, targets)
    assert got == [brute(ts, x) for x in targets]
    assert rounds <= 20
