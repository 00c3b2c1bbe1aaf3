"""Walking a worker's days: windows (checkpoint units) and getLogs chunks. Pure.

A window holds at most `window_blocks` blocks and is fetched, written and checkpointed as one unit,
so a killed worker loses at most one window. Big days are cut into several windows; small days are
packed together into one window (one insert per table and one checkpoint insert for all of them),
because each write costs a round trip and a part in ClickHouse whatever its size.
"""

from __future__ import annotations

from dataclasses import dataclass

from backfill.chain.planner import DayPlan


@dataclass(frozen=True)
class Segment:
    day_idx: int
    start: int
    end: int  # inclusive
    last_of_day: bool

    @property
    def n_blocks(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class Window:
    segments: tuple[Segment, ...]

    @property
    def n_blocks(self) -> int:
        return sum(s.n_blocks for s in self.segments)

    def label(self) -> str:
        return ",".join(f"{s.start}-{s.end}" for s in self.segments)


def ranges(start: int, end: int, size: int) -> list[tuple[int, int]]:
    """[start, end] inclusive cut into consecutive inclusive ranges of at most `size` blocks."""
    return [(a, min(a + size - 1, end)) for a in range(start, end + 1, size)]


def day_segments(plan: DayPlan, next_block: int, window_blocks: int) -> list[Segment]:
    """The pieces still to do for a day, from its checkpointed next_block, each at most window_blocks."""
    start = max(plan.start_block, next_block)
    if start > plan.end_block:
        return []
    parts = ranges(start, plan.end_block, window_blocks)
    return [Segment(plan.day_idx, a, b, i == len(parts) - 1) for i, (a, b) in enumerate(parts)]


def pack_windows(segments: list[Segment], window_blocks: int) -> list[Window]:
    """Consecutive segments (in day order) packed greedily into windows of at most window_blocks blocks."""
    windows: list[Window] = []
    current: list[Segment] = []
    size = 0
    for seg in segments:
        if current and size + seg.n_blocks > window_blocks:
            windows.append(Window(tuple(current)))
            current, size = [], 0
        current.append(seg)
        size += seg.n_blocks
    if current:
        windows.append(Window(tuple(current)))
    return windows


def owned(day_idx: int, shard_id: int, shards: int) -> bool:
    return day_idx % shards == shard_id
