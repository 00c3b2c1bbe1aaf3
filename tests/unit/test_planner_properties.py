"""Day planner properties (Hypothesis): on any chain whose block times never go back, every planned day holds
exactly the blocks whose timestamps fall on its UTC date, and a regular chain is planned in a few header calls
a day.

The oracle is a plain scan of the generated timestamps, each block's day read with datetime, not with the
planner's own midnight arithmetic."""

from __future__ import annotations

import datetime as dt
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backfill.chain.planner import DAY_S, BoundarySearch, build_plan, day_targets

D0 = dt.date(2024, 1, 1)
T0 = int(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc).timestamp())

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# the spacing of a run of blocks: equal timestamps, seconds, minutes, hours, whole days and more
INTERVALS = [0, 1, 2, 12, 60, 600, 3_600, 6 * 3_600, DAY_S - 1, DAY_S, DAY_S + 1, 3 * DAY_S]


def utc_day(ts: int) -> dt.date:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).date()


@st.composite
def chains(draw: st.DrawFn) -> list[int]:
    """Timestamps of blocks 0..n: runs of blocks each with its own spacing and jitter, and blocks placed exactly
    at the next midnight, so halts, bursts, equal timestamps and midnight blocks all occur."""
    t = T0 + draw(st.integers(-2 * DAY_S, 2 * DAY_S), label="genesis offset")  # genesis before or after day 0
    ts = [t]
    for _ in range(draw(st.integers(1, 8), label="runs")):
        if draw(st.booleans()):  # one block (or several equal ones) exactly at the coming midnight
            t = -(-t // DAY_S) * DAY_S
            ts.extend([t] * draw(st.integers(1, 3)))
            continue
        spacing = draw(st.sampled_from(INTERVALS))
        jitter = draw(st.integers(0, max(0, spacing)))
        seed = draw(st.integers(0, 2**16))
        rng = random.Random(seed)
        for _ in range(draw(st.integers(1, 250))):
            t += max(0, spacing + rng.randint(-jitter, jitter))
            ts.append(t)
    return ts


def search(timestamps: list[int], targets: list[int], head: int) -> tuple[list[int], int]:
    """Drive the search as the planner's caller does, over blocks 0..head; the boundaries and the calls made."""
    s = BoundarySearch(targets, head)
    calls = 0
    while not s.done:
        wanted = s.pending()
        assert wanted, "an unfinished search asked for nothing: it would never end"
        assert all(0 <= n <= head for n in wanted), wanted
        calls += len(wanted)
        s.feed({n: timestamps[n] for n in wanted})
        assert calls <= 64 * len(targets) + 64, "the search does not converge"
    return s.result(), calls


@PROPERTY
@given(ts=chains(), first_offset=st.integers(-3, 12), n_days=st.integers(1, 15), head_back=st.integers(0, 400))
def test_every_planned_day_holds_exactly_the_blocks_of_its_utc_date(ts, first_offset, n_days, head_back):
    first = utc_day(ts[0]) + dt.timedelta(days=first_offset)  # may start before genesis or after the head
    last = first + dt.timedelta(days=n_days - 1)
    safe_head = max(0, len(ts) - 1 - head_back)  # the planner searches the chain up to the safe head only
    boundaries, _ = search(ts, day_targets(first, last), safe_head)
    plans = build_plan(first, first, last, boundaries, safe_head)

    assert [p.day for p in plans] == [first + dt.timedelta(days=i) for i in range(n_days)]
    assert [p.day_idx for p in plans] == list(range(n_days))
    days = [utc_day(t) for t in ts[: safe_head + 1]]  # the oracle: each searchable block's UTC date
    for p in plans:
        blocks = [n for n, d in enumerate(days) if d == p.day]
        later = [n for n, d in enumerate(days) if d > p.day]
        # the day's first block: the first with a timestamp at or after its midnight (head + 1 if none yet)
        first_block = next((n for n, d in enumerate(days) if d >= p.day), safe_head + 1)
        assert p.start_block == first_block, p
        if blocks:
            assert (p.start_block, p.end_block, p.n_blocks) == (blocks[0], blocks[-1], len(blocks)), p
        else:  # documented: end_block < start_block means no block; the day sits just before the next one's start
            assert p.end_block == p.start_block - 1 and p.n_blocks == 0, p
        assert p.clipped == (not later), p  # over on chain only once a later block is at or below the safe head
    for a, b in zip(plans, plans[1:]):
        assert b.start_block == a.end_block + 1, (a, b)  # contiguous: no block lost, none in two days
    covered = [n for p in plans for n in range(p.start_block, p.end_block + 1)]
    assert covered == [n for n, d in enumerate(days) if first <= d <= last]


@st.composite
def regular_chains(draw: st.DrawFn) -> tuple[list[int], int]:
    """A chain with regular block times (a few per cent of jitter) over some days, and its number of days."""
    spacing = draw(st.sampled_from([2, 5, 12, 60, 600, 3_600]))
    jitter = draw(st.integers(0, spacing // 20))
    days = draw(st.integers(1, 40))
    blocks = min(days * DAY_S // spacing + 2, 60_000)
    rng = random.Random(draw(st.integers(0, 2**16)))
    t = T0 - draw(st.integers(1, DAY_S))  # genesis some time on the day before
    ts = []
    for _ in range(blocks):
        t += spacing + rng.randint(-jitter, jitter)
        ts.append(t)
    return ts, (ts[-1] - T0) // DAY_S


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(chain=regular_chains())
def test_a_regular_chain_is_planned_in_a_few_header_calls_a_day(chain):
    ts, full_days = chain
    last = D0 + dt.timedelta(days=max(0, full_days - 1))
    targets = day_targets(D0, last)
    got, calls = search(ts, targets, len(ts) - 1)
    assert got == [next((n for n, t in enumerate(ts) if t >= x), len(ts)) for x in targets]
    # the docstring's "about two calls a day", generously: four per midnight, plus the chain's two ends
    assert calls <= 4 * len(targets) + 2, (calls, len(targets))
