"""Days -> block ranges. Pure logic: the caller supplies block timestamps, we decide which to ask for.

A day's blocks are [first block with timestamp >= midnight, first block of the next day - 1]. All
boundaries of a plan are searched together, so each round is one JSON-RPC batch however many days
there are (~log2(head) rounds in all).
"""

from __future__ import annotations

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
    clipped: bool = False  # stopped at head - confirmations: the day is not over yet on chain

    @property
    def n_blocks(self) -> int:
        return max(0, self.end_block - self.start_block + 1)


class BoundarySearch:
    """Find, for each target timestamp, the first block in [0, head] with timestamp >= target.

    Usage: while not s.done: s.feed({n: ts for n in s.pending()}). A target beyond the head's
    timestamp resolves to head + 1 ("no such block yet").
    """

    def __init__(self, targets: list[int], head: int, known: dict[int, int] | None = None):
        self.targets = targets
        self.head = head
        self.ts: dict[int, int] = dict(known or {})
        # invariant per target: answer in [lo, hi]; hi = head + 1 means "not reached yet"
        self.lo = [0] * len(targets)
        self.hi = [head + 1] * len(targets)

    @property
    def done(self) -> bool:
        self._narrow()
        return all(lo == hi for lo, hi in zip(self.lo, self.hi))

    def _narrow(self) -> None:
        for i, target in enumerate(self.targets):
            while self.lo[i] < self.hi[i]:
                mid = (self.lo[i] + self.hi[i]) // 2
                if mid not in self.ts:
                    break
                if self.ts[mid] >= target:
                    self.hi[i] = mid
                else:
                    self.lo[i] = mid + 1

    def pending(self) -> list[int]:
        self._narrow()
        wanted = {(lo + hi) // 2 for lo, hi in zip(self.lo, self.hi) if lo < hi}
        return sorted(wanted)

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


def build_plan(anchor: dt.date, first_day: dt.date, last_day: dt.date, boundaries: list[int], safe_head: int) -> list[DayPlan]:
    """Turn boundary blocks (first block of each midnight, from first_day to last_day + 1) into day plans.

    day_idx counts days since `anchor` (the database's first --from), so indices stay stable when a
    later run extends the range.
    """
    plans: list[DayPlan] = []
    for i in range(len(boundaries) - 1):
        day = first_day + dt.timedelta(days=i)
        start, next_start = boundaries[i], boundaries[i + 1]
        # The day is over on chain only once the next day's first block is at or below the safe head.
        clipped = next_start > safe_head
        end = min(next_start - 1, safe_head)
        plans.append(DayPlan((day - anchor).days, day, start, end, clipped))
    return plans
