"""Range sizing properties (Hypothesis): whatever a node refuses and whatever its error says, walking a stretch
of blocks the way a worker does (chunks of the sizer's size, a refused range cut where split() says and both
halves fetched) fetches every block exactly once, in requests that end, and settles under a fixed block limit.

The simulated node is written here from the providers' rules (a block limit, a result cap, the hints their
errors carry); the covering check counts blocks, not ranges."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backfill.chain.ranges import RangeSizer

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FIRST = 19_000_000  # the walk starts at an arbitrary block far from 0


@dataclass
class Node:
    """A provider's eth_getLogs rules: ranges over `max_blocks` blocks refused, answers over `max_results` logs
    refused; what its error says: the limit (as it is, or counted one higher), a range to try, or nothing."""

    logs: list[int]  # logs per block, from FIRST on
    max_blocks: int | None
    max_results: int | None
    states_blocks: str  # "exact" | "plus_one" | "no"
    states_results: bool
    suggests: str  # "fitting" | "elsewhere" | "too_wide" | "the_same" | "inverted" | "no"

    def __post_init__(self) -> None:
        self._before = [0]  # logs before each block: any range's count in one subtraction
        for n in self.logs:
            self._before.append(self._before[-1] + n)

    def n_logs(self, a: int, b: int) -> int:
        return self._before[b - FIRST + 1] - self._before[a - FIRST]

    def refusal(self, a: int, b: int) -> dict | None:
        """None when [a, b] is served, else what the error carries (split()'s arguments)."""
        too_wide = self.max_blocks is not None and b - a + 1 > self.max_blocks
        too_many = self.max_results is not None and self.n_logs(a, b) > self.max_results
        if not (too_wide or too_many):
            return None
        suggested = None
        if self.suggests == "fitting":  # the longest prefix the node would serve (a single block always is)
            lo, hi = a, b - 1
            while lo < hi:
                m = (lo + hi + 1) // 2
                lo, hi = (m, hi) if self.refusal_free(a, m) else (lo, m - 1)
            suggested = (a, lo)
        elif self.suggests == "elsewhere":
            suggested = (a + 1, b)
        elif self.suggests == "too_wide":
            suggested = (a, b + 10)
        elif self.suggests == "the_same":  # the very range refused (a provider counting its limit differently)
            suggested = (a, b)
        elif self.suggests == "inverted":
            suggested = (a, a - 1)
        stated_blocks = None
        if too_wide and self.max_blocks is not None and self.states_blocks != "no":
            stated_blocks = self.max_blocks + (1 if self.states_blocks == "plus_one" else 0)
        stated_results = self.max_results if too_many and self.states_results else None
        return {"suggested": suggested, "max_blocks": stated_blocks, "max_results": stated_results}

    def refusal_free(self, a: int, b: int) -> bool:
        return not (
            (self.max_blocks is not None and b - a + 1 > self.max_blocks)
            or (self.max_results is not None and self.n_logs(a, b) > self.max_results)
        )


SUGGESTIONS = ["fitting", "elsewhere", "too_wide", "the_same", "inverted", "no"]


@st.composite
def densities(draw: st.DrawFn, length: int, cap: int | None) -> list[int]:
    """Logs per block in runs (empty stretches, sparse, dense), never more than one answer may hold."""
    logs: list[int] = []
    while len(logs) < length:
        per_block = draw(st.sampled_from([0, 0, 1, 3, 20, 250, 2_000]))
        logs.extend([per_block] * draw(st.integers(1, 1_000)))
    top = cap if cap is not None else 10**9
    return [min(n, top) for n in logs[:length]]  # a single block is always served


@st.composite
def nodes(draw: st.DrawFn, length: int) -> Node:
    max_blocks = draw(st.one_of(st.none(), st.integers(1, 3_000)), label="max_blocks")
    max_results = draw(st.one_of(st.none(), st.integers(1, 12_000)), label="max_results")
    return Node(
        draw(densities(length, max_results)),
        max_blocks,
        max_results,
        draw(st.sampled_from(["exact", "plus_one", "no"])),
        draw(st.booleans()),
        draw(st.sampled_from(SUGGESTIONS)),
    )


# RangeSizer(initial, maximum, cheap_logs, grow_after), drawn as numbers so a failing case prints them
SIZERS = st.tuples(
    st.integers(1, 5_000), st.integers(1, 5_000), st.sampled_from([1, 100, 2_500, 10_000]), st.integers(1, 3)
)


def sizer_of(params: tuple[int, int, int, int]) -> RangeSizer:
    initial, maximum, cheap_logs, grow_after = params
    return RangeSizer(initial, maximum, cheap_logs=cheap_logs, grow_after=grow_after)


def walk(sizer: RangeSizer, node: Node, first: int, last: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Fetch [first, last] as a worker does: the served ranges and the refused ones, in request order."""
    served: list[tuple[int, int]] = []
    refused: list[tuple[int, int]] = []
    budget = 2 * (last - first + 1)  # each refusal cuts a range into two non-empty parts: at most 2n - 1 requests

    def fetch(a: int, b: int) -> None:
        assert first <= a <= b <= last, f"asked for [{a}, {b}] within [{first}, {last}]"
        assert len(served) + len(refused) < budget, "splitting does not end"
        error = node.refusal(a, b)
        if error is None:
            served.append((a, b))
            sizer.answered(b - a + 1, node.n_logs(a, b))
        else:
            refused.append((a, b))
            assert a < b, "a single block refused: the model serves every single block"
            mid = sizer.split(a, b, error["suggested"], error["max_blocks"], error["max_results"])
            assert a <= mid < b, f"split of [{a}, {b}] at {mid}: an empty or inverted half"
            fetch(a, mid)
            fetch(mid + 1, b)
        assert 1 <= sizer.size <= sizer.maximum, sizer.size

    a = first
    while a <= last:
        b = min(last, a + sizer.size - 1)
        fetch(a, b)
        a = b + 1
    return served, refused


def assert_covers_once(served: list[tuple[int, int]], first: int, last: int) -> None:
    counts = Counter(n for a, b in served for n in range(a, b + 1))
    assert all(a <= b for a, b in served), served
    assert set(counts) == set(range(first, last + 1)), "a block was never fetched, or one outside the stretch"
    assert max(counts.values()) == 1, "a block was fetched twice"


@PROPERTY
@given(data=st.data(), length=st.integers(1, 2_000))
def test_splitting_fetches_every_block_exactly_once_whatever_the_node_refuses(data, length):
    node = data.draw(nodes(length))
    sizer = sizer_of(data.draw(SIZERS, label="sizer"))
    first, last = FIRST, FIRST + length - 1
    served, _ = walk(sizer, node, first, last)
    assert_covers_once(served, first, last)
    assert [a for a, _ in served] == sorted(a for a, _ in served)  # rows come back in block order


@PROPERTY
@given(data=st.data(), length=st.integers(1, 2_000))
def test_under_a_fixed_block_limit_refusals_stop_after_the_first_refused_chunk(data, length):
    """A node that only limits the width of a range: once one chunk has been cut down to what it serves, the
    sizer never asks for more again (it remembers the cap), however cheap the answers."""
    max_blocks = data.draw(st.integers(1, 3_000), label="max_blocks")
    node = Node(
        data.draw(densities(length, None)),
        max_blocks,
        None,
        data.draw(st.sampled_from(["exact", "plus_one", "no"])),
        False,
        data.draw(st.sampled_from(SUGGESTIONS)),
    )
    sizer = sizer_of(data.draw(SIZERS, label="sizer"))
    first, last = FIRST, FIRST + length - 1
    served, refused = walk(sizer, node, first, last)
    assert_covers_once(served, first, last)
    if refused:
        first_refused_chunk_end = refused[0][1]  # every later refusal is a piece of that chunk
        assert all(b <= first_refused_chunk_end for _, b in refused), refused[:5]
    assert all(b - a + 1 <= max_blocks for a, b in served)


@st.composite
def even_caps(draw: st.DrawFn) -> tuple[int, int]:
    """(max_results, logs per block): a result cap and blocks that each hold as many logs, one block fitting."""
    max_results = draw(st.integers(1, 12_000))
    return max_results, draw(st.integers(1, max_results))


@PROPERTY
@example(cap=(7, 4), suggests="fitting", params=(1, 2, 100, 1), length=5)  # the smallest case that once failed
@given(cap=even_caps(), suggests=st.sampled_from(["fitting", "no"]), params=SIZERS, length=st.integers(1, 2_000))
def test_under_a_fixed_result_cap_over_even_blocks_refusals_stop_after_the_first_refused_chunk(
    cap, suggests, params, length
):
    """A node that caps the logs of an answer, over blocks that all hold as many logs: once one chunk has been cut
    down to what an answer may hold, the sizer aims under the cap and is not refused again."""
    max_results, per_block = cap
    node = Node([per_block] * length, None, max_results, "no", True, suggests)
    sizer = sizer_of(params)
    first, last = FIRST, FIRST + length - 1
    served, refused = walk(sizer, node, first, last)
    assert_covers_once(served, first, last)
    if refused:
        assert all(b <= refused[0][1] for _, b in refused), refused[:5]
