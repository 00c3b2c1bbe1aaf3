"""Days -> block ranges. Pure logic: the caller supplies block timestamps, we decide which to ask for.

A day's blocks are [first block with timestamp >= midnight, first block of the next day - 1]. All
boundaries of a plan are searched together, so each round is one set of JSON-RPC batches however many
days there are; guesses interpolate between known blocks, so a chain with regular block times is planned
in about two calls a day.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass

DAY_S = 86_400


def midnight_ts(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())


@dataclass(frozen=True)
class DayPlan:
    day_idx: int
    day: dt.date
    start_block: int
    end_block: int  # inclusive; end_block < start_block means the day has no block
    # the day is not over on chain, or its end is not final yet: OPEN, re-planned and completed by a later run
    clipped: bool = False

    @property
    def n_blocks(self) -> int:
        return max(0, self.end_block - self.start_block + 1)


class BoundarySearch:
    """Find, for each target timestamp, the first block in [0, head] with timestamp >= target.

    Usage: while not s.done: s.feed({n: ts for n in s.pending()}). A target beyond the head's
    timestamp resolves to head + 1 ("no such block yet").

    Block times are nearly regular on most chains, so each target is guessed by interpolating between the
    nearest known blocks on either side: a right guess, then the block before it (the next interpolation
    lands there), settle a boundary in two calls. A round that did not at least halve a
    target's interval is followed by a bisection step for it, so irregular block times (halts, bursts) cost
    at most about twice the rounds of a plain binary search. Known blocks are shared by all targets.
    """

    def __init__(self, targets: list[int], head: int, known: dict[int, int] | None = None):
        self.targets = targets
        self.head = head
        self.ts: dict[int, int] = dict(known or {})
        self.lo = [0] * len(targets)  # invariant per target: answer in [lo, hi]; hi = head + 1: not reached yet
        self.hi = [head + 1] * len(targets)
        self.width = [head + 1] * len(targets)  # the interval each target had when it was last guessed

    @property
    def done(self) -> bool:
        self._narrow()
        return all(lo == hi for lo, hi in zip(self.lo, self.hi))

    def _narrow(self) -> None:
        """lo = one past the last known block before the target, hi = the first known block at or after it."""
        blocks = sorted(self.ts)
        stamps = [self.ts[b] for b in blocks]
        for i, target in enumerate(self.targets):
            j = bisect.bisect_left(stamps, target)
            self.lo[i] = max(self.lo[i], blocks[j - 1] + 1 if j > 0 else 0)
            self.hi[i] = min(self.hi[i], blocks[j] if j < len(blocks) else self.head + 1)

    def _guess(self, i: int) -> list[int]:
        lo, hi, target = self.lo[i], self.hi[i], self.targets[i]
        a, b = lo - 1, hi
        halved = 2 * (hi - lo) <= self.width[i]
        self.width[i] = hi - lo
        if halved and a in self.ts and b in self.ts and self.ts[b] > self.ts[a]:
            g = a + -(-(target - self.ts[a]) * (b - a) // (self.ts[b] - self.ts[a]))  # ceil
            return [min(max(g, lo), hi - 1)]
        return [(lo + hi) // 2]

    def pending(self) -> list[int]:
        self._narrow()
        open_targets = [i for i, (lo, hi) in enumerate(zip(self.lo, self.hi)) if lo < hi]
        if not open_targets:
            return []
        ends = [b for b in (0, self.head) if b not in self.ts]
        if ends:  # the chain's two ends first: every guess interpolates between known blocks
            return ends
        wanted = {b for i in open_targets for b in self._guess(i) if 0 <= b <= self.head}
        return sorted(wanted - set(self.ts))

    def feed(self, timestamps: dict[int, int]) -> None:
        self.ts.update(timestamps)

    def result(self) -> list[int]:
        if not self.done:
            raise RuntimeError("search not finished")
        return list(self.lo)


def day_targets(first_day: dt.date, last_day: dt.date) -> list[int]:
    """Midnights of every day from first_day to the day after last_day (the end boundary)."""
    n = (last_day - first_day).days + 2
    start = midnight_ts(first_day)
    return [start + i * DAY_S for i in range(n)]


def build_plan(
    anchor: dt.date,
    first_day: dt.date,
    last_day: dt.date,
    boundaries: list[int],
    safe_head: int,
    final_head: int | None = None,
) -> list[DayPlan]:
    """Turn boundary blocks (first block of each midnight, from first_day to last_day + 1) into day plans.

    day_idx counts days since `anchor` (the database's first --from), so indices stay stable when a
    later run extends the range. A day is copied up to the safe head; it is over (not clipped) only once the
    next day's first block is final (at or below `final_head`, default the safe head).
    """
    final = safe_head if final_head is None else min(final_head, safe_head)
    plans: list[DayPlan] = []
    for i in range(len(boundaries) - 1):
        day = first_day + dt.timedelta(days=i)
        start, next_start = boundaries[i], boundaries[i + 1]
        clipped = next_start > final
        end = min(next_start - 1, safe_head)
        plans.append(DayPlan((day - anchor).days, day, start, end, clipped))
    return plans


def utc_text(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def range_problem(
    from_date: dt.date | None,
    to_date: dt.date | None,
    genesis_ts: int | None,
    head: int,
    safe_head: int,
    safe_head_ts: int | None,
    confirmations: int,
) -> str | None:
    """Why --from / --to cannot be planned on this chain, or None. A day before the genesis block's day has no
    block and never will: planning it would record as empty a day the chain never had. A day after the safe
    head's day has no safe block yet. The safe head's own day is planned, clipped at it."""
    if from_date is not None and genesis_ts is not None:
        genesis_day = dt.datetime.fromtimestamp(genesis_ts, dt.timezone.utc).date()
        if from_date < genesis_day:
            return f"--from {from_date} is before the chain's first block (genesis {utc_text(genesis_ts)})"
    if safe_head_ts is None:
        return None
    head_day = dt.datetime.fromtimestamp(safe_head_ts, dt.timezone.utc).date()
    where = (
        f"the chain's head (block {head}, {utc_text(safe_head_ts)})"
        if safe_head == head
        else f"the chain's safe head (block {safe_head} = head {head} - {confirmations} confirmations, "
        f"{utc_text(safe_head_ts)})"
    )
    for flag, day in (("--from", from_date), ("--to", to_date)):
        if day is not None and day > head_day:
            return f"{flag} {day} is after {where}"
    return None
