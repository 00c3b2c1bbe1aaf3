"""The chain's tip, pure: finality depths, open days in the plan, and finding a fork from recorded hashes."""

from __future__ import annotations

import datetime as dt

import pytest

from backfill.chain.finality import DEFAULT_DEPTHS, UNKNOWN_CHAIN_DEPTH, final_head, finality_depth
from backfill.chain.planner import build_plan
from backfill.chain.reorg import DeepFork, compared_blocks, find_fork


def test_the_setting_wins_over_the_chains_default() -> None:
    assert finality_depth(1, None) == DEFAULT_DEPTHS[1] == 64
    assert finality_depth(31337, None) == 0
    assert finality_depth(999_999, None) == UNKNOWN_CHAIN_DEPTH
    assert finality_depth(1, 3) == 3 and finality_depth(31337, 0) == 0


@pytest.mark.parametrize(
    "head,safe,depth,expected", [(100, 100, 0, 100), (100, 88, 64, 36), (100, 50, 10, 50), (10, 10, 64, -1)]
)
def test_the_final_head_is_below_both_the_safe_head_and_the_depth(head, safe, depth, expected) -> None:
    assert final_head(head, safe, depth) == expected


def test_the_nodes_finalized_block_lowers_the_final_head_and_is_asked_only_under_the_default_depth() -> None:
    from backfill.chain.finality import use_finalized_tag

    assert final_head(1000, 988, 64, finalized=900) == 900  # finality stalled: the tag, not head - 64
    assert final_head(1000, 988, 64, finalized=990) == 936
    assert use_finalized_tag(None, 64) and not use_finalized_tag(64, 64) and not use_finalized_tag(None, 0)


def test_a_day_is_over_only_once_the_next_days_first_block_is_final() -> None:
    d0 = dt.date(2024, 1, 1)
    boundaries = [10, 20, 30]  # day 0: 10..19, day 1: 20..29, day 2 starts at 30
    whole = build_plan(d0, d0, d0 + dt.timedelta(days=1), boundaries, safe_head=40)
    assert [(p.end_block, p.clipped) for p in whole] == [(19, False), (29, False)]
    # copied to 40, final only to 25: day 1's end (next day's first block 30) is not final yet
    open_tail = build_plan(d0, d0, d0 + dt.timedelta(days=1), boundaries, safe_head=40, final_head=25)
    assert [(p.end_block, p.clipped) for p in open_tail] == [(19, False), (29, True)]
    # clipped at the safe head: copied up to it, open
    clipped = build_plan(d0, d0, d0 + dt.timedelta(days=1), boundaries, safe_head=27, final_head=27)
    assert [(p.end_block, p.clipped) for p in clipped] == [(19, False), (27, True)]


def hashes(blocks: range, tag: str) -> dict[int, str]:
    return {b: f"0x{tag}{b:062x}" for b in blocks}


def test_no_fork_when_the_chain_agrees_or_nothing_is_recorded() -> None:
    stored = hashes(range(90, 101), "a")
    assert find_fork(stored, dict(stored), 10) is None
    assert find_fork({}, {}, 10) is None


def test_a_fork_within_the_depth_names_its_ancestor_and_depth() -> None:
    stored = hashes(range(90, 101), "a")
    chain = {**stored, **hashes(range(97, 101), "b")}
    fork = find_fork(stored, chain, 10)
    assert fork is not None
    assert (fork.ancestor, fork.first_changed, fork.tip, fork.depth) == (96, 97, 100, 4)
    assert fork.chain_hash == chain[97] and fork.stored_hash == stored[97]


def test_a_chain_that_lost_blocks_is_a_fork_too() -> None:
    stored = hashes(range(90, 101), "a")
    chain = {b: (h if b < 99 else None) for b, h in stored.items()}
    fork = find_fork(stored, chain, 10)
    assert fork is not None and (fork.ancestor, fork.chain_hash) == (98, "")


def test_a_fork_deeper_than_the_depth_or_below_the_anchor_is_refused() -> None:
    stored = hashes(range(90, 101), "a")
    deep = {**stored, **hashes(range(93, 101), "b")}  # 8 blocks replaced, depth 5
    with pytest.raises(DeepFork, match=r"deeper than the finality depth \(5 blocks\): block 93 was"):
        find_fork(stored, deep, 5)
    everything = hashes(range(90, 101), "b")  # even the anchor changed: the ancestor is out of sight
    with pytest.raises(DeepFork, match="block 90 was"):
        find_fork(stored, everything, 64)


def test_the_compared_blocks_reach_one_below_the_depth() -> None:
    assert compared_blocks(100, 8) == range(91, 101)
    assert compared_blocks(3, 8) == range(0, 4)
